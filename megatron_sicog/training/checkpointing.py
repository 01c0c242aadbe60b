"""Checkpoints in Megatron's legacy per-rank layout, written atomically.

Layout (what Megatron-LM users know)::

    SAVE/latest_checkpointed_iteration.txt          # the tracker, written last
    SAVE/iter_0000100/mp_rank_00/model_optim_rng.pt           # PP == 1
    SAVE/iter_0000100/mp_rank_01_001/model_optim_rng.pt       # PP > 1: tp, pp
    SAVE/iter_0000100/meta.json                     # model args, tokenizer, layout

Each rank file holds its local model state dict, the partition table
(local key -> (dim, stride) or None) and layer offset needed to merge shards
offline, plus optimizer, LR scheduler, RNG and data-iterator state when saved
by the trainer. An iteration directory is written under a temp name and
renamed when every rank has finished; the tracker is updated after that, so a
crash mid-save leaves the previous checkpoint as `latest`.

Rank files are fsynced, and so is their directory, before the tracker names
them. They are read with ``torch.load(weights_only=True)`` (tensors, plain
values and numpy RNG states only): a file that needs more is refused by name
unless the user opts in (``--allow-pickle`` / ``SICOG_ALLOW_PICKLE=1``), since
unpickling it can run any code. A truncated or foreign file raises
`CheckpointError` naming the file and any older complete iteration.

`load_canonical` merges any TP/PP checkpoint into the canonical TP1/PP1 state
dict without torch.distributed; `write_from_canonical` writes any TP/PP layout
from one (the Hugging Face importer uses it).

A checkpoint imported from Hugging Face also holds ``SAVE/hf_extra.safetensors`` (HF tensors the
megatron model has no place for, e.g. the tower's ``post_layernorm``, SigLIP's pooling head) and
``meta.json`` ``hf`` (the source config and chat template). `carry_hf_extra` and `hf_record` are how the
trainer's saves keep both from the checkpoint they started from, so a model imported, trained and
exported is the source's tower exactly where training did not touch it.

`checkpoint_chat_template(flag, meta, source)` is the chat template a tool
works with when it starts from a checkpoint (the trainer, generation,
evaluation): ``--chat-template`` when given (a warning if it differs from the
template the checkpoint records), else the recorded one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from megatron_sicog.conversion.hf_mapping import HF_EXTRA
from megatron_sicog.guards import UsageError, fsync_dir
from megatron_sicog.io import atomic_write_json, atomic_write_text
from megatron_sicog.model import sharding
from megatron_sicog.model.presets import LanguageArgs, ModelArgs, VisionArgs, padded_vocab_size

TRACKER = "latest_checkpointed_iteration.txt"
RANK_FILE = "model_optim_rng.pt"
ALLOW_PICKLE_ENV = "SICOG_ALLOW_PICKLE"


class CheckpointError(UsageError):
    """A checkpoint that is missing, truncated, foreign or not trusted; the message names the file."""


def add_allow_pickle_flag(parser) -> None:
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load checkpoint files that hold arbitrary Python objects (runs their code: only "
                             "for files you trust); default: tensors and plain values only")


def allow_pickle(enabled: bool = True) -> None:
    """What --allow-pickle does (inherited by child processes)."""
    if enabled:
        os.environ[ALLOW_PICKLE_ENV] = "1"


def _safe_globals() -> list:
    """numpy's pickled RNG state (np.random.get_state()) is an ndarray of uint32."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def complete_iterations(load_dir: str | Path) -> list[int]:
    """Iterations with a finished directory (meta.json written last), oldest first."""
    d = Path(load_dir)
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir()
                  if (m := re.fullmatch(r"iter_(\d{7})", p.name)) and (p / "meta.json").is_file())


def _older_hint(path: Path) -> str:
    """' ; iteration N is complete: ...' when the checkpoint folder has an older iteration."""
    it_dir = path.parent.parent
    load_dir = it_dir.parent
    m = re.fullmatch(r"iter_(\d{7})", it_dir.name)
    older = [i for i in complete_iterations(load_dir) if m and i < int(m.group(1))]
    if not older:
        return ""
    return (f"; iteration {older[-1]} in {load_dir} is complete (write {older[-1]} into {load_dir / TRACKER}, "
            f"or pass --iteration {older[-1]} where the tool has it)")


