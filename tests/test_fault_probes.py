"""Fault probes of the tools (issue 22): what a careless or unlucky user does, and what must hold.

Each probe runs a tool the way a user would (a subprocess, unless the probe is
about a library function) and checks the exit status, the message (one line
``<tool>: error: ...`` naming the flag or file, no traceback) and the files
before and after. `tests/fault_probes/run_probes.py` runs this module and
writes the pass/fail table beside itself.
"""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import REPO, load_tool
from tests.test_generation_tool import setup  # noqa: F401 - the tiny checkpoint, tokenizer and records

from megatron_sicog.curation.synthetic import synthetic_records
from megatron_sicog.guards import UsageError, check_outputs, confined_path, make_temp
from megatron_sicog.io import write_jsonl_atomic


def tool(name, *args, timeout=300, env=None):
    """Run tools/<name>.py; returns (returncode, stdout, stderr, seconds)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, f"tools/{name}.py", *map(str, args)], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0


def assert_one_line(rc, err, prog, *needles):
    """Exit 2, no traceback, the last stderr line is the tool's one error line with every needle."""
    assert rc == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error:"), err[-2000:]
    for n in needles:
        assert n in last, (n, last)


def snapshot(*paths):
    return {str(p): (p.read_bytes() if p.is_file() else None) for p in paths}


# -- curation ------------------------------------------------------------------------------
@pytest.fixture
def cands(tmp_path):
    path = tmp_path / "cands.jsonl"
    write_jsonl_atomic(path, synthetic_records(31, 4, seed=2))
    return path


def curate_args(inp, out, *extra):
    return ["--input", inp, "--output", out, "--scorer", "lexical", "--no-progress", *extra]


def test_curate_refuses_output_that_is_its_input(cands):
    before = snapshot(cands)
    rc, _, err, _ = tool("curate", *curate_args(cands, cands))
    assert_one_line(rc, err, "curate", "--output", "--input", "destroy the input")
    assert snapshot(cands) == before


def test_curate_refuses_existing_output_unless_overwrite(cands, tmp_path):
    out = tmp_path / "curated.jsonl"
    out.write_text('{"id": "old"}\n')
    rc, _, err, _ = tool("curate", *curate_args(cands, out))
    assert_one_line(rc, err, "curate", str(out), "--overwrite")
    assert out.read_text() == '{"id": "old"}\n'
    rc, _, err, _ = tool("curate", *curate_args(cands, out, "--overwrite"))
    assert rc == 0, err
    assert len(out.read_text().splitlines()) > 1


def test_curate_output_directory_refused_before_work(cands, tmp_path):
    (tmp_path / "outdir").mkdir()
    rc, _, err, _ = tool("curate", *curate_args(cands, tmp_path / "outdir"))
    assert_one_line(rc, err, "curate", "--output", "is a directory")


@pytest.mark.parametrize("value", ["1.5", "inf", "nan", "-0.5"])
def test_curate_threshold_outside_0_1_refused(value):
    curate_tool = load_tool("curate")

    args = curate_tool.build_parser().parse_args(["--input", "x", "--output", "y", "--caption-threshold", value])
    with pytest.raises(UsageError, match="--caption-threshold must be a number in"):
        curate_tool.check_args(args)


def test_curate_threshold_probe_end_to_end(cands, tmp_path):
    rc, _, err, _ = tool("curate", *curate_args(cands, tmp_path / "c.jsonl", "--caption-threshold", "nan"))
    assert_one_line(rc, err, "curate", "--caption-threshold")


def test_curate_outputs_have_the_umask_mode(cands, tmp_path):
    out = tmp_path / "c.jsonl"
    rc, _, err, _ = tool("curate", *curate_args(cands, out, "--preference-output", tmp_path / "p.jsonl"))
    assert rc == 0, err
    umask = os.umask(0)
    os.umask(umask)
    for p in (out, tmp_path / "p.jsonl", tmp_path / "c.errors.jsonl"):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


# -- generation ----------------------------------------------------------------------------
def gen_args(s, out, *extra):
    return ["--load", s["ckpt"], "--image-root", s["image_root"], "--output", out, "--mode", "cot",
            "--max-new-tokens", "8", "--num-candidates", "2", "--no-progress", *extra]


