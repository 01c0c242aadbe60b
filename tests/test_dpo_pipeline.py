"""DPO at PP=2 (2 gloo processes, torchrun) equals PP=1 from the same weights: metrics and gradients.

Both runs load one `--pretrained-checkpoint`, take a full train step (so the policy is no longer the
reference and the reference log-probs matter), then a second forward-backward; the second step's
DPO metrics and every parameter's gradient (canonical names, gathered over the stages) must agree
to fp32 round-off. At PP=2 the reference is partitioned like the policy and runs through the same
megatron-core schedule, forward-only, before the policy's pass.
"""
import math
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO, tiny_init_checkpoint, torchrun, worker_env

ARGS = ["--stage", "dpo", "--mock-data", "--micro-batch-size", "2", "--global-batch-size", "4",
        "--seq-length", "64", "--lr", "1e-3", "--lr-warmup-iters", "0", "--train-iters", "2", "--seed", "5",
        "--dpo-beta", "0.5", "--log-interval", "1"]
WORKER = REPO / "tests" / "dpo_pp_worker.py"


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory, mcore):
    return tiny_init_checkpoint(tmp_path_factory.mktemp("init"), seed=31)


def test_dpo_pp2_equals_pp1_loss_and_gradients(tmp_path, init_ckpt):
    common = [*ARGS, "--pretrained-checkpoint", str(init_ckpt)]
    pp1, pp2 = tmp_path / "pp1.pt", tmp_path / "pp2.pt"
    p = subprocess.run([sys.executable, str(WORKER), str(pp1), *common], cwd=REPO, env=worker_env(1),
                       capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-4000:]
    torchrun(str(WORKER), str(pp2), *common, "--pipeline-model-parallel-size", "2", timeout=1500)
    a, b = torch.load(pp1), torch.load(pp2)
    assert abs(a["first"]["dpo_loss"] - math.log(2)) < 1e-5  # policy == reference at the first step
    assert abs(a["second"]["dpo_loss"] - math.log(2)) > 1e-4  # ... and not at the second: the reference counts
    for step in ("first", "second"):
        for k in ("dpo_loss", "rewards/margins", "logps/chosen", "logps/rejected", "rewards/chosen"):
            assert b[step][k] == pytest.approx(a[step][k], rel=1e-5, abs=1e-6), (step, k, a[step], b[step])
    assert sorted(a["grads"]) == sorted(b["grads"])
    nonzero = 0
    for k, g in a["grads"].items():
        # fp32 round-off of another summation order (measured: at most 1e-6 of the tensor's largest entry)
        tol = 1e-5 * float(g.abs().max())
        torch.testing.assert_close(b["grads"][k], g, rtol=1e-4, atol=tol, msg=lambda m: f"{k}: {m}")
        nonzero += bool(g.abs().sum() > 0)
    assert nonzero > len(a["grads"]) // 2