def torch_load(path: str | Path, **kwargs) -> Any:
    """torch.load with weights_only unless the user opted in; CheckpointError naming the file."""
    import pickle

    path = Path(path)
    trusted = os.environ.get(ALLOW_PICKLE_ENV, "") not in ("", "0")
    try:
        if trusted:
            return torch.load(path, map_location="cpu", weights_only=False, **kwargs)
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(e)})"
                                  + _older_hint(path)) from None
        raise CheckpointError(f"{path} holds Python objects beyond tensors and plain values; not loaded "
                              f"(unpickling it could run code). If you trust it, pass --allow-pickle "
                              f"(or set {ALLOW_PICKLE_ENV}=1)") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or not a torch checkpoint ({_first_line(e)})"
                              + _older_hint(path)) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def iter_dir_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def rank_dir_name(tp_rank: int, pp_rank: int, pp_size: int) -> str:
    return f"mp_rank_{tp_rank:02d}" if pp_size == 1 else f"mp_rank_{tp_rank:02d}_{pp_rank:03d}"


def model_args_to_dict(a: ModelArgs) -> dict:
    return dataclasses.asdict(a)


def model_args_from_dict(d: dict) -> ModelArgs:
    d = dict(d)
    return ModelArgs(language=LanguageArgs(**d.pop("language")), vision=VisionArgs(**d.pop("vision")), **d)


def read_tracker(load_dir: str | Path) -> Optional[int]:
    """The latest complete iteration, or None when the directory has no checkpoint."""
    path = Path(load_dir) / TRACKER
    if not path.exists():
        return None
    text = path.read_text().strip()
    if not text.isdigit():
        raise ValueError(f"{path}: expected an iteration number, found {text!r}")
    return int(text)


def _tmp_iter_dir(save_dir: Path, iteration: int) -> Path:
    return save_dir / f".{iter_dir_name(iteration)}.tmp"


def save_rank_file(save_dir: str | Path, iteration: int, tp_rank: int, pp_rank: int, pp_size: int,
                   state: dict) -> None:
    """Write this rank's file into the iteration's temp directory (atomic per file)."""
    d = _tmp_iter_dir(Path(save_dir), iteration) / rank_dir_name(tp_rank, pp_rank, pp_size)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (RANK_FILE + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, d / RANK_FILE)
    fsync_dir(d)


def finalize_iteration(save_dir: str | Path, iteration: int, meta: dict, keep_last: Optional[int] = None) -> Path:
    """After every rank saved: rename the temp dir into place, then update the tracker."""
    save_dir = Path(save_dir)
    tmp = _tmp_iter_dir(save_dir, iteration)
    atomic_write_json(tmp / "meta.json", meta)
    final = save_dir / iter_dir_name(iteration)
    if final.exists():  # re-saving the same iteration (e.g. resumed and stopped at once)
        shutil.rmtree(final)
    for rank_dir in tmp.iterdir():
        if rank_dir.is_dir():
            fsync_dir(rank_dir)
    fsync_dir(tmp)
    os.replace(tmp, final)
    fsync_dir(save_dir)  # the renamed directory is on disk before the tracker names it
    atomic_write_text(save_dir / TRACKER, f"{iteration}\n")
    if keep_last:
        iters = sorted(int(m.group(1)) for p in save_dir.iterdir()
                       if (m := re.fullmatch(r"iter_(\d{7})", p.name)))
        for it in iters[:-keep_last]:
            shutil.rmtree(save_dir / iter_dir_name(it), ignore_errors=True)
    return final


def remove_stale_iterations(save_dir: str | Path) -> list[Path]:
    """Remove ``.iter_*.tmp`` directories of saves a killed run left unfinished (call on one rank)."""
    import logging

    save_dir = Path(save_dir)
    stale = sorted(save_dir.glob(".iter_*.tmp")) if save_dir.is_dir() else []
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
        logging.getLogger("sicog").warning(f"removed {d}, the unfinished save of a killed run")
    return stale


