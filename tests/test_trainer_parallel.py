"""2-process training at TP=2 and at PP=2: checkpoints, resume, and equality with TP=1.

All runs start from one `--pretrained-checkpoint` (written at TP=1; loading it
at TP=2 / PP=2 reshards it), because Megatron seeds pipeline stages apart and a
PP run initialised from scratch has other weights. Each parallel case trains
3 iterations that stop with a checkpoint (--exit-interval), then resumes to 6
from it; every per-iteration loss must equal the single-process TP=1 run to
fp32 round-off.
"""
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO, tiny_init_checkpoint, worker_env

ARGS = ["--stage", "sft", "--mock-data", "--micro-batch-size", "2", "--global-batch-size", "4",
        "--seq-length", "64", "--lr", "1e-3", "--train-iters", "6", "--seed", "11", "--log-interval", "1"]


def _losses(path):
    return {r["iteration"]: r["lm_loss"] for r in map(json.loads, open(path)) if "iteration" in r}


def _launch(nproc, *args):
    env = worker_env(nproc)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)] \
        if nproc > 1 else [sys.executable]
    p = subprocess.run([*launcher, str(REPO / "pretrain_sicog.py"), *ARGS, *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-4000:]
    return p


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory, mcore):
    return tiny_init_checkpoint(tmp_path_factory.mktemp("init"), seed=21)


@pytest.fixture(scope="module")
def tp1_losses(tmp_path_factory, init_ckpt):
    log = tmp_path_factory.mktemp("tp1") / "log.jsonl"
    _launch(1, "--log-json", str(log), "--pretrained-checkpoint", str(init_ckpt))
    return _losses(log)


@pytest.mark.parametrize("flag", ["--tensor-model-parallel-size", "--pipeline-model-parallel-size"])
def test_two_process_train_checkpoint_resume(tmp_path, flag, tp1_losses, init_ckpt):
    save, log = tmp_path / "ckpt", tmp_path / "resumed.jsonl"
    run = [flag, "2", "--save", str(save), "--load", str(save), "--log-json", str(log),
           "--pretrained-checkpoint", str(init_ckpt)]
    _launch(2, *run, "--exit-interval", "3")
    assert (save / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    ranks = sorted(p.name for p in (save / "iter_0000003").iterdir() if p.is_dir())
    assert ranks == (["mp_rank_00", "mp_rank_01"] if "tensor" in flag else ["mp_rank_00_000", "mp_rank_00_001"])
    _launch(2, *run)  # resumes from iteration 3 (the pretrained checkpoint is ignored now)
    got = _losses(log)
    assert sorted(got) == list(range(1, 7))
    for it in got:
        assert abs(got[it] - tp1_losses[it]) / tp1_losses[it] < 1e-5, (it, got[it], tp1_losses[it])
    assert got[6] < got[1]
