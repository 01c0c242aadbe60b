"""Shared test helpers: launching torchrun workers on 2 gloo processes, tiny checkpoints, tool modules."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_tool(name: str):
    """tools/<name>.py as a freshly executed module (the tools are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def worker_env(nproc: int) -> dict:
    """Environment for `nproc` worker ranks: on gloo/CPU unless there is one GPU per rank
    (two NCCL ranks must not share one GPU)."""
    import torch

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    if nproc > 1 and torch.cuda.is_available() and torch.cuda.device_count() < nproc:
        env["SICOG_FORCE_CPU"] = "1"
    return env


def torchrun(script: str, *args: str, nproc: int = 2, timeout: int = 600, env_extra: dict | None = None):
    """Run `script` under torchrun; raise with the output tail on failure."""
    env = worker_env(nproc)
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           str(script), *args]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"torchrun {script} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}")
    return p


def small_checkpoint(d: Path, tp: int = 1):
    """A tiny random SicogModel saved at `tp` under d/ckpt with its HF tokenizer (d/tok) named in the meta.

    Returns (checkpoint dir, the model in eval mode, the tokenizer).
    """
    import torch

    from megatron_sicog.data.tokenizer import build_tokenizer
    from megatron_sicog.data.toy import make_hf_tokenizer, toy_texts
    from megatron_sicog.model import sharding
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.model.presets import LanguageArgs, ModelArgs, VisionArgs
    from megatron_sicog.training.checkpointing import write_from_canonical

    tok_dir = make_hf_tokenizer(toy_texts(300), d / "tok", vocab_size=300)
    tok = build_tokenizer("HuggingFaceTokenizer", tok_dir)
    args = ModelArgs(
        language=LanguageArgs(num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
                              ffn_hidden_size=128, vocab_size=tok.vocab_size, max_position_embeddings=512),
        vision=VisionArgs(image_size=32, patch_size=16, num_layers=1, hidden_size=32, num_attention_heads=2,
                          ffn_hidden_size=64),
        image_token_id=tok.image_token_id, init_method_std=0.05)
    torch.manual_seed(0)
    model = build_model(args).eval()
    full = sharding.gather_full_state_dict(model, args.language.vocab_size)
    write_from_canonical(full, args, d / "ckpt", tp=tp, pp=1, meta_extra={
        "tokenizer_type": "HuggingFaceTokenizer", "tokenizer_model": str(tok_dir), "chat_template": "qwen2"})
    return d / "ckpt", model, tok


def tiny_init_checkpoint(out: Path, seed: int, meta_extra: dict | None = None) -> Path:
    """A seeded tiny model written at TP=1/PP=1 to `out` (`meta_extra` in its meta.json): one
    `--pretrained-checkpoint` for runs at any TP/PP (Megatron seeds pipeline stages apart, so runs
    initialised from scratch differ)."""
    from megatron_sicog import runtime
    from megatron_sicog.model import sharding
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.model.presets import PRESETS
    from megatron_sicog.training.checkpointing import write_from_canonical

    args = PRESETS["tiny"]
    runtime.set_seed(seed)
    full = sharding.gather_full_state_dict(build_model(args), args.language.vocab_size)
    write_from_canonical(full, args, out, tp=1, pp=1, meta_extra=meta_extra)
    return out