def iteration_dir(load_dir: str | Path, iteration: Optional[int] = None) -> Path:
    load_dir = Path(load_dir)
    if not load_dir.is_dir():
        raise CheckpointError(f"{load_dir}: no such checkpoint directory")
    if iteration is None:
        try:
            iteration = read_tracker(load_dir)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        if iteration is None:
            found = complete_iterations(load_dir)
            hint = f" (it has iteration directories {found}: pass --iteration)" if found else ""
            raise CheckpointError(f"{load_dir}: no {TRACKER}; not a checkpoint directory{hint}")
    d = load_dir / iter_dir_name(iteration)
    if not d.is_dir():
        found = complete_iterations(load_dir)
        raise CheckpointError(f"{d}: checkpoint iteration directory missing"
                              + (f" (complete iterations: {found})" if found else ""))
    return d


def read_meta(load_dir: str | Path, iteration: Optional[int] = None) -> dict:
    path = iteration_dir(load_dir, iteration) / "meta.json"
    try:
        meta = json.loads(path.read_text())
        for key in ("model_args", "tensor_model_parallel_size", "pipeline_model_parallel_size"):
            meta[key]  # noqa: B018 - a KeyError is a foreign meta.json
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not this project's checkpoint metadata ({_first_line(e)})") from None
    return meta


def load_rank_file(load_dir: str | Path, tp_rank: int, pp_rank: int, iteration: Optional[int] = None,
                   mmap: bool = False) -> dict:
    """One rank's file. mmap=True maps it instead of reading it: only the tensors used are read from
    disk (weights-only loads never touch the optimizer state stored beside them)."""
    d = iteration_dir(load_dir, iteration)
    meta = json.loads((d / "meta.json").read_text())
    path = d / rank_dir_name(tp_rank, pp_rank, meta["pipeline_model_parallel_size"]) / RANK_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: missing (checkpoint was saved with TP={meta['tensor_model_parallel_size']}"
                              f", PP={meta['pipeline_model_parallel_size']})")
    state = torch_load(path, mmap=True) if mmap else torch_load(path)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a rank file of this project (no 'model' state dict)")
    return state


def load_canonical(load_dir: str | Path, iteration: Optional[int] = None,
                   keys: Optional[set[str]] = None) -> tuple[dict, ModelArgs, dict]:
    """Merge every rank file of a checkpoint into the canonical TP1/PP1 state dict (no distributed).

    Files are memory-mapped: the optimizer state in them is never read. `keys`
    (canonical names) limits the merge to those tensors, e.g. one rank's share.
    """
    meta = read_meta(load_dir, iteration)
    tp, pp = meta["tensor_model_parallel_size"], meta["pipeline_model_parallel_size"]
    args = model_args_from_dict(meta["model_args"])
    vocab = args.language.vocab_size
    full: dict[str, torch.Tensor] = {}
    for pp_rank in range(pp):
        shards = [load_rank_file(load_dir, r, pp_rank, iteration, mmap=True) for r in range(tp)]
        first = shards[0]
        for key, t in first["model"].items():
            if not isinstance(t, torch.Tensor) or key.endswith("_extra_state"):
                continue
            gkey = sharding.canonical_key(sharding.to_global_key(key, first["layer_offset"]))
            if keys is not None and gkey not in keys:
                continue
            part = first["partition"].get(key)
            if part is not None:
                t = sharding.merge_tensors([s["model"][key] for s in shards], part[0], part[1])
            if gkey in sharding.VOCAB_KEYS:
                t = t[:vocab]
            full[gkey] = t
        del shards
    return full, args, meta


def _partition_table(args: ModelArgs) -> dict[str, Optional[tuple[int, int]]]:
    """Canonical key pattern (layer index -> '*') -> (dim, stride) from a 1-layer model of this shape."""
    from megatron.core import parallel_state

    from megatron_sicog import runtime
    from megatron_sicog.model.llava import SicogModel

    small = ModelArgs(
        language=dataclasses.replace(args.language, num_layers=1, hidden_size=args.language.num_attention_heads * 2,
                                     ffn_hidden_size=args.language.num_attention_heads * 2, vocab_size=64,
                                     make_vocab_size_divisible_by=1),
        vision=dataclasses.replace(args.vision, num_layers=1, hidden_size=args.vision.num_attention_heads * 2,
                                   ffn_hidden_size=args.vision.num_attention_heads * 2, feature_layer=-1,
                                   image_size=args.vision.patch_size),
        projector_type=args.projector_type, image_token_id=0, transformer_impl=args.transformer_impl)
    if not parallel_state.model_parallel_is_initialized():
        runtime.init_distributed(1, 1, seed=0)
    model = SicogModel(small)
    table = {}
    for key, part in sharding.partition_info(model).items():
        table[re.sub(r"\.layers\.\d+\.", ".layers.*.", key)] = part
    return table


