"""tools/check_gpu.py: one JSON line per step; "no GPU" and exit 0 without one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, *flags):
    out = tmp_path / "check.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "check_gpu.py"), "--output", str(out), *flags],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")] == lines
    return proc, {r["step"]: r for r in lines}


@pytest.mark.skipif(torch.cuda.is_available(), reason="GPU present: checks the no-GPU answer")
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    proc, steps = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert steps["versions"]["torch"] == torch.__version__ and "transformer_engine_error" in steps["versions"]
    assert steps["gpu"]["ok"] is None and steps["gpu"]["reason"].startswith("no GPU")


def test_cpu_steps_pass(tmp_path):
    """--allow-cpu: packed = unpacked losses (local), engine = no-cache greedy, save/load round trip."""
    proc, steps = _run(tmp_path, "--allow-cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("packed_vs_unpacked_local", "engine_greedy_vs_no_cache", "save_load_round_trip"):
        assert steps[name]["ok"] is True, steps[name]
    assert steps["packed_vs_unpacked_transformer_engine"]["ok"] is None  # refused, not wrong
    assert steps["summary"]["ok"] is True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_steps_pass(tmp_path):
    proc, steps = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert steps["cpu_vs_gpu_logits"]["ok"] is True, steps["cpu_vs_gpu_logits"]
    assert steps["local_vs_te_logits"]["ok"] in (True, None), steps["local_vs_te_logits"]
