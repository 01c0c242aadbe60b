"""Tiled images in the data path: packing lengths, dataset truncation and the converter's --overlong count
each image as the tokens its tiling expands it to (`Tiling.num_tokens`, by the image's size)."""
import numpy as np
import pytest

from megatron_sicog.data.image import encode_image_bytes
from megatron_sicog.data.image_processing import ImageProcessing
from megatron_sicog.data.tiling import Tiling, image_hw

IMAGE = 7
TILING = Tiling(ImageProcessing.family_default("clip", 32), [[32, 64], [64, 32], [64, 64], [32, 32]], patch_size=8)
SHAPES = [(40, 117), (150, 47), (61, 83), (20, 20)]


def _image(rng, k):
    h, w = SHAPES[k % len(SHAPES)]
    return encode_image_bytes(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_image_hw_reads_encoded_and_array_images():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (13, 29, 3), dtype=np.uint8)
    assert image_hw(arr) == (13, 29) == image_hw(encode_image_bytes(arr)) == image_hw(encode_image_bytes(arr, "PPM"))
    assert TILING.tokens_of([arr, encode_image_bytes(arr)]) == [TILING.num_tokens(13, 29)] * 2


def test_dataset_packs_and_cuts_by_tiled_lengths(tmp_path):
    from megatron_sicog.data.dataset import build_train_valid_datasets
    from megatron_sicog.data.indexed import SampleReader, SampleWriter
    from megatron_sicog.model.batch import collate

    rng = np.random.default_rng(1)
    with SampleWriter(tmp_path / "d", np.uint16) as w:
        for i in range(12):
            n = int(rng.integers(6, 30))
            tokens = np.full(n, 100 + i)
            tokens[1] = IMAGE
            w.add_sample(tokens, [(n // 2, n)], [_image(rng, i)])
    reader = SampleReader(tmp_path / "d")
    want = [reader.num_tokens[i] - 1 + TILING.num_tokens(*SHAPES[i % len(SHAPES)]) for i in range(12)]
    seq = 80  # docs with the 2x2 image and long text (up to 96 positions) must be cut
    train, _ = build_train_valid_datasets(str(tmp_path / "d"), seq, 0, 12, 0, split="100,0,0", pack=True,
                                          image_token_id=IMAGE, tiling=TILING)
    ds = train.datasets[0] if hasattr(train, "datasets") else train
    assert ds.lengths.tolist() == want
    assert max(want) > seq
    for k in range(len(ds)):
        docs = ds.docs_of(k)
        assert len(docs) == 1 or sum(want[d] for d in docs) <= seq
        s = ds[k]
        assert len(s["tokens"]) - len(s["images"]) + sum(TILING.tokens_of(s["images"])) <= seq
        batch = collate([s], seq, IMAGE, 1, pad_id=0, tiling=TILING)
        kept = batch.image_sizes.tolist() if batch.image_sizes is not None else []
        assert len(kept) == len(s["images"])  # what the dataset cut fits: the batch builder cuts no more
        n_img = int((batch.input_ids == IMAGE).sum() + (batch.labels[:, -1] == IMAGE).sum())
        assert n_img == sum(TILING.num_tokens(h, w) for h, w in kept)


@pytest.mark.parametrize("overlong", ["truncate", "drop"])
def test_converter_overlong_counts_tiled_tokens(overlong):
    from megatron_sicog.data.preprocess import ConvertConfig, RecordSkip, _fit

    rng = np.random.default_rng(2)
    big = _image(rng, 2)  # 61x83: a 2x2 grid
    n_img = TILING.num_tokens(61, 83)
    cfg = ConvertConfig("t", "m", seq_length=n_img + 20, overlong=overlong, tiling=TILING)
    ids = [1, IMAGE] + list(range(10, 25)) + [IMAGE] + list(range(30, 40))
    spans = [(2, 17), (18, len(ids))]
    if overlong == "drop":
        with pytest.raises(RecordSkip, match=f"{len(ids) - 2 + 2 * n_img} tokens"):
            _fit(cfg, ids, spans, [big, big], IMAGE)
        return
    kept, kept_spans, images, truncated = _fit(cfg, ids, spans, [big, big], IMAGE)
    assert truncated and len(images) == 1 and kept == ids[:17] and kept_spans == [(2, 17)]
    fits = ConvertConfig("t", "m", seq_length=len(ids) - 2 + 2 * n_img, overlong=overlong, tiling=TILING)
    assert _fit(fits, ids, spans, [big, big], IMAGE)[3] is False


def test_dataset_cache_key_holds_the_tiling(mcore, tmp_path):
    """A blend cached under path_to_cache without tiling (or with other grids) is not reused with it."""
    from megatron_sicog.data.dataset import build_train_valid_datasets
    from megatron_sicog.data.indexed import SampleWriter

    rng = np.random.default_rng(2)
    for name in ("a", "b"):
        with SampleWriter(tmp_path / name, np.uint16) as w:
            for i in range(10):
                n = int(rng.integers(6, 20))
                tokens = np.full(n, 100 + i)
                tokens[1] = IMAGE
                w.add_sample(tokens, [(n // 2, n)], [_image(rng, i)])
    cache = tmp_path / "cache"
    other = Tiling(TILING.processing, [[32, 32], [32, 64]], patch_size=8)

    def build(tiling):
        train, _ = build_train_valid_datasets(f"0.5 {tmp_path / 'a'} 0.5 {tmp_path / 'b'}", 64, 0, 20, 0,
                                              split="100,0,0", pack=True, image_seq_length=16,
                                              image_token_id=IMAGE, path_to_cache=str(cache), tiling=tiling)
        return train

    plain, tiled, tiled_other = build(None), build(TILING), build(other)
    hashes = {d.unique_description_hash for d in (plain, tiled, tiled_other)}
    assert len(hashes) == 3
    assert all(any(p.name.startswith(h) for p in cache.iterdir()) for h in hashes)  # each cached on its own
    for blend, tiling in ((plain, None), (tiled, TILING), (tiled_other, other)):
        assert [d.config.tiling for d in blend.datasets] == [tiling, tiling]
        assert all(d.unique_identifiers["tiling_key"] == (None if tiling is None else tiling.key())
                   for d in blend.datasets)
        # the blend's cached index addresses samples each (differently packed) dataset has
        for k, d in enumerate(blend.datasets):
            idx = blend.dataset_sample_index[blend.dataset_index == k]
            assert idx.size and idx.max() < len(d)
    assert build(TILING).unique_description_hash == tiled.unique_description_hash  # the cache is found again