def write_from_canonical(full: dict, args: ModelArgs, save_dir: str | Path, tp: int, pp: int,
                         iteration: int = 0, meta_extra: Optional[dict] = None) -> Path:
    """Write a TP x PP checkpoint of `full` (model weights only) without torch.distributed."""
    from megatron_sicog.model.presets import validate

    validate(args, tp, pp)
    table = _partition_table(args)
    L = args.language.num_layers
    per_stage = L // pp
    padded = padded_vocab_size(args.language.vocab_size, args.language.make_vocab_size_divisible_by, tp)
    layer_re = re.compile(r"^language_model\.decoder\.layers\.(\d+)\.")
    for pp_rank in range(pp):
        first, last = pp_rank == 0, pp_rank == pp - 1
        offset = pp_rank * per_stage
        stage_keys = []
        for gkey in full:
            m = layer_re.match(gkey)
            if m:
                if offset <= int(m.group(1)) < offset + per_stage:
                    stage_keys.append(gkey)
            elif gkey.startswith(("vision.", "projector.", "image_newline", "language_model.embedding.")):
                if first:
                    stage_keys.append(gkey)
            elif gkey.startswith(("language_model.output_layer.", "language_model.decoder.final_layernorm.")):
                if last:
                    stage_keys.append(gkey)
            else:
                raise KeyError(f"unexpected tensor {gkey} in canonical state dict")
        for tp_rank in range(tp):
            local, partition = {}, {}
            for gkey in stage_keys:
                key = sharding.to_local_key(gkey, offset)
                t = full[gkey]
                if gkey in sharding.VOCAB_KEYS and t.shape[0] != padded:
                    t = torch.cat([t, t.new_zeros(padded - t.shape[0], *t.shape[1:])])
                part = table.get(re.sub(r"\.layers\.\d+\.", ".layers.*.", key))
                if part is not None:
                    t = sharding.split_tensor(t, part[0], part[1], tp, tp_rank)
                local[key] = t.clone()
                partition[key] = part
            save_rank_file(save_dir, iteration, tp_rank, pp_rank, pp,
                           {"model": local, "partition": partition, "layer_offset": offset, "iteration": iteration})
    meta = build_meta(args, tp, pp, iteration, meta_extra)
    return finalize_iteration(save_dir, iteration, meta)