def test_generate_refuses_output_that_is_its_input(setup, tmp_path):  # noqa: F811
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(setup["records"].read_bytes())
    before = snapshot(inp)
    rc, _, err, _ = tool("generate_candidates", *gen_args(setup, inp, "--input", inp))
    assert_one_line(rc, err, "generate_candidates", "--output", "--input")
    assert snapshot(inp) == before


def test_generate_refuses_existing_output_without_resume(setup, tmp_path):  # noqa: F811
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps({"id": f"x{i}", "candidates": ["a"]}) + "\n" for i in range(20)))
    before = snapshot(out)
    rc, _, err, _ = tool("generate_candidates", *gen_args(setup, out, "--input", setup["records"]))
    assert_one_line(rc, err, "generate_candidates", "--overwrite", "--resume")
    assert snapshot(out) == before


@pytest.mark.parametrize("flag,value", [("--num-candidates", "0"), ("--top-p", "1.5"), ("--temperature", "-1"),
                                        ("--temperature", "nan")])
def test_generate_bad_sampling_flags_refused_before_loading(setup, tmp_path, flag, value):  # noqa: F811
    rc, _, err, secs = tool("generate_candidates",
                            *gen_args(setup, tmp_path / "o.jsonl", "--input", setup["records"], flag, value))
    assert_one_line(rc, err, "generate_candidates", flag)
    assert not (tmp_path / "o.jsonl").exists()


def test_generate_load_that_is_not_a_checkpoint(setup, tmp_path):  # noqa: F811
    (tmp_path / "empty").mkdir()
    rc, _, err, _ = tool("generate_candidates", *gen_args(setup, tmp_path / "o.jsonl", "--input",
                                                          setup["records"], "--load", tmp_path / "empty"))
    assert_one_line(rc, err, "generate_candidates", str(tmp_path / "empty"), "not a checkpoint directory")


def _truncated_copy(src, dst, keep_iteration_zero=True):
    import shutil

    shutil.copytree(src, dst)
    it = dst / "iter_0000000"
    if keep_iteration_zero:  # an older complete iteration beside the damaged newer one
        shutil.copytree(it, dst / "iter_0000005")
        (dst / "latest_checkpointed_iteration.txt").write_text("5\n")
        it = dst / "iter_0000005"
    f = it / "mp_rank_00" / "model_optim_rng.pt"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return f


def test_generate_truncated_checkpoint_names_file_and_older_iteration(setup, tmp_path):  # noqa: F811
    bad = _truncated_copy(setup["ckpt"], tmp_path / "ckpt")
    rc, _, err, _ = tool("generate_candidates", *gen_args(setup, tmp_path / "o.jsonl", "--input", setup["records"],
                                                          "--load", tmp_path / "ckpt"))
    assert_one_line(rc, err, "generate_candidates", str(bad), "truncated", "iteration 0")
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").stat().st_size == 0


def test_resume_removes_damaged_lines_atomically(tmp_path):
    gen_tool = load_tool("generate_candidates")

    out = tmp_path / "o.jsonl"
    good = [json.dumps({"id": f"r{i}", "candidates": ["x"]}) for i in range(5)]
    out.write_text("\n".join(good[:2] + ['{"id": "r2", "cand'] + good[3:]) + '\n{"id": "r9", "ca')
    done = gen_tool.done_ids(out)
    assert done == {"r0", "r1", "r3", "r4"}
    assert out.read_text() == "\n".join(good[:2] + good[3:]) + "\n"


def test_cod_record_without_image_is_an_error_not_a_candidate(setup, tmp_path):  # noqa: F811
    inp = tmp_path / "in.jsonl"
    rows = [json.loads(line) for line in setup["records"].read_text().splitlines()][:3]
    rows.append({"id": "noimage", "conversations": [{"from": "human", "value": "describe"}]})
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.jsonl"
    rc, _, err, _ = tool("generate_candidates", "--load", setup["ckpt"], "--image-root", setup["image_root"],
                         "--output", out, "--mode", "cod", "--max-new-tokens", "4", "--num-candidates", "1",
                         "--no-progress", "--input", inp)
    assert rc == 0, err
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [r["id"] for r in rows[:3]]
    errs = [json.loads(x) for x in (tmp_path / "o.jsonl.errors.jsonl").read_text().splitlines()]
    assert len(errs) == 1 and errs[0]["id"] == "noimage" and "no 'image'" in errs[0]["reason"]


