"""The lmms-eval model `megatron_sicog` with the real lmms-eval package, on a local task.

Marked ``lmms_eval``: `make test` leaves them out, `make test-lmms-eval`
runs them in .venv-lmms-eval (the extra `lmms-eval`), and .ci/run does both.
Elsewhere they skip when lmms-eval is not installed. The task is examples/lmms_eval/sicog_pope (a
task YAML over a local JSONL file); its answers must be those of
tools/evaluate_benchmarks.py on the same file and checkpoint (the same
prompt, greedy), so both report the same accuracy.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests import benchmark_fixtures as fx
from tests.helpers import REPO, load_tool, small_checkpoint

pytestmark = pytest.mark.lmms_eval


@pytest.fixture(autouse=True)
def _needs_lmms_eval():
    pytest.importorskip("lmms_eval", reason="lmms-eval not installed (pip install -e '.[lmms-eval]'; "
                                            "make test-lmms-eval)")


def test_entry_point_declared():
    from importlib.metadata import entry_points

    from megatron_sicog.evaluation.lmms_plugin import CLASS_PATH, MODEL_NAME, manifest

    m = manifest()
    assert (m.model_id, m.simple_class_path) == (MODEL_NAME, CLASS_PATH)
    eps = [ep for ep in entry_points().select(group="lmms_eval.models") if ep.name == MODEL_NAME]
    if eps:  # the project is pip-installed (with this setup.py): lmms-eval finds the model by itself
        assert eps[0].value == "megatron_sicog.evaluation.lmms_plugin:manifest"


def test_lmms_eval_local_task_matches_evaluate_benchmarks(mcore, tmp_path):
    ckpt, _, _ = small_checkpoint(tmp_path)
    task = tmp_path / "task"
    shutil.copytree(REPO / "examples" / "lmms_eval" / "sicog_pope", task)
    fx.write_pope(task)
    out = tmp_path / "lmms_out"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf"))
    cmd = [sys.executable, "-m", "megatron_sicog.evaluation.lmms_plugin", "--model", "megatron_sicog",
           "--model_args", f"load={ckpt}", "--batch_size", "4", "--tasks", "sicog_pope", "--include_path", str(task),
           "--output_path", str(out), "--log_samples"]
    p = subprocess.run(cmd, cwd=task, env=env, capture_output=True, text=True, timeout=900)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-4000:]  # lmms-eval exits 0 after an error too: the table below is the check
    assert "|sicog_pope|" in log and "pope_accuracy" in log  # lmms-eval's result table
    results = json.loads(next(out.rglob("*_results.json")).read_text())["results"]["sicog_pope"]
    samples = [json.loads(x) for x in next(out.rglob("*_samples_sicog_pope.jsonl")).read_text().splitlines()]
    assert len(samples) == 8

    tool = load_tool("evaluate_benchmarks")
    ours = tool.main(["--load", str(ckpt), "--benchmark", f"POPE={task / 'pope.jsonl'}",
                                     "--max-new-tokens", "16", "--no-progress", "--output-dir", str(tmp_path / "ours")])
    assert results["pope_accuracy,none"] == pytest.approx(ours["POPE"]["accuracy"])
    assert results["pope_f1,none"] == pytest.approx(ours["POPE"]["f1"])
    assert results["pope_yes_ratio,none"] == pytest.approx(ours["POPE"]["yes_ratio"])
    rows = [json.loads(x) for x in (tmp_path / "ours" / "POPE.predictions.jsonl").read_text().splitlines()]
    lmms = [s["filtered_resps"] if isinstance(s["filtered_resps"], str) else s["filtered_resps"][0] for s in samples]
    assert sorted(x.strip() for x in lmms) == sorted(r["prediction"].strip() for r in rows)  # lmms-eval strips
