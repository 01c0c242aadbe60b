"""tools/generate_candidates.py end to end: records/images -> candidate records, errors, shards, resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, load_tool, small_checkpoint


@pytest.fixture(scope="module")
def setup(mcore, tmp_path_factory):
    """A small checkpoint saved at TP=2 (loaded at TP=1), its HF tokenizer, records and images."""
    from megatron_sicog.data.toy import make_records

    d = tmp_path_factory.mktemp("gen")
    ckpt, _, tok = small_checkpoint(d, tp=2)
    records, image_root = make_records(d / "data", 12, seed=1)
    good = [json.loads(line) for line in records.read_text().splitlines()]
    # bad input: a malformed line, a missing image, no id, an over-long question
    bad = records.with_name("with_bad.jsonl")
    lines = records.read_text().splitlines()
    lines.insert(3, '{"id": "broken", ')
    lines.insert(5, json.dumps({"id": "noimg", "image": "missing.png",
                                "conversations": [{"from": "human", "value": "<image>\nWhat?"}]}))
    lines.insert(7, json.dumps({"conversations": [{"from": "human", "value": "hi"}]}))
    lines.insert(9, json.dumps({"id": "long", "question": " ".join(["picture"] * 400)}))
    bad.write_text("\n".join(lines) + "\n")
    return dict(dir=d, ckpt=ckpt, records=records, bad=bad, image_root=image_root, good=good, tok=tok)


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _base(s, out, *extra):
    return ["--load", str(s["ckpt"]), "--image-root", str(s["image_root"]), "--output", str(out),
            "--max-new-tokens", "12", "--micro-batch-size", "4", "--no-progress", *extra]


def test_cot_candidates_with_bad_input_reported(setup, tmp_path, capsys):
    s = setup
    out = tmp_path / "cands.jsonl"
    load_tool("generate_candidates").main(_base(s, out, "--input", str(s["bad"]), "--mode", "cot",
                                                "--num-candidates", "3"))
    recs = _read(out)
    assert sorted(r["id"] for r in recs) == sorted(r["id"] for r in s["good"])
    by_id = {r["id"]: r for r in s["good"]}
    assert sum(len(c) for r in recs for c in r["candidates"]) > 10 * len(recs)  # real text was generated
    for r in recs:
        assert r["task"] == "reasoning" and len(r["candidates"]) == 3
        assert all(isinstance(c, str) for c in r["candidates"])
        assert r["image"] == by_id[r["id"]].get("image")
        assert r["reference"] == by_id[r["id"]]["conversations"][1]["value"]
        question = by_id[r["id"]]["conversations"][0]["value"].replace("<image>", "").strip()
        assert question in r["prompt"] and "Answer step by step" in r["prompt"]
    errors = _read(out.with_name(out.name + ".errors.jsonl"))
    assert all(sorted(e) == ["file", "id", "line", "reason"] for e in errors)
    reasons = {(str(e["line"]), e["id"]): e["reason"] for e in errors}
    assert len(errors) == 4
    assert "malformed JSON" in reasons[("4", None)]
    assert "image not found" in reasons[("6", "noimg")]
    assert "no 'id'" in reasons[("8", None)]
    assert "context" in reasons[("10", "long")]
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "12 records x 3 candidates" in summary and "4 skipped with errors" in summary


def test_greedy_candidates_are_identical_and_bare_image_list(setup, tmp_path):
    s = setup
    out = tmp_path / "cod.jsonl"
    load_tool("generate_candidates").main(_base(s, out, "--mode", "cod", "--num-candidates", "4", "--temperature", "0"))
    recs = _read(out)
    images = sorted(p.name for p in s["image_root"].iterdir())
    assert sorted(r["id"] for r in recs) == images
    for r in recs:
        assert r["task"] == "caption" and r["image"] == r["id"] and "reference" not in r
        assert len(r["candidates"]) == 4 and len(set(r["candidates"])) == 1
        assert r["prompt"].startswith("<image>\nDescribe the image step by step")


def test_shards_concatenate_to_the_whole_and_seeds_repeat(setup, tmp_path):
    s = setup
    tool = load_tool("generate_candidates")
    whole = tmp_path / "whole.jsonl"
    tool.main(_base(s, whole, "--input", str(s["records"]), "--mode", "answer", "--num-candidates", "2", "--seed", "5"))
    again = tmp_path / "again.jsonl"
    tool.main(_base(s, again, "--input", str(s["records"]), "--mode", "answer", "--num-candidates", "2", "--seed", "5"))
    assert whole.read_text() == again.read_text()  # same seed, same candidates
    parts = []
    for k in range(2):
        p = tmp_path / f"part{k}.jsonl"
        tool.main(_base(s, p, "--input", str(s["records"]), "--mode", "answer", "--num-candidates", "2",
                        "--seed", "5", "--shard-index", str(k), "--num-shards", "2"))
        parts += _read(p)
    assert sorted(r["id"] for r in parts) == sorted(r["id"] for r in _read(whole))
    assert len(parts) == len({r["id"] for r in parts})


def test_killed_run_resumes_with_every_id_once(setup, tmp_path):
    s = setup
    many = tmp_path / "many.jsonl"
    recs = [dict(r, id=f"{r['id']}-{k}") for k in range(2) for r in s["good"]]  # 24 records, 12 batches
    many.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "resumed.jsonl"
    args = _base(s, out, "--input", str(many), "--mode", "cot", "--num-candidates", "2", "--micro-batch-size", "2",
                 "--max-new-tokens", "8")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "generate_candidates.py"), *args], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _read(out)
    assert 1 <= len(first) < len(recs)
    with open(out, "a") as f:  # as if killed in the middle of a write
        f.write('{"id": "rec0-0", "candidates": ["trunc')
    load_tool("generate_candidates").main(args + ["--resume"])
    final = _read(out)
    ids = [r["id"] for r in final]
    assert sorted(ids) == sorted(r["id"] for r in recs)  # every id exactly once
    assert [r["id"] for r in final[: len(first)]] == [r["id"] for r in first]  # earlier lines kept


@pytest.mark.slow
def test_tensor_and_data_parallel_runs(setup, tmp_path):
    """TP=2 (torchrun, 2 gloo ranks) gives the TP=1 greedy candidates; DP=2 splits records into .dpNNN shards."""
    from tests.helpers import torchrun

    s = setup
    script = str(REPO / "tools" / "generate_candidates.py")
    common = ["--input", str(s["records"]), "--mode", "cot", "--num-candidates", "2", "--temperature", "0"]
    tp1 = tmp_path / "tp1.jsonl"
    load_tool("generate_candidates").main(_base(s, tp1, *common))
    tp2 = tmp_path / "tp2.jsonl"
    torchrun(script, *_base(s, tp2, *common, "--tensor-model-parallel-size", "2"), nproc=2)
    assert _read(tp2) == _read(tp1)
    dp = tmp_path / "dp.jsonl"
    torchrun(script, *_base(s, dp, *common), nproc=2)
    shards = [_read(tmp_path / f"dp.dp00{k}.jsonl") for k in range(2)]
    assert all(shards)
    merged = {r["id"]: r for part in shards for r in part}
    assert sum(map(len, shards)) == len(merged) == len(s["good"])
    assert merged == {r["id"]: r for r in _read(tp1)}


@pytest.mark.slow
def test_hf_path_and_library_entries_agree_with_load(setup, tmp_path):
    """--hf-path (exported copy of the checkpoint) == --load; greedy_answer == greedy candidates."""
    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.data.tokenizer import build_tokenizer
    from megatron_sicog.generation.candidates import CandidateOptions, generate_candidates, greedy_answer
    from megatron_sicog.generation.sampling import GREEDY
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.training.checkpointing import load_model_weights, model_args_from_dict, read_meta

    s = setup
    meta = read_meta(s["ckpt"])
    hf_dir = export_hf(s["ckpt"], tmp_path / "hf", tokenizer_path=meta["tokenizer_model"], progress=False)
    common = ["--input", str(s["records"]), "--image-root", str(s["image_root"]), "--mode", "answer",
              "--num-candidates", "2", "--temperature", "0", "--max-new-tokens", "10", "--no-progress"]
    tool = load_tool("generate_candidates")
    tool.main(["--load", str(s["ckpt"]), "--output", str(tmp_path / "load.jsonl"), *common])
    tool.main(["--hf-path", str(hf_dir), "--output", str(tmp_path / "hf.jsonl"), *common])
    from_load, from_hf = _read(tmp_path / "load.jsonl"), _read(tmp_path / "hf.jsonl")
    # same weights from two files: equal records, provenance included, except the checkpoint's identity
    from megatron_sicog.records import file_sha256, without_checkpoint
    assert [without_checkpoint(r) for r in from_hf] == [without_checkpoint(r) for r in from_load]
    assert len(from_load) == len(s["good"])
    ck_load, ck_hf = from_load[0]["provenance"]["checkpoint"], from_hf[0]["provenance"]["checkpoint"]
    assert ck_load == {"kind": "load", "path": str(Path(s["ckpt"]).resolve()), "iteration": meta["iteration"],
                       "meta_sha256": file_sha256(next(Path(s["ckpt"]).glob("iter_*")) / "meta.json")}
    assert ck_hf["kind"] == "hf" and ck_hf["path"] == str(Path(hf_dir).resolve())
    assert ck_hf["meta_sha256"] == file_sha256(Path(hf_dir) / "config.json")
    prov = from_load[0]["provenance"]
    assert (prov["mode"], prov["seed"], prov["num_candidates"]) == ("answer", 1234, 2)
    assert prov["sampling"]["temperature"] == 0.0
    assert sum(bool(c) for r in from_load for c in r["candidates"]) > len(from_load)  # real text, not empty

    model = build_model(model_args_from_dict(meta["model_args"])).eval()
    load_model_weights(model, s["ckpt"])
    tok = build_tokenizer("HuggingFaceTokenizer", meta["tokenizer_model"])
    opts = CandidateOptions(mode="answer", num_candidates=1, sampling=GREEDY, max_new_tokens=10,
                            image_root=s["image_root"])
    recs = [r for batch in generate_candidates(model, tok, s["good"], opts) for r in batch.records]
    by_id = {r["id"]: r for r in recs}
    assert {r["id"]: r["candidates"] for r in from_load} == {k: r["candidates"] * 2 for k, r in by_id.items()}
    assert all(r["provenance"]["checkpoint"] is None and r["provenance"]["num_candidates"] == 1 for r in recs)
    items = [{"prompt": by_id[r["id"]]["prompt"], "image": r.get("image")} for r in s["good"]]
    answers = greedy_answer(model, tok, items, image_root=s["image_root"], max_new_tokens=10)
    assert answers == [by_id[r["id"]]["candidates"][0] for r in s["good"]]