# -- preprocessing -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from megatron_sicog.data.toy import make_records, make_sentencepiece, toy_texts

    d = tmp_path_factory.mktemp("pre")
    sp = make_sentencepiece(toy_texts(1500, seed=2), d / "sp", 400)
    records, image_root = make_records(d / "data", 6, seed=3)
    return dict(sp=sp, records=records, image_root=image_root, dir=d)


def pre_args(c, inp, prefix, *extra):
    return ["--input", inp, "--image-root", c["image_root"], "--tokenizer-type", "SentencePieceTokenizer",
            "--tokenizer-model", c["sp"], "--output-prefix", prefix, "--workers", "0", "--no-progress", *extra]


def test_preprocess_refuses_existing_prefix_unless_overwrite(corpus, tmp_path):
    prefix = tmp_path / "ds"
    (tmp_path / "ds.bin").write_bytes(b"old bin")
    (tmp_path / "ds.idx").write_bytes(b"old idx")
    rc, _, err, _ = tool("preprocess_data", *pre_args(corpus, corpus["records"], prefix))
    assert_one_line(rc, err, "preprocess_data", "ds.bin", "--overwrite")
    assert (tmp_path / "ds.bin").read_bytes() == b"old bin"
    rc, _, err, _ = tool("preprocess_data", *pre_args(corpus, corpus["records"], prefix, "--overwrite"))
    assert rc == 0, err
    assert (tmp_path / "ds.bin").read_bytes() != b"old bin"


def test_preprocess_prefix_that_is_a_directory(corpus, tmp_path):
    rc, _, err, _ = tool("preprocess_data", *pre_args(corpus, corpus["records"], f"{tmp_path}/"))
    assert rc == 2 and "Traceback" not in err and "--output-prefix" in err and "names a directory" in err
    assert list(tmp_path.iterdir()) == []


