"""Import megatron-core without paying for torch.compile's machinery up front.

megatron-core 0.16 sets ``megatron.core.jit.jit_fuser = torch.compile`` and
decorates its fusion kernels (``fusions/fused_bias_geglu.py`` and friends)
with it at import time. Each ``torch.compile(fn)`` call imports
``torch._dynamo`` and ``torch._inductor.compile_fx`` (lowering, autotuning,
codegen): measured here, that is the larger part of ``import megatron.core``,
paid by every ``pretrain_sicog.py`` / ``tools/*.py`` start-up of the loop and
of the tests, although on this project's paths those kernels are never called
(``bias_activation_fusion`` and friends are off).

`install()` (called by ``megatron_sicog/__init__.py``) adds a meta-path hook
that, only while ``megatron/core/__init__.py`` runs, makes ``torch.compile``
return a wrapper that calls the real ``torch.compile`` on the function's first
call. torch.compile compiles at first call anyway, so what runs is the same;
only the import of the compiler moves to the first use. ``torch.compile`` is
torch's own again as soon as ``megatron.core`` is imported, and
``SICOG_EAGER_MCORE_IMPORT=1`` turns the hook off.
"""
from __future__ import annotations

import functools
import importlib.abc
import os
import sys

_TARGET = "megatron.core"


def lazy_compile(real_compile):
    """A stand-in for ``torch.compile`` that defers ``real_compile(fn, **kw)`` to fn's first call."""
    def compile_(model=None, **kwargs):
        if model is None:  # used as @torch.compile(mode=...)
            return lambda fn: compile_(fn, **kwargs)
        compiled = None

        @functools.wraps(model)
        def first_call_compiles(*args, **kw):
            nonlocal compiled
            if compiled is None:
                compiled = real_compile(model, **kwargs)
            return compiled(*args, **kw)

        first_call_compiles.__sicog_lazy_compile__ = True
        return first_call_compiles

    return compile_


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        import torch

        real = torch.compile
        torch.compile = lazy_compile(real)
        try:
            self.inner.exec_module(module)
        finally:
            torch.compile = real

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


_FINDER = _Finder()


def install() -> None:
    """Idempotent; a no-op once megatron.core is imported or with SICOG_EAGER_MCORE_IMPORT=1."""
    if os.environ.get("SICOG_EAGER_MCORE_IMPORT") == "1" or _TARGET in sys.modules:
        return
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
