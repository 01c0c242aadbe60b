"""The machine: device, process groups, seeds, and megatron-core's CPU emulation.

This is the only module that asks whether a GPU is present. Everything else
calls `init_distributed(...)`, `device()`, `set_seed(...)` and works the same
on an NCCL + CUDA cluster and on a laptop / CI runner with gloo + CPU.

Why the CPU emulation exists (measured with megatron-core 0.16.1, torch 2.13 CPU):
megatron-core allocates buffers with ``device="cuda"`` /
``device=torch.cuda.current_device()`` and calls ``Tensor.cuda()`` in many
places (default causal mask, DDP grad buffers, schedules' communication
buffers, optimizer state), and its RNG tracker stores CUDA generator states.
On a machine without CUDA we install, once per process:

* a ``TorchFunctionMode`` that rewrites any CUDA ``device=`` argument of a torch
  call (and ``Tensor.to("cuda")``) to the CPU;
* ``Tensor.cuda`` / ``Module.cuda`` as identity, ``torch.cuda.synchronize`` and
  friends as no-ops, ``torch.cuda.current_device`` answering 0 (which the mode
  then maps to the CPU);
* an RNG tracker whose named states are CPU generator states.

All of it is installed by `install_cpu_emulation()`, is idempotent, and is never
installed when CUDA is available.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

from megatron_sicog import mcore_compat

log = logging.getLogger(__name__)

_CPU = torch.device("cpu")
_EMULATION_MODE: Optional[TorchFunctionMode] = None


def cuda_available() -> bool:
    """True when this process can use a CUDA GPU (and should use NCCL)."""
    if os.environ.get("SICOG_FORCE_CPU") == "1":
        return False
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def device() -> torch.device:
    """The device this rank computes on."""
    if cuda_available():
        return torch.device("cuda", torch.cuda.current_device())
    return _CPU


# ---------------------------------------------------------------------------
# CPU emulation of the CUDA calls megatron-core makes
# ---------------------------------------------------------------------------
def _is_cuda_device(d) -> bool:
    if isinstance(d, torch.device):
        return d.type == "cuda"
    if isinstance(d, str):
        return d.startswith("cuda")
    if isinstance(d, int) and not isinstance(d, bool):
        return True  # an ordinal means a CUDA device in torch's API
    return False


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrite CUDA device arguments of torch calls to the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs = dict(kwargs, device=_CPU)
        if func in (torch.Tensor.to,) and args:
            args = tuple(_CPU if _is_cuda_device(a) and i > 0 else a for i, a in enumerate(args))
        return func(*args, **kwargs)


class _CpuRNGStatesTracker:
    """Named RNG states on the CPU generator, the interface of megatron's tracker."""

    def __init__(self, *args, **kwargs):
        self.reset()
        self.use_cudagraphable_rng = False
        self.is_inference_rng_tracker = False

    def is_initialized(self):
        return self._is_initialized

    def reset(self):
        self._is_initialized = False
        self.states_ = {}
        self.seeds_ = set()

    def get_states(self):
        return dict(self.states_)

    def set_states(self, states):
        self._is_initialized = True
        self.states_ = dict(states)

    def add(self, name, seed):
        self._is_initialized = True
        if seed in self.seeds_:
            raise ValueError(f"seed {seed} already exists")
        if name in self.states_:
            raise ValueError(f"rng state {name} already exists")
        self.seeds_.add(seed)
        gen = torch.Generator()
        gen.manual_seed(seed)
        self.states_[name] = gen.get_state()

    @contextlib.contextmanager
    def fork(self, name="model-parallel-rng"):
        if name not in self.states_:
            raise ValueError(f"rng state {name} is not added")
        orig = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(orig)


def install_cpu_emulation() -> None:
    """Make megatron-core's CUDA calls land on the CPU (idempotent; no-op with CUDA)."""
    global _EMULATION_MODE
    if cuda_available() or _EMULATION_MODE is not None:
        return
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[assignment]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[assignment]
    torch.cuda.current_device = lambda: 0  # type: ignore[assignment]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.set_device = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.empty_cache = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.memory_allocated = lambda *a, **k: 0  # type: ignore[assignment]
    torch.cuda.max_memory_allocated = lambda *a, **k: 0  # type: ignore[assignment]
    torch.cuda.manual_seed = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.manual_seed_all = lambda *a, **k: None  # type: ignore[assignment]

    _patch_grad_clipping()
    mcore_compat.install_rng_tracker(_CpuRNGStatesTracker())
    _EMULATION_MODE = _CudaToCpuMode()
    _EMULATION_MODE.__enter__()  # stays active for the life of the process


def _patch_grad_clipping() -> None:
    """megatron's clip_grad_by_total_norm_fp32 asserts `torch.cuda.FloatTensor` grads.

    The norm itself (get_grad_norm_fp32) runs on the CPU through the device
    rewrite; only the scaling step needs a CPU twin with the same semantics.
    """
    def clip_grad_by_total_norm_fp32(parameters, max_norm, total_norm, use_decoupled_grad=False):
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        attr = "decoupled_grad" if use_decoupled_grad else "grad"
        grads = [getattr(p, attr).detach() for p in parameters if getattr(p, attr, None) is not None]
        for g in grads:
            if g.dtype not in (torch.float32, torch.bfloat16):
                raise TypeError(f"gradient clipping expects fp32/bf16 main grads, got {g.dtype}")
        clip_coeff = max_norm / (total_norm + 1.0e-6)
        if clip_coeff < 1.0:
            torch._foreach_mul_(grads, clip_coeff)

    mcore_compat.replace_grad_clipping(clip_grad_by_total_norm_fp32)