def test_preprocess_empty_input_is_an_error(corpus, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    rc, _, err, _ = tool("preprocess_data", *pre_args(corpus, tmp_path / "empty.jsonl", tmp_path / "ds"))
    assert_one_line(rc, err, "preprocess_data", "no sample to write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]


@pytest.mark.parametrize("kind", ["missing", "junk"])
def test_preprocess_bad_tokenizer_is_one_line(corpus, tmp_path, kind):
    tok = tmp_path / "tok.model"
    if kind == "junk":
        tok.write_bytes(b"this is not a sentencepiece model")
    args = pre_args(corpus, corpus["records"], tmp_path / "ds")
    args[args.index("--tokenizer-model") + 1] = tok
    rc, _, err, _ = tool("preprocess_data", *args)
    assert_one_line(rc, err, "preprocess_data", "--tokenizer-model", str(tok))


def test_image_paths_stay_inside_the_root(corpus, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.png").write_bytes(b"x")
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    (root / "in.png").write_bytes(b"x")
    assert confined_path(root, "in.png") == str((root / "in.png").resolve())
    for rel in ("../outside.png", "link.png", "/etc/passwd"):
        with pytest.raises(ValueError, match="--allow-outside-image-root"):
            confined_path(root, rel)
    assert confined_path(root, "../outside.png", allow_outside=True).endswith("outside.png")


def test_preprocess_does_not_open_files_outside_the_root(corpus, tmp_path):
    rec = json.loads(corpus["records"].read_text().splitlines()[0])
    rows = [dict(rec, id="escape", image="../../../../../../../etc/passwd"), dict(rec, id="abs", image="/etc/passwd")]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows + [rec]))
    rc, _, err, _ = tool("preprocess_data", *pre_args(corpus, inp, tmp_path / "ds"))
    assert rc == 0, err
    errs = [json.loads(x) for x in (tmp_path / "ds.errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errs] == ["escape", "abs"]
    assert all("--image-root" in e["reason"] and "recognised image" not in e["reason"] for e in errs)


# -- files and checkpoints -----------------------------------------------------------------
def test_stale_temp_files_of_killed_runs_are_removed(tmp_path):
    out = tmp_path / "o.jsonl"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    live = make_temp(out)  # this process's own temp file is kept
    stale = live.with_name(live.name.replace(f".{os.getpid()}.", f".{pid}."))
    stale.write_bytes(b"x" * 1000)
    write_jsonl_atomic(out, [{"id": 1}])
    assert not stale.exists() and live.exists() and out.exists()


def test_check_outputs_rules(tmp_path):
    (tmp_path / "a").write_text("x")
    with pytest.raises(UsageError, match="--pref and --out are the same file"):
        check_outputs({}, {"--out": tmp_path / "b", "--pref": tmp_path / "b"})
    check_outputs({"--input": [tmp_path / "i"]}, {"--out": tmp_path / "a"}, resume=True)  # continued
    with pytest.raises(UsageError, match="or --resume to continue it"):
        check_outputs({}, {"--out": tmp_path / "a"}, resume=False)


class Foreign:
    def __reduce__(self):
        return (print, ("code ran",))


def test_foreign_pickle_refused_by_name_unless_allowed(tmp_path, monkeypatch):
    from megatron_sicog.training import checkpointing as ckpt

    f = tmp_path / "model_optim_rng.pt"
    torch.save({"model": {}, "extra": Foreign()}, f)
    monkeypatch.delenv(ckpt.ALLOW_PICKLE_ENV, raising=False)
    with pytest.raises(ckpt.CheckpointError, match=f"{f} holds Python objects.*--allow-pickle"):
        ckpt.torch_load(f)
    monkeypatch.setenv(ckpt.ALLOW_PICKLE_ENV, "1")
    assert "extra" in ckpt.torch_load(f)


def test_project_rank_files_load_with_weights_only(setup):  # noqa: F811
    from megatron_sicog.training import checkpointing as ckpt

    assert os.environ.get(ckpt.ALLOW_PICKLE_ENV) in (None, "", "0")
    state = ckpt.load_rank_file(setup["ckpt"], 0, 0)
    assert state["model"]


def test_numpy_rng_state_loads_with_weights_only(tmp_path):
    import numpy as np

    from megatron_sicog.training import checkpointing as ckpt

    torch.save({"model": {}, "rng": {"numpy": np.random.get_state()}}, tmp_path / "f.pt")
    assert ckpt.torch_load(tmp_path / "f.pt")["rng"]["numpy"][0] == "MT19937"


def test_truncated_safetensors_is_one_line(tmp_path):
    from safetensors.torch import save_file

    from megatron_sicog.conversion.hf_mapping import ConversionError
    from megatron_sicog.conversion.safetensors_io import SafetensorsDir

    save_file({"w": torch.zeros(64, 64)}, tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="model.safetensors: truncated or not a safetensors file"):
        SafetensorsDir(tmp_path).get("w")


def test_rank_files_and_directories_are_fsynced_before_the_tracker(tmp_path, monkeypatch):
    from megatron_sicog.training import checkpointing as ckpt

    order = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (order.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd))[1])
    ckpt.save_rank_file(tmp_path, 3, 0, 0, 1, {"model": {"w": torch.zeros(2)}})
    ckpt.finalize_iteration(tmp_path, 3, {"iteration": 3})
    names = [os.path.relpath(p, tmp_path) for p in order]
    tracker = names.index(next(n for n in names if n.startswith(".latest_checkpointed_iteration.txt")))
    assert any(n.endswith("model_optim_rng.pt.tmp") for n in names[:tracker])
    assert "." in names[:tracker]  # the save directory itself, after the rename


# -- training ------------------------------------------------------------------------------
TRAIN = ["--mock-data", "--micro-batch-size", "2", "--global-batch-size", "2", "--seq-length", "32",
         "--lr", "1e-3", "--min-lr", "1e-5", "--lr-warmup-iters", "1", "--log-interval", "1", "--seed", "7"]


def train(*args, timeout=300):
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "pretrain_sicog.py", *map(str, args)], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0


