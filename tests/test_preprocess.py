"""tools/preprocess_data.py and tools/merge_datasets.py: round trip, bad input, atomicity, shards."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from megatron_sicog.data.tokenizer import build_tokenizer
from megatron_sicog.data.toy import make_records, make_sentencepiece, toy_texts
from tests.helpers import REPO, load_tool

preprocess_tool = load_tool("preprocess_data")
merge_tool = load_tool("merge_datasets")


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    return make_sentencepiece(toy_texts(1500, seed=2), tmp_path_factory.mktemp("tok") / "sp", 400)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_records(tmp_path_factory.mktemp("corpus"), 30, seed=3)


def _run(sp_model, inputs, prefix, *extra, image_root=None):
    argv = ["--input", *map(str, inputs), "--tokenizer-type", "SentencePieceTokenizer",
            "--tokenizer-model", str(sp_model), "--output-prefix", str(prefix), "--no-progress",
            "--chunk-size", "4", *map(str, extra)]
    if image_root:
        argv += ["--image-root", str(image_root)]
    return preprocess_tool.main(argv)


def _records(path):
    return [json.loads(line) for line in open(path)]


def _qwen2_text(conv):
    role = {"human": "user", "gpt": "assistant"}
    return "".join(f"<|im_start|>{role[t['from']]}\n{t['value']}<|im_end|>\n" for t in conv)


def _mask_runs(tokens, mask):
    runs, cur = [], []
    for t, m in zip(tokens, mask):
        if m:
            cur.append(int(t))
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


def test_round_trip(sp_model, corpus, tmp_path, capsys):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_sicog.data.indexed import SampleReader

    path, root = corpus
    assert _run(sp_model, [path], tmp_path / "out", "--workers", "2", image_root=root) == 0
    assert "preprocess_data: read 30, written 30, skipped 0" in capsys.readouterr().out
    assert (tmp_path / "out.errors.jsonl").read_text() == ""
    tok = build_tokenizer("SentencePieceTokenizer", sp_model)
    raw = IndexedDataset(str(tmp_path / "out"), multimodal=True)  # megatron opens it
    assert len(raw.document_indices) == 31
    reader = SampleReader(tmp_path / "out")
    for i, rec in enumerate(_records(path)):
        s = reader.read(i)
        assert s["tokens"].dtype == np.int64 and s["loss_mask"].dtype == np.uint8
        assert tok.detokenize(s["tokens"]) == _qwen2_text(rec["conversations"])
        replies = [t["value"] + "<|im_end|>" for t in rec["conversations"] if t["from"] == "gpt"]
        assert [tok.detokenize(r) for r in _mask_runs(s["tokens"], s["loss_mask"])] == replies
        if "image" in rec:
            src = (root / rec["image"]).read_bytes()
            assert reader.image_bytes(i) == [src]
            assert np.array_equal(s["images"][0], np.asarray(Image.open(root / rec["image"]).convert("RGB")))
            assert int((s["tokens"] == tok.image_token_id).sum()) == 1
        else:
            assert s["images"] == []


def test_round_trip_hf_llama3(corpus, tmp_path):
    from megatron_sicog.data.indexed import SampleReader
    from megatron_sicog.data.toy import make_hf_tokenizer

    hf_dir = make_hf_tokenizer(toy_texts(1000, seed=4), tmp_path / "hf", 500)
    path, root = corpus
    argv = ["--input", str(path), "--image-root", str(root), "--tokenizer-type", "HuggingFaceTokenizer",
            "--tokenizer-model", str(hf_dir), "--chat-template", "llama3", "--output-prefix",
            str(tmp_path / "out"), "--workers", "0", "--no-progress"]
    assert preprocess_tool.main(argv) == 0
    tok = build_tokenizer("HuggingFaceTokenizer", hf_dir)
    reader = SampleReader(tmp_path / "out")
    role = {"human": "user", "gpt": "assistant"}
    for i, rec in enumerate(_records(path)[:10]):
        s = reader.read(i)
        expected = "<|begin_of_text|>" + "".join(
            f"<|start_header_id|>{role[t['from']]}<|end_header_id|>\n\n{t['value']}<|eot_id|>"
            for t in rec["conversations"])
        assert tok.detokenize(s["tokens"]) == expected
        replies = [t["value"] + "<|eot_id|>" for t in rec["conversations"] if t["from"] == "gpt"]
        assert [tok.detokenize(r) for r in _mask_runs(s["tokens"], s["loss_mask"])] == replies


def _stored_and_source_images(prefix, recs, root):
    """(stored HxWx3 arrays, source arrays) of every record with an image, in order."""
    from megatron_sicog.data.image import decode_image
    from megatron_sicog.data.indexed import SampleReader

    reader = SampleReader(prefix)
    pairs = [(decode_image(reader.read(i)["images"][0]), np.asarray(Image.open(root / r["image"]).convert("RGB")))
             for i, r in enumerate(recs) if "image" in r]
    assert any(src.shape[0] != src.shape[1] for _, src in pairs)  # the corpus has non-square images
    return [a for a, _ in pairs], [b for _, b in pairs]


def test_pixels_and_workers_and_json_list(sp_model, corpus, tmp_path):
    """--image-processor clip --image-size 16 stores the CLIP processor's 16 x 16 view: the trainer's
    processor on it gives CLIPImageProcessor's pixels of the non-square source; output bytes do not depend on
    --workers or input format."""
    from megatron_sicog.data.image_processing import ImageProcessing
    from tests.test_image_processing import _hf_pixels

    path, root = corpus
    recs = _records(path)
    json_list = tmp_path / "records.json"
    json_list.write_text(json.dumps(recs))
    px = ["--image-processor", "clip", "--image-size", "16"]
    assert _run(sp_model, [path], tmp_path / "a", "--workers", "0", *px, image_root=root) == 0
    assert _run(sp_model, [json_list], tmp_path / "b", "--workers", "2", *px, image_root=root) == 0
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"a{ext}").read_bytes() == (tmp_path / f"b{ext}").read_bytes()
    stored, sources = _stored_and_source_images(tmp_path / "a", recs, root)
    clip = ImageProcessing.family_default("clip", 16)
    assert all(a.shape == (16, 16, 3) for a in stored)
    assert torch.equal(clip(stored), _hf_pixels(clip.hf_processor(), sources))


def test_pixels_of_a_checkpoints_padding_processor(sp_model, corpus, tmp_path, capsys):
    """--image-processor CKPT: a checkpoint recording LLaVA-1.5's pad stores what its trainer's processor
    turns into LLaVA-1.5's pixels (expand2square with the mean colour, then CLIP); a wrong --image-size, or
    --image-size alone, is refused."""
    from dataclasses import replace

    from megatron_sicog.data.image_processing import ImageProcessing, for_vision
    from megatron_sicog.guards import UsageError
    from megatron_sicog.model.presets import PRESETS
    from megatron_sicog.training.checkpointing import build_meta
    from tests.test_image_processing import _llava15_pixels

    size = PRESETS["tiny"].vision.image_size
    pad = ImageProcessing.family_default("clip", size).with_aspect_ratio("pad")
    args = PRESETS["tiny"].replace(vision=replace(PRESETS["tiny"].vision, image_processor=pad.to_hf()))
    ckpt = tmp_path / "ckpt"
    (ckpt / "iter_0000000").mkdir(parents=True)
    (ckpt / "iter_0000000" / "meta.json").write_text(json.dumps(build_meta(args, 1, 1, 0)))
    (ckpt / "latest_checkpointed_iteration.txt").write_text("0\n")
    path, root = corpus
    recs = _records(path)
    assert _run(sp_model, [path], tmp_path / "p", "--workers", "0", "--image-processor", ckpt,
                image_root=root) == 0
    stored, sources = _stored_and_source_images(tmp_path / "p", recs, root)
    want = _llava15_pixels(ImageProcessing.family_default("clip", size).hf_processor(), sources, "pad")
    assert torch.equal(for_vision(args.vision)(stored), want)

    with pytest.raises(UsageError, match=f"--image-size 16, but the processor of {ckpt} gives {size}x{size}"):
        _run(sp_model, [path], tmp_path / "q", "--image-processor", ckpt, "--image-size", "16", image_root=root)
    with pytest.raises(SystemExit):
        _run(sp_model, [path], tmp_path / "r", "--image-size", "16", image_root=root)
    assert "name it with --image-processor" in capsys.readouterr().err


def test_chunked_write_equals_builder_add_item(tmp_path):
    """SampleWriter.add_documents (one write per chunk) == megatron add_item/end_document."""
    from megatron_sicog.data.indexed import SampleWriter, doc_items

    docs = [(np.arange(7), [(2, 5)], [b"abc"]), (np.arange(3) + 9, [(0, 3)], []),
            (np.arange(5), [(1, 2), (3, 5)], [b"xy", b"12345"])]
    with SampleWriter(tmp_path / "slow", np.uint16) as w:
        for t, s, im in docs:
            w.add_sample(t, s, im)
    with SampleWriter(tmp_path / "fast", np.uint16) as w:
        items, modes, per = [], [], []
        for t, s, im in docs:
            a, m = doc_items(t, s, im, np.uint16)
            items += a
            modes += m
            per.append(len(a))
        w.add_documents(np.concatenate(items), [len(a) for a in items], modes, per)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"slow{ext}").read_bytes() == (tmp_path / f"fast{ext}").read_bytes()


def _bad_corpus(tmp_path, root_src):
    """Good records interleaved with one of each kind of bad record; returns (path, expected errors)."""
    good = _records(root_src[0])[:8]
    root = root_src[1]
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    lines, expected = [], {}
    bad = [
        ("{not json", "malformed JSON"),
        (json.dumps({"id": "noimg", "image": "nope.png", "conversations": good[0]["conversations"]}), "missing image"),
        (json.dumps({"id": "broken", "image": "broken.png", "conversations": good[0]["conversations"]}),
         "unreadable image"),
        (json.dumps({"id": "noreply", "conversations": [{"from": "human", "value": "hi"}]}), "no assistant turn"),
        (json.dumps({"id": "count", "image": good[0]["image"],
                     "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]}),
         "1 image(s) but 0 <image> placeholder(s)"),
        (json.dumps({"id": "shape", "foo": 1}), "neither 'conversations' nor"),
        (json.dumps([1, 2]), "not an object"),
        (json.dumps({"id": "long", "conversations": [{"from": "human", "value": "x " * 300},
                                                     {"from": "gpt", "value": "y"}]}), "over-long"),
    ]
    for g, (b, reason) in zip(good, bad):
        lines.append(json.dumps(g))
        lines.append(b)
        expected[len(lines)] = reason
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, expected, len(good)


def test_bad_input_skip(sp_model, corpus, tmp_path, capsys):
    path, expected, n_good = _bad_corpus(tmp_path, corpus)
    assert _run(sp_model, [path], tmp_path / "out", "--workers", "2", "--seq-length", "400",
                "--overlong", "drop", image_root=corpus[1]) == 0
    out = capsys.readouterr().out
    assert f"written {n_good}, skipped {len(expected)}" in out
    errors = _records(tmp_path / "out.errors.jsonl")
    assert [e["line"] for e in errors] == sorted(expected)
    for e in errors:
        assert expected[e["line"]] in e["reason"], e
        assert e["file"] == str(path)
    from megatron_sicog.data.indexed import SampleReader

    assert len(SampleReader(tmp_path / "out")) == n_good


def test_bad_input_fail(sp_model, corpus, tmp_path, capsys):
    path, expected, _ = _bad_corpus(tmp_path, corpus)
    (tmp_path / "out.bin").write_bytes(b"old")  # an earlier output must survive untouched
    assert _run(sp_model, [path], tmp_path / "out", "--on-error", "fail", "--overwrite", image_root=corpus[1]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{min(expected)}: malformed JSON" in err
    assert (tmp_path / "out.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "out.bin"]


def test_overlong_truncate(sp_model, tmp_path):
    from megatron_sicog.data.indexed import SampleReader

    rec = {"id": "t", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "red " * 100}]}
    (tmp_path / "r.jsonl").write_text(json.dumps(rec) + "\n")
    assert _run(sp_model, [tmp_path / "r.jsonl"], tmp_path / "out", "--seq-length", "40") == 0
    s = SampleReader(tmp_path / "out").read(0)
    assert len(s["tokens"]) == 40 and s["loss_mask"][-1] == 1 and s["loss_mask"][0] == 0


def test_interrupt_leaves_nothing(sp_model, corpus, tmp_path, monkeypatch):
    calls = []
    real = preprocess_tool.convert_chunk

    def flaky(task):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(preprocess_tool, "convert_chunk", flaky)
    assert _run(sp_model, [corpus[0]], tmp_path / "out", "--workers", "0", image_root=corpus[1]) == 130
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigterm_leaves_nothing(sp_model, tmp_path):
    """A real run killed by SIGTERM mid-way (SLURM time limit) leaves no partial files."""
    texts = toy_texts(2000, seed=5)
    with open(tmp_path / "big.jsonl", "w") as f:
        for i in range(60000):
            f.write(json.dumps({"text": texts[i % 2000]}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools/preprocess_data.py"), "--input", str(tmp_path / "big.jsonl"),
         "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", str(sp_model),
         "--output-prefix", str(out / "ds"), "--workers", "2", "--chunk-size", "64", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 600  # start-up (megatron-core import) is slow on a loaded machine
    started = False
    while time.time() < deadline and proc.poll() is None and not started:
        partial = [p for p in out.iterdir() if p.name.endswith(".partial.bin")]
        started = bool(partial) and partial[0].stat().st_size > 0
        time.sleep(0.05)
    assert started and proc.poll() is None, "run finished (or never started writing) before the signal"
    proc.send_signal(signal.SIGTERM)
    out_text, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, out_text.decode()[-1000:], err.decode()[-2000:])
    assert list(out.iterdir()) == []


def test_shards_merge_equal_single_run(sp_model, corpus, tmp_path, capsys):
    path, root = corpus
    assert _run(sp_model, [path], tmp_path / "single", image_root=root) == 0
    for k in range(3):
        assert _run(sp_model, [path], tmp_path / f"shard_{k}", "--shard-index", k, "--num-shards", 3,
                    image_root=root) == 0
    written = [int(line.split("written ")[1].split(",")[0])
               for line in capsys.readouterr().out.splitlines() if line.startswith("preprocess_data")]
    assert written[0] == 30 and sum(written[1:]) == 30 and all(written[1:])
    prefixes = [str(tmp_path / f"shard_{k}") for k in range(3)]
    assert merge_tool.main(["--input", *prefixes, "--output-prefix", str(tmp_path / "merged"), "--no-progress"]) == 0
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"single{ext}").read_bytes() == (tmp_path / f"merged{ext}").read_bytes()
    assert merge_tool.main(["--input", prefixes[0], str(tmp_path / "missing"), "--output-prefix",
                            str(tmp_path / "m2"), "--no-progress"]) == 2
    assert "dataset file missing" in capsys.readouterr().err


def _pair_records(corpus, tmp_path):
    """Preference pairs made from the corpus: prompt = the human turns before the last reply."""
    recs = _records(corpus[0])[:6]
    pairs = [dict(r, conversations=r["conversations"][:-1], chosen=r["conversations"][-1]["value"],
                  rejected=f"not {r['conversations'][-1]['value']}") for r in recs]
    pairs[2] = dict(pairs[2], rejected=None)  # bad: skipped whole, the chosen side too
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path, pairs


def test_preference_pairs_go_through_mmap_as_document_pairs(sp_model, corpus, tmp_path):
    """--preference: two documents per pair (chosen, rejected) sharing the prompt and the image; a bad pair
    is skipped whole; PreferencePairs reads them back lazily and equals encoding each side directly."""
    from megatron_sicog.data.chat_template import encode_conversation
    from megatron_sicog.data.indexed import SampleReader
    from megatron_sicog.data.preference import PreferencePairs

    path, pairs = _pair_records(corpus, tmp_path)
    prefix = tmp_path / "pairs"
    assert _run(sp_model, [path], prefix, "--preference", "--chat-template", "qwen2", image_root=corpus[1]) == 0
    assert len(SampleReader(prefix)) == 10
    errors = _records(f"{prefix}.errors.jsonl")
    assert [(e["line"], e["id"]) for e in errors] == [(3, pairs[2]["id"])] and "'rejected'" in errors[0]["reason"]
    ds = PreferencePairs([str(prefix)])
    tok = build_tokenizer("SentencePieceTokenizer", str(sp_model))
    kept = [p for p in pairs if p["rejected"] is not None]
    assert len(ds) == len(kept) == 5
    for i, p in enumerate(kept):
        got = ds[i]
        for side in ("chosen", "rejected"):
            conv = p["conversations"] + [{"from": "gpt", "value": p[side]}]
            ids, mask = encode_conversation(tok, conv, "qwen2")
            np.testing.assert_array_equal(got[side]["tokens"], ids)
            np.testing.assert_array_equal(got[side]["loss_mask"], mask)
        assert len(got["chosen"]["images"]) == len(got["rejected"]["images"]) == (1 if p.get("image") else 0)
        if p.get("image"):
            np.testing.assert_array_equal(got["chosen"]["images"][0], got["rejected"]["images"][0])
            src = np.asarray(Image.open(corpus[1] / p["image"]).convert("RGB"))
            assert got["chosen"]["images"][0].shape == src.shape


def test_preference_pairs_refuse_a_dataset_that_is_not_pairs(sp_model, corpus, tmp_path):
    from megatron_sicog.data.preference import PreferencePairs

    prefix = tmp_path / "lm"
    recs = _records(corpus[0])[:3]
    path = tmp_path / "three.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert _run(sp_model, [path], prefix, image_root=corpus[1]) == 0
    with pytest.raises(ValueError, match="3 documents, not chosen/rejected pairs"):
        PreferencePairs([str(prefix)])
    path.write_text("".join(json.dumps(r) + "\n" for r in recs[:2]))
    assert _run(sp_model, [path], prefix, "--overwrite", image_root=corpus[1]) == 0
    with pytest.raises(ValueError, match="documents 0 and 1 have different prompts"):
        PreferencePairs([str(prefix)])[0]
    with pytest.raises(ValueError, match="not a weighted blend"):
        PreferencePairs(["1.0", str(prefix)])
