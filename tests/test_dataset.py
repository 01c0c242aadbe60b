"""Training dataset: blends, deterministic shuffling and epochs, packing, resumable position."""
import numpy as np
import pytest

from megatron_sicog.data.indexed import SampleReader, SampleWriter
from megatron_sicog.data.sampler import PretrainingSampler, ResumableDataLoader


def _write(prefix, n, base, rng, with_images=False):
    """n docs; doc i has tokens [base+i, ...] of length 5..40 (so docs are identifiable)."""
    from megatron_sicog.data.image import encode_image_bytes

    with SampleWriter(prefix, np.uint16) as w:
        for i in range(n):
            length = int(rng.integers(5, 41))
            tokens = np.full(length, base + i)
            tokens[0] = 7  # a fixed "image token" position when images are present
            images = [encode_image_bytes(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))] if with_images else []
            w.add_sample(tokens, [(length // 2, length)], images)
    return str(prefix)


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    rng = np.random.default_rng(0)
    return _write(d / "a", 200, 1000, rng, with_images=True), _write(d / "b", 100, 5000, rng)


def _doc_id(sample):
    return int(sample["tokens"][1])


def test_blend_weights(two_sets):
    from megatron_sicog.data.dataset import build_train_valid_datasets

    a, b = two_sets
    train, valid = build_train_valid_datasets(f"0.7 {a} 0.3 {b}", 64, 1, 1000, 50, split="90,10")
    assert len(train) == 1000 and len(valid) == 50
    ids = np.array([train[i]["dataset_id"] for i in range(1000)])
    assert abs((ids == 0).mean() - 0.7) < 0.01
    for i in range(0, 1000, 97):  # the sample comes from the dataset it claims
        base = 1000 if ids[i] == 0 else 5000
        assert base <= _doc_id(train[i]) < base + 1000
    # train and valid documents are disjoint (90/10 split of each dataset)
    tr = {_doc_id(train[i]) for i in range(1000)}
    va = {_doc_id(valid[i]) for i in range(50)}
    assert not tr & va
    # a list form parses the same
    again, _ = build_train_valid_datasets([f"0.7 {a}", "0.3", b], 64, 1, 1000, 50, split="90,10")
    assert [_doc_id(again[i]) for i in range(50)] == [_doc_id(train[i]) for i in range(50)]


def test_shuffle_deterministic_and_epochs(two_sets):
    from megatron_sicog.data.dataset import build_train_valid_datasets

    a, _ = two_sets
    t1, _ = build_train_valid_datasets(a, 64, 5, 450, 0, split="100,0")
    t2, _ = build_train_valid_datasets(a, 64, 5, 450, 0, split="100,0")
    t3, _ = build_train_valid_datasets(a, 64, 6, 450, 0, split="100,0")
    seq1 = [_doc_id(t1[i]) for i in range(450)]
    assert seq1 == [_doc_id(t2[i]) for i in range(450)]
    assert seq1 != [_doc_id(t3[i]) for i in range(450)]
    assert t1.epochs == 3
    # every epoch is a permutation of all 200 docs, and epochs differ in order
    assert sorted(seq1[:200]) == sorted(seq1[200:400]) == list(range(1000, 1200))
    assert seq1[:200] != seq1[200:400]


def test_shuffle_does_not_depend_on_the_checkout_location(two_sets, tmp_path):
    import shutil

    from megatron_sicog.data.dataset import build_train_valid_datasets

    a, _ = two_sets
    moved = tmp_path / "elsewhere" / "a"
    moved.parent.mkdir()
    for ext in (".bin", ".idx"):
        shutil.copy(a + ext, str(moved) + ext)
    t1, _ = build_train_valid_datasets(a, 64, 5, 300, 0, split="100,0")
    t2, _ = build_train_valid_datasets(str(moved), 64, 5, 300, 0, split="100,0")
    assert [_doc_id(t1[i]) for i in range(300)] == [_doc_id(t2[i]) for i in range(300)]


def test_sample_fields_and_truncation(two_sets):
    from megatron_sicog.data.dataset import build_train_valid_datasets

    a, _ = two_sets
    reader = SampleReader(a)
    t, _ = build_train_valid_datasets(a, 12, 0, 200, 0, split="100,0", image_seq_length=3, image_token_id=7)
    for i in range(200):
        s = t[i]
        full = reader.read(_doc_id(s) - 1000)
        n = len(full["tokens"])
        # expanded length: the image token counts 3, so at most 10 tokens fit in 12
        assert len(s["tokens"]) == min(n, 10)
        assert np.array_equal(s["tokens"], full["tokens"][: len(s["tokens"])])
        assert np.array_equal(s["loss_mask"], full["loss_mask"][: len(s["tokens"])])
        assert s["tokens"].dtype == np.int64 and s["loss_mask"].dtype == np.uint8
        assert s["segment_ids"].dtype == np.int32 and set(s["segment_ids"]) == {1}
        assert len(s["images"]) == 1 and s["images"][0].shape == (4, 5, 3)


def test_packing(two_sets):
    from megatron_sicog.data.dataset import build_train_valid_datasets

    _, b = two_sets
    reader = SampleReader(b)
    t, _ = build_train_valid_datasets(b, 64, 3, 40, 0, split="100,0", pack=True)
    seen = []
    for i in range(len(t)):
        s = t[i]
        assert len(s["tokens"]) <= 64
        segs = s["segment_ids"]
        assert segs[0] == 1 and np.all(np.diff(segs) >= 0) and np.all(np.diff(segs) <= 1)
        for k in range(1, segs.max() + 1):  # every segment is one whole document
            part = s["tokens"][segs == k]
            doc = reader.read(int(part[1]) - 5000)
            assert np.array_equal(part, doc["tokens"])
            assert np.array_equal(s["loss_mask"][segs == k], doc["loss_mask"])
            seen.append(int(part[1]))
    # one epoch packs all 100 docs exactly once
    first_epoch = seen[:100]
    assert sorted(first_epoch) == list(range(5000, 5100))
    summ = t.packing_summary()
    assert summ["samples"] == 100 and summ["sequences"] < 100
    assert summ["tokens"] == int(reader.num_tokens.sum())
    assert summ["padding_packed"] == summ["sequences"] * 64 - summ["tokens"]
    assert 0 < summ["padding_saved"] < 1


def test_sampler_data_parallel():
    ranks = [list(PretrainingSampler(20, 4, 2, r, 2)) for r in range(2)]
    assert ranks[0][:2] == [[4, 5], [8, 9]] and ranks[1][:2] == [[6, 7], [10, 11]]
    flat = sorted(i for r in ranks for b in r for i in b)
    assert flat == list(range(4, 20))
    with pytest.raises(ValueError, match="consumed_samples"):
        PretrainingSampler(10, 12, 2)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_gives_same_sequence(two_sets, num_workers):
    from megatron_sicog.data.dataset import build_train_valid_datasets

    a, b = two_sets
    train, _ = build_train_valid_datasets(f"0.5 {a} 0.5 {b}", 64, 9, 120, 0, split="100,0")
    ref = ResumableDataLoader(train, micro_batch_size=4, num_workers=num_workers)
    ref_batches = [[_doc_id(s) for s in next(ref)] for _ in range(12)]
    first = ResumableDataLoader(train, micro_batch_size=4, num_workers=num_workers)
    for _ in range(5):
        next(first)
    state = first.state_dict()
    assert state == {"consumed_samples": 20}
    resumed = ResumableDataLoader(train, micro_batch_size=4, num_workers=num_workers)
    resumed.load_state_dict(state)
    assert [[_doc_id(s) for s in next(resumed)] for _ in range(7)] == ref_batches[5:]
    assert resumed.state_dict() == {"consumed_samples": 48}
