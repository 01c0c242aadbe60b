"""tools/evaluate_benchmarks.py: saved predictions re-scored, bad input, a model answering, resume."""
import json
import os
import subprocess
import sys

import pytest

from megatron_sicog.guards import UsageError
from tests import benchmark_fixtures as fx
from tests.helpers import REPO, load_tool, small_checkpoint


@pytest.fixture()
def files(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    return {"mmb": fx.write_mcq(d / "mmb.tsv"), "pope": fx.write_pope(d), "chart": fx.write_chart(d),
            "preds": {"MMBench_DEV_EN": fx.write_predictions(d / "mmb_preds.jsonl", "index", fx.MCQ_PREDICTIONS),
                      "POPE": fx.write_predictions(d / "pope_preds.jsonl", "question_id", fx.POPE_PREDICTIONS),
                      "ChartQA": fx.write_predictions(d / "chart_preds.jsonl", "index", fx.CHART_PREDICTIONS)}}


def _bench_args(f):
    return ["--benchmark", f"MMBench_DEV_EN={f['mmb']}", "--benchmark", f"POPE={f['pope']}",
            "--benchmark", f"ChartQA={f['chart']}"]


def test_saved_predictions_scored_and_rescored(files, tmp_path, capsys):
    out = tmp_path / "out"
    pred_args = [x for n, p in files["preds"].items() for x in ("--predictions", f"{n}={p}")]
    res = load_tool("evaluate_benchmarks").main([*_bench_args(files), *pred_args, "--output-dir", str(out)])
    table = capsys.readouterr().out
    assert "MMBench_DEV_EN" in table and "per-row 66.7" in table and "unmatched 1/6" in table
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(res))
    assert saved["MMBench_DEV_EN"]["overall"] == pytest.approx(1 / 3)
    assert saved["POPE"]["f1"] == pytest.approx(0.6) and saved["ChartQA"]["overall"] == 0.5
    # the tool's own per-row file is a predictions file: re-scoring it gives the same figures
    again = tmp_path / "again"
    res2 = load_tool("evaluate_benchmarks").main([*_bench_args(files), "--output-dir", str(again),
                         *[x for n in files["preds"] for x in ("--predictions", f"{n}={out / (n + '.predictions.jsonl')}")]])
    assert res2 == res


def test_bad_input_writes_nothing(files, tmp_path):
    out = tmp_path / "out"
    bad = files["mmb"].with_name("bad.tsv")
    rows = fx.mcq_rows()
    del rows[2]["A"]
    fx.write_mcq(bad, rows)
    cases = [
        (["--benchmark", f"MMBench={bad}", "--predictions", f"MMBench={files['preds']['MMBench_DEV_EN']}"],
         r"bad\.tsv:row 3: missing column\(s\) 'A'"),
        (["--benchmark", f"MMMU={files['mmb']}", "--predictions", f"MMMU={files['preds']['MMBench_DEV_EN']}"],
         "unknown benchmark 'MMMU'"),
        (["--benchmark", f"POPE={files['pope']}", "--predictions", f"POPE={files['preds']['ChartQA']}"],
         r"chart_preds\.jsonl:line 1: question_id 10 is not a row of POPE"),
    ]
    for args, message in cases:
        with pytest.raises(UsageError, match=message):
            load_tool("evaluate_benchmarks").main([*args, "--output-dir", str(out)])
        assert not out.exists()
    # as a command: one line, exit status 2
    p = subprocess.run([sys.executable, str(REPO / "tools" / "evaluate_benchmarks.py"), *cases[0][0],
                        "--output-dir", str(out)], capture_output=True, text=True, cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1:] == [
        f"evaluate_benchmarks: error: {bad}:row 3: missing column(s) 'A' (has "
        + ", ".join(sorted(k for k in fx.mcq_rows()[2] if k != "A")) + ")"]
    assert not out.exists()


@pytest.fixture(scope="module")
def checkpoint(mcore, tmp_path_factory):
    ckpt, model, tok = small_checkpoint(tmp_path_factory.mktemp("evalckpt"))
    return {"ckpt": ckpt, "model": model, "tok": tok}


def test_model_answers_every_row_and_resumes(checkpoint, files, tmp_path):
    from megatron_sicog.evaluation import benchmarks as bm
    from megatron_sicog.generation.candidates import greedy_answer

    out = tmp_path / "out"
    args = ["--load", str(checkpoint["ckpt"]), "--benchmark", f"MMBench_DEV_EN={files['mmb']}",
            "--benchmark", f"POPE={files['pope']}", "--max-new-tokens", "6", "--micro-batch-size", "3",
            "--no-progress", "--output-dir", str(out)]
    # a run killed after one answer: the partial file (with a torn last line) is resumed
    (out / ".partial").mkdir(parents=True)
    (out / ".partial" / "POPE.jsonl").write_text('{"id": "1", "prediction": "No."}\n{"id": "2", "predi')
    res = load_tool("evaluate_benchmarks").main(args)
    assert not (out / ".partial").exists()
    assert res["MMBench_DEV_EN"]["n_rows"] == 6 and res["POPE"]["n"] == 8
    pope = [json.loads(x) for x in (out / "POPE.predictions.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in pope] == [str(i) for i in range(1, 9)]
    assert pope[0]["prediction"] == "No."  # kept from the partial file, not answered again
    # the other answers are the model's greedy answers to the benchmark prompts
    bench = bm.load_benchmark("POPE", files["pope"])
    items = [{"prompt": bm.request_text(bench, it), "images": [r.decode() for r in it["images"]]}
             for it in bench.items[1:]]
    expect = greedy_answer(checkpoint["model"], checkpoint["tok"], items, max_new_tokens=6)
    assert [r["prediction"] for r in pope[1:]] == expect
    mmb = [json.loads(x) for x in (out / "MMBench_DEV_EN.predictions.jsonl").read_text().splitlines()]
    assert sum(r["hit"] for r in mmb) / 6 == pytest.approx(res["MMBench_DEV_EN"]["per_row"])


def test_tensor_parallel_answers_equal_tp1(checkpoint, files, tmp_path):
    """TP=2 (torchrun, 2 gloo ranks) writes the TP=1 answers; only TP rank 0 writes."""
    from tests.helpers import torchrun

    common = ["--load", str(checkpoint["ckpt"]), "--benchmark", f"POPE={files['pope']}", "--max-new-tokens", "6",
              "--no-progress"]
    one = load_tool("evaluate_benchmarks").main([*common, "--output-dir", str(tmp_path / "tp1")])
    torchrun(str(REPO / "tools" / "evaluate_benchmarks.py"), *common, "--tensor-model-parallel-size", "2",
             "--output-dir", str(tmp_path / "tp2"), nproc=2)
    assert json.loads((tmp_path / "tp2" / "results.json").read_text()) == json.loads(json.dumps(one))
    assert ((tmp_path / "tp2" / "POPE.predictions.jsonl").read_text()
            == (tmp_path / "tp1" / "POPE.predictions.jsonl").read_text())
