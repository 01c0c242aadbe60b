"""benchmarks/train_throughput.py: a tiny smoke run (both sides train, same first loss, ratio line last)."""
import os
import re
import subprocess
import sys

from tests.helpers import REPO


def test_train_throughput_smoke():
    cmd = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--batch-size", "1",
           "--seq-length", "32", "--warmup", "1", "--iters", "1", "--threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(REPO),
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d+", lines[-1]), lines[-1]
    assert float(lines[-1].split()[1]) > 0
    assert not any(line.startswith("WARNING") for line in lines), res.stdout
    rows = {line.split("  ")[0]: line for line in lines if line.startswith(("ours (", "HF loop ("))}
    assert set(rows) == {"ours (Trainer.train_step)", "HF loop (sdpa)"}, rows
