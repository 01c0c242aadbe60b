"""Session fixtures: a single-process megatron-core world (gloo/CPU or NCCL/GPU).

With ``SICOG_FAIL_ON_SKIP=1`` (what ``.ci/run`` sets) a skipped test fails the
session unless its reason says it needs a GPU (or runs only without one).
"""
import os

import pytest

GPU_ONLY_SKIPS = ("no CUDA GPU", "GPU present", "needs a GPU")
_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and os.environ.get("SICOG_FAIL_ON_SKIP", "") not in ("", "0"):
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if not any(k in reason for k in GPU_ONLY_SKIPS):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips:
        print(f"\n{len(_unexpected_skips)} test(s) skipped outside the GPU-only set (SICOG_FAIL_ON_SKIP=1):")
        for line in _unexpected_skips:
            print(f"  {line}")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def mcore():
    """torch.distributed + megatron model-parallel groups at TP=1, PP=1 in this process."""
    from megatron_sicog import runtime

    runtime.init_distributed(1, 1, seed=1234)
    yield runtime
