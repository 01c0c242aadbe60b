"""megatron_sicog.mcore_import: megatron-core's torch.compile decorators compile on first call."""
import os
import subprocess
import sys

import torch

from megatron_sicog.mcore_import import lazy_compile
from tests.helpers import REPO


def test_lazy_compile_defers_the_real_compile_to_the_first_call_and_keeps_results():
    calls = []

    def real(fn, **kw):
        calls.append(kw)
        return torch.compile(fn, **kw)

    def gelu_bias(x, b):
        return torch.nn.functional.gelu(x + b, approximate="tanh")

    wrapped = lazy_compile(real)(gelu_bias, backend="eager")
    deco = lazy_compile(real)(backend="eager")(gelu_bias)  # decorator form
    assert calls == [] and wrapped.__name__ == "gelu_bias"
    x, b = torch.randn(4, 8), torch.randn(8)
    for f in (wrapped, deco):
        assert torch.equal(f(x, b), gelu_bias(x, b))
        assert torch.equal(f(x, b), gelu_bias(x, b))
    assert calls == [{"backend": "eager"}, {"backend": "eager"}]  # once per function, with its options


def test_megatron_core_imports_without_the_compiler_and_torch_compile_is_restored():
    code = ("import sys, torch; real = torch.compile; import megatron_sicog, megatron.core; "
            "from megatron.core import jit; from megatron.core.models.gpt import GPTModel; "
            "assert torch.compile is real, 'torch.compile not restored'; "
            "assert getattr(jit.jit_fuser(lambda x: x), '__sicog_lazy_compile__', False), jit.jit_fuser; "
            "print('inductor', 'torch._inductor.compile_fx' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "inductor False" in p.stdout, p.stdout
