"""Session fixtures: a single-process megatron-core world (gloo/CPU or NCCL/GPU)."""
import pytest


@pytest.fixture(scope="session")
def mcore():
    """torch.distributed + megatron model-parallel groups at TP=1, PP=1 in this process."""
    from megatron_sicog import runtime

    runtime.init_distributed(1, 1, seed=1234)
    yield runtime