def emulation_paused():
    """Context that suspends the CPU emulation's device rewrite (a no-op without it).

    For code paths known to allocate only on their inputs' device, where the
    per-op TorchFunctionMode dispatch is pure overhead (the generation engine's
    decode loop at TP=1). Never wrap megatron code that allocates on "cuda".
    """
    if _EMULATION_MODE is None:
        return contextlib.nullcontext()
    return torch._C.DisableTorchFunction()


# ---------------------------------------------------------------------------
# Process groups
# ---------------------------------------------------------------------------
@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int


def read_dist_env() -> DistEnv:
    """Rank and world from torchrun (RANK/WORLD_SIZE) or srun (SLURM_PROCID/NTASKS)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1:
        # srun one task per rank: MASTER_ADDR/MASTER_PORT come from the batch script
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistEnv(0, 1, 0)


def check_parallel_sizes(world_size: int, tp: int, pp: int) -> None:
    """ValueError with the numbers when TP x PP does not divide the world size."""
    if world_size % (tp * pp) != 0:
        raise ValueError(
            f"world size {world_size} is not divisible by tensor-model-parallel-size {tp} x "
            f"pipeline-model-parallel-size {pp} ({world_size} % ({tp} * {pp}) != 0)"
        )


def init_distributed(
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    seed: Optional[int] = 1234,
    timeout_minutes: int = 30,
) -> DistEnv:
    """Start torch.distributed and megatron's model-parallel groups on this machine.

    Validates TP*PP against the world size before any group is made.
    """
    from megatron.core import parallel_state

    env = read_dist_env()
    tp, pp = tensor_model_parallel_size, pipeline_model_parallel_size
    check_parallel_sizes(env.world_size, tp, pp)
    use_cuda = cuda_available()
    problem = gpu_allocation_problem()
    if problem:
        log.warning(problem)
    if use_cuda:
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    else:
        install_cpu_emulation()
    if not dist.is_initialized():
        kwargs = {}
        if env.world_size == 1:  # one process needs no rendezvous: no port to collide on
            kwargs["store"] = dist.HashStore()
        else:
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=env.rank,
            world_size=env.world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            **kwargs,
        )
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp
        )
    if seed is not None:
        set_seed(seed)
    return env


def destroy_distributed() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def set_seed(seed: int, data_parallel_offset: bool = False) -> None:
    """Seed python, numpy, torch and megatron's model-parallel RNG tracker.

    Pipeline stages get distinct seeds (as Megatron-LM does: seed + 100 * pp_rank)
    so their dropout masks differ; tensor-parallel ranks share the default
    state and differ only in the tracker's 'model-parallel-rng'.
    """
    from megatron.core import parallel_state, tensor_parallel

    if parallel_state.model_parallel_is_initialized():
        seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
        if data_parallel_offset:
            seed = seed + 10 * parallel_state.get_data_parallel_rank()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if parallel_state.model_parallel_is_initialized():
        tensor_parallel.model_parallel_cuda_manual_seed(seed)


def rng_state() -> dict:
    """Every RNG this process uses, for checkpoints."""
    from megatron.core import tensor_parallel

    state = {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    if cuda_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    from megatron.core import tensor_parallel

    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])
    if cuda_available() and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


_TE_WARNED = False


def transformer_engine_import_error() -> Optional[str]:
    """Why Transformer Engine cannot be imported here ("ModuleNotFoundError: ..."), or None when it can."""
    try:
        import transformer_engine  # noqa: F401
        import transformer_engine.pytorch  # noqa: F401  (the part the TE specs use; fails on ABI mismatch)
    except Exception as e:  # noqa: BLE001  (any failure means the TE specs are unusable)
        return f"{type(e).__name__}: {e}"
    return None


def transformer_engine_available() -> bool:
    """True when Transformer Engine is importable and a GPU is present (TE specs usable).

    On a GPU where TE does not import, says so once, loudly, with the import
    error: a container whose TE broke (e.g. its torch was replaced) must not
    fall back to the local specs without a word.
    """
    global _TE_WARNED
    if not cuda_available():
        return False
    error = transformer_engine_import_error()
    if error is not None and not _TE_WARNED:
        _TE_WARNED = True
        log.warning("Transformer Engine cannot be imported on this GPU machine (%s); using megatron-core's local "
                    "layer specs. If TE should be there, check that torch was not reinstalled over the one TE was "
                    "built against (see README, 'On a GPU cluster').", error)
    return error is None


def gpu_allocation_problem(environ=None) -> Optional[str]:
    """A message when the scheduler gave this job GPUs but this torch cannot use CUDA, else None."""
    env = os.environ if environ is None else environ
    if env.get("SICOG_FORCE_CPU") == "1":
        return None
    granted = {k: env[k] for k in ("SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
               if env.get(k, "").strip() not in ("", "NoDevFiles", "-1")}
    if not granted or (torch.cuda.is_available() and torch.cuda.device_count() > 0):
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"GPUs were allocated ({', '.join(f'{k}={v}' for k, v in granted.items())}) but torch {torch.__version__} "
            f"({build}) cannot use CUDA; running on the CPU. Pick the container's Python with SICOG_PYTHON, or set "
            f"SICOG_FORCE_CPU=1 to run on the CPU on purpose.")


def autocast_bf16(enabled: bool = True):
    """``torch.autocast`` to bf16 on this machine's device: matmuls and attention in bf16
    (AMX / AVX-512 BF16 on a CPU, tensor cores on a GPU), weights, gradients and the
    optimizer state stay fp32. A no-op context when not `enabled`."""
    return torch.autocast(device().type, dtype=torch.bfloat16, enabled=enabled)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs whose oneDNN matmuls run bf16 natively (AMX or AVX-512 BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def synchronize() -> None:
    if cuda_available():
        torch.cuda.synchronize()