@pytest.mark.parametrize("blend,needle", [
    (["1.0", "{d}/nope"], "nope.bin"),
    (["-0.5", "{d}/a", "1.5", "{d}/b"], "weights must be finite and >= 0"),
    (["0", "{d}/a", "0", "{d}/b"], "weights are all 0"),
    (["0.5", "{d}/a", "{d}/b"], "weight/prefix pairs"),
])
def test_train_bad_data_path_is_one_line(corpus, tmp_path, blend, needle):
    for name in ("a", "b"):
        for ext in (".bin", ".idx"):
            (tmp_path / (name + ext)).write_bytes(b"")
    rc, _, err, _ = train("--train-iters", "1", "--data-path", *[b.format(d=tmp_path) for b in blend],
                          "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", corpus["sp"])
    assert_one_line(rc, err, "pretrain_sicog.py", "--data-path", needle)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A mock-data run of 4 iterations with checkpoints at 2 and 4."""
    save = tmp_path_factory.mktemp("train") / "ckpt"
    rc, out, err, _ = train(*TRAIN, "--train-iters", "4", "--save", save, "--save-interval", "2")
    assert rc == 0, out[-2000:] + err[-2000:]
    return save


def test_train_load_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    rc, _, err, _ = train(*TRAIN, "--train-iters", "1", "--load", tmp_path)
    assert_one_line(rc, err, "pretrain_sicog.py", "--load", "not a checkpoint directory")


def test_train_truncated_checkpoint_names_file_and_older_iteration(trained, tmp_path):
    import shutil

    ck = tmp_path / "ckpt"
    shutil.copytree(trained, ck)
    f = ck / "iter_0000004" / "mp_rank_00" / "model_optim_rng.pt"
    f.write_bytes(f.read_bytes()[:1000])
    rc, _, err, _ = train(*TRAIN, "--train-iters", "6", "--load", ck, "--save", ck)
    assert_one_line(rc, err, "pretrain_sicog.py", str(f), "truncated", "iteration 2")


def test_train_resume_with_longer_schedule_is_refused_or_followed(trained, tmp_path):
    import shutil

    ck = tmp_path / "ckpt"
    shutil.copytree(trained, ck)
    rc, _, err, _ = train(*TRAIN, "--train-iters", "8", "--load", ck, "--save", ck)
    assert_one_line(rc, err, "pretrain_sicog.py", "--train-iters/--lr-decay-iters", "checkpoint 4, flags 8",
                    "--override-opt_param-scheduler", "--use-checkpoint-opt_param-scheduler")
    log = tmp_path / "log.jsonl"
    rc, out, err, _ = train(*TRAIN, "--train-iters", "8", "--load", ck, "--save", ck, "--log-json", log,
                            "--override-opt_param-scheduler")
    assert rc == 0, out[-2000:] + err[-2000:]
    lrs = [json.loads(x)["lr"] for x in log.read_text().splitlines() if '"iteration"' in x]
    assert len(lrs) == 4 and all(lr > 1e-5 * 1.5 for lr in lrs[:-1]), lrs  # decaying, not sat at --min-lr


def test_train_removes_unfinished_saves_of_killed_runs(trained, tmp_path):
    import shutil

    ck = tmp_path / "ckpt"
    shutil.copytree(trained, ck)
    (ck / ".iter_0000006.tmp" / "mp_rank_00").mkdir(parents=True)
    (ck / ".iter_0000006.tmp" / "mp_rank_00" / "model_optim_rng.pt.tmp").write_bytes(b"x" * 1000)
    rc, out, err, _ = train(*TRAIN, "--train-iters", "4", "--load", ck, "--save", ck)
    assert rc == 0, out[-2000:] + err[-2000:]
    assert not (ck / ".iter_0000006.tmp").exists()
    assert "unfinished save of a killed run" in out + err


def test_every_tool_writes_errors_in_one_shape(corpus, setup, tmp_path):  # noqa: F811
    """generation, preprocess and curation error files: exactly {"file", "line", "id", "reason"}."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "task": "caption"}\n{"broken\n' + corpus["records"].read_text())
    rc, _, err, _ = tool("curate", *curate_args(bad, tmp_path / "c.jsonl"))
    assert rc == 0, err
    rc, _, err, _ = tool("preprocess_data", *pre_args(corpus, bad, tmp_path / "ds"))
    assert rc == 0, err
    gen_bad = tmp_path / "gen_bad.jsonl"  # no image for cod, then a broken line: nothing to generate
    gen_bad.write_text('{"id": "a", "task": "caption"}\n{"broken\n')
    rc, _, err, _ = tool("generate_candidates", "--load", setup["ckpt"], "--image-root", setup["image_root"],
                         "--output", tmp_path / "g.jsonl", "--mode", "cod", "--num-candidates", "1",
                         "--no-progress", "--input", gen_bad)
    assert rc == 0, err
    for name in ("c.errors.jsonl", "ds.errors.jsonl", "g.jsonl.errors.jsonl"):
        rows = [json.loads(x) for x in (tmp_path / name).read_text().splitlines()]
        assert rows and [e["line"] for e in rows[:2]] == [1, 2], rows
        for e in rows:
            assert sorted(e) == ["file", "id", "line", "reason"], e