def carry_hf_extra(save_dir: str | Path, source: Optional[str | Path]) -> Optional[Path]:
    """Give `save_dir` the ``hf_extra.safetensors`` of `source` (the checkpoint whose vision tower the saved
    weights started from), copied atomically; a stale one of another tower is removed when `source` has
    none. Nothing to do when both are the same directory (a resumed run). Returns the file, if any."""
    save_dir = Path(save_dir)
    dest = save_dir / HF_EXTRA
    if source is None or not Path(source).is_dir() or save_dir.resolve() == Path(source).resolve():
        return dest if dest.is_file() else None
    src = Path(source) / HF_EXTRA
    if not src.is_file():
        if dest.is_file():
            dest.unlink()
        return None
    save_dir.mkdir(parents=True, exist_ok=True)
    tmp = save_dir / f".{HF_EXTRA}.tmp"
    shutil.copyfile(src, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    fsync_dir(save_dir)
    return dest


def hf_record(source: Optional[str | Path]) -> dict:
    """``{"hf": ...}`` of `source`'s meta.json (what hf-to-megatron recorded), or ``{}``."""
    if source is None or read_tracker(source) is None:
        return {}
    hf = read_meta(source).get("hf")
    return {"hf": hf} if hf else {}


def checkpoint_chat_template(flag: Optional[str], meta: dict, source: str | Path = "the checkpoint") -> str:
    """--chat-template `flag`, else the template `meta` records (``chat_template``: written by the trainer and,
    when a project template renders the Hugging Face one, by hf-to-megatron), else ``qwen2``.

    A flag other than the recorded template wins, with a warning naming both. A checkpoint imported with a
    Hugging Face chat template no project template renders (``hf.chat_template`` only) has none to default
    to: UsageError asking for the flag.
    """
    recorded = meta.get("chat_template")
    if flag:
        if recorded and recorded != flag:
            logging.getLogger("sicog").warning(
                f"--chat-template {flag} differs from the chat template {source} records ({recorded!r}, meta.json "
                f"chat_template): the model was trained on {recorded} turns; using {flag} as asked")
        return flag
    if recorded:
        return recorded
    if (meta.get("hf") or {}).get("chat_template"):
        raise UsageError(f"{source}: its Hugging Face chat template (meta.json hf.chat_template) renders like "
                         "none of the project's templates: give --chat-template")
    return "qwen2"


def build_meta(args: ModelArgs, tp: int, pp: int, iteration: int, extra: Optional[dict] = None,
               transformer_impl: str = "local") -> dict[str, Any]:
    """`transformer_impl`: the implementation whose names the rank files hold ("local" or
    "transformer_engine"), as resolved; model_args keeps what was asked for ("auto" included)."""
    meta = {"model_args": model_args_to_dict(args), "tensor_model_parallel_size": tp,
            "pipeline_model_parallel_size": pp, "iteration": iteration, "format": "megatron-sicog/legacy-v1",
            "transformer_impl": transformer_impl}
    meta.update(extra or {})
    return meta


def load_vision_weights(model, load_dir: str | Path, iteration: Optional[int] = None) -> dict:
    """Load only the vision encoder's weights from a checkpoint of any TP/PP (LLaVA's separately pretrained
    vision tower); the rest of `model` keeps its weights. A pipeline stage without the encoder loads nothing."""
    meta = read_meta(load_dir, iteration)
    if getattr(model, "vision", None) is None:
        return meta
    theirs = model_args_from_dict(meta["model_args"]).vision
    ours = model.args.vision
    differ = [f"{f}: {getattr(theirs, f)!r} in the checkpoint, {getattr(ours, f)!r} here"
              for f in ours.__dataclass_fields__ if getattr(theirs, f) != getattr(ours, f)]
    if differ:
        raise ValueError(f"--pretrained-vision-checkpoint {load_dir}: its vision encoder has another shape ("
                         + "; ".join(differ) + ")")
    needed = {sharding.canonical_key(k) for k in model.state_dict() if k.startswith("vision.")}
    full, args, _ = load_canonical(load_dir, iteration, keys=needed)
    local = sharding.shard_full_state_dict(full, model, args.language.vocab_size, prefix="vision.")
    missing, unexpected = model.load_state_dict(local, strict=False)
    missing = [k for k in missing if k.startswith("vision.")]
    if missing or unexpected:
        raise KeyError(f"{load_dir}: vision weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return meta


def load_model_weights(model, load_dir: str | Path, iteration: Optional[int] = None) -> dict:
    """Load weights from a checkpoint of ANY TP/PP into this rank's model (resharding as needed)."""
    from megatron.core import parallel_state

    meta = read_meta(load_dir, iteration)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    if (meta["tensor_model_parallel_size"], meta["pipeline_model_parallel_size"]) == (tp, pp):
        state = load_rank_file(load_dir, parallel_state.get_tensor_model_parallel_rank(),
                               parallel_state.get_pipeline_model_parallel_rank(), iteration, mmap=True)
        model.load_state_dict(sharding.state_dict_for(model, state["model"]), strict=True)
    else:  # only this rank's tensors, memory-mapped
        offset = sharding.layer_offset(model)
        needed = {sharding.canonical_key(sharding.to_global_key(k, offset)) for k in model.state_dict()}
        full, args, _ = load_canonical(load_dir, iteration, keys=needed)
        sharding.load_full_state_dict(model, full, args.language.vocab_size)
    return meta