def test_merge_rerun_refuses_existing_output_and_never_merges_itself(corpus, tmp_path):
    shards = tmp_path / "shards"
    for k in range(2):
        rc, _, err, _ = tool("preprocess_data", *pre_args(corpus, corpus["records"], shards / f"s{k}",
                                                          "--shard-index", k, "--num-shards", 2))
        assert rc == 0, err
    merged = shards / "all"
    rc, _, err, _ = tool("merge_datasets", "--input-dir", shards, "--output-prefix", merged, "--no-progress")
    assert rc == 0, err
    first = (merged.with_suffix(".bin")).read_bytes()
    rc, _, err, _ = tool("merge_datasets", "--input-dir", shards, "--output-prefix", merged, "--no-progress")
    assert_one_line(rc, err, "merge_datasets", "all.bin", "--overwrite")
    rc, _, err, _ = tool("merge_datasets", "--input-dir", shards, "--output-prefix", merged, "--no-progress",
                         "--overwrite")
    assert rc == 0, err
    assert merged.with_suffix(".bin").read_bytes() == first  # the shards only, not the old output too


def test_dpo_pairs_keep_images_inside_the_root(corpus, tmp_path):
    from megatron_sicog.data.preference import PreferencePairs

    rec = json.loads(corpus["records"].read_text().splitlines()[0])
    pair = dict(rec, conversations=rec["conversations"][:1], chosen="a red square", rejected="a blue circle")
    inp = tmp_path / "pairs.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in
                           [pair, dict(pair, id="escape", image="../" * 8 + "etc/passwd")]))
    rc, _, err, _ = tool("preprocess_data", *pre_args(corpus, inp, tmp_path / "pairs", "--preference"))
    assert rc == 0, err
    errors = [json.loads(line) for line in open(tmp_path / "pairs.errors.jsonl")]
    assert [e["id"] for e in errors] == ["escape"] and "leads outside --image-root" in errors[0]["reason"]
    assert len(PreferencePairs([str(tmp_path / "pairs")])) == 1


def test_convert_load_that_is_empty_or_truncated(setup, tmp_path):  # noqa: F811
    (tmp_path / "empty").mkdir()
    rc, _, err, _ = tool("convert_checkpoint", "megatron-to-hf", "--load", tmp_path / "empty", "--save",
                         tmp_path / "hf", "--no-progress")
    assert_one_line(rc, err, "convert_checkpoint megatron-to-hf", "not a checkpoint directory")
    bad = _truncated_copy(setup["ckpt"], tmp_path / "ckpt", keep_iteration_zero=False)
    rc, _, err, _ = tool("convert_checkpoint", "megatron-to-hf", "--load", tmp_path / "ckpt", "--save",
                         tmp_path / "hf", "--no-progress")
    assert_one_line(rc, err, "convert_checkpoint megatron-to-hf", str(bad), "truncated")
    assert not (tmp_path / "hf").exists()
