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

`load_canonical` merges any TP/PP checkpoint into the canonical TP1/PP1 state
dict without torch.distributed; `write_from_canonical` writes any TP/PP layout
from one (the Hugging Face importer uses it).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from megatron_sicog.io import atomic_write_json, atomic_write_text
from megatron_sicog.model import sharding
from megatron_sicog.model.presets import LanguageArgs, ModelArgs, VisionArgs, padded_vocab_size

TRACKER = "latest_checkpointed_iteration.txt"
RANK_FILE = "model_optim_rng.pt"


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
    os.replace(tmp, d / RANK_FILE)


def finalize_iteration(save_dir: str | Path, iteration: int, meta: dict, keep_last: Optional[int] = None) -> Path:
    """After every rank saved: rename the temp dir into place, then update the tracker."""
    save_dir = Path(save_dir)
    tmp = _tmp_iter_dir(save_dir, iteration)
    atomic_write_json(tmp / "meta.json", meta)
    final = save_dir / iter_dir_name(iteration)
    if final.exists():  # re-saving the same iteration (e.g. resumed and stopped at once)
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(save_dir / TRACKER, f"{iteration}\n")
    if keep_last:
        iters = sorted(int(m.group(1)) for p in save_dir.iterdir()
                       if (m := re.fullmatch(r"iter_(\d{7})", p.name)))
        for it in iters[:-keep_last]:
            shutil.rmtree(save_dir / iter_dir_name(it), ignore_errors=True)
    return final


def iteration_dir(load_dir: str | Path, iteration: Optional[int] = None) -> Path:
    load_dir = Path(load_dir)
    if iteration is None:
        iteration = read_tracker(load_dir)
        if iteration is None:
            raise FileNotFoundError(f"{load_dir}: no {TRACKER}; not a checkpoint directory")
    d = load_dir / iter_dir_name(iteration)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: checkpoint iteration directory missing")
    return d


def read_meta(load_dir: str | Path, iteration: Optional[int] = None) -> dict:
    return json.loads((iteration_dir(load_dir, iteration) / "meta.json").read_text())


def load_rank_file(load_dir: str | Path, tp_rank: int, pp_rank: int, iteration: Optional[int] = None) -> dict:
    d = iteration_dir(load_dir, iteration)
    meta = json.loads((d / "meta.json").read_text())
    path = d / rank_dir_name(tp_rank, pp_rank, meta["pipeline_model_parallel_size"]) / RANK_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (checkpoint was saved with TP={meta['tensor_model_parallel_size']}"
                                f", PP={meta['pipeline_model_parallel_size']})")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_canonical(load_dir: str | Path, iteration: Optional[int] = None) -> tuple[dict, ModelArgs, dict]:
    """Merge every rank file of a checkpoint into the canonical TP1/PP1 state dict (no distributed)."""
    meta = read_meta(load_dir, iteration)
    tp, pp = meta["tensor_model_parallel_size"], meta["pipeline_model_parallel_size"]
    args = model_args_from_dict(meta["model_args"])
    vocab = args.language.vocab_size
    full: dict[str, torch.Tensor] = {}
    for pp_rank in range(pp):
        shards = [load_rank_file(load_dir, r, pp_rank, iteration) for r in range(tp)]
        first = shards[0]
        for key, t in first["model"].items():
            if not isinstance(t, torch.Tensor) or key.endswith("_extra_state"):
                continue
            part = first["partition"].get(key)
            if part is not None:
                t = sharding.merge_tensors([s["model"][key] for s in shards], part[0], part[1])
            gkey = sharding.to_global_key(key, first["layer_offset"])
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
            elif gkey.startswith(("vision.", "projector.", "language_model.embedding.")):
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


def build_meta(args: ModelArgs, tp: int, pp: int, iteration: int, extra: Optional[dict] = None) -> dict[str, Any]:
    meta = {"model_args": model_args_to_dict(args), "tensor_model_parallel_size": tp,
            "pipeline_model_parallel_size": pp, "iteration": iteration, "format": "megatron-sicog/legacy-v1"}
    meta.update(extra or {})
    return meta


def load_model_weights(model, load_dir: str | Path, iteration: Optional[int] = None) -> dict:
    """Load weights from a checkpoint of ANY TP/PP into this rank's model (resharding as needed)."""
    from megatron.core import parallel_state

    meta = read_meta(load_dir, iteration)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    if (meta["tensor_model_parallel_size"], meta["pipeline_model_parallel_size"]) == (tp, pp):
        state = load_rank_file(load_dir, parallel_state.get_tensor_model_parallel_rank(),
                               parallel_state.get_pipeline_model_parallel_rank(), iteration)
        model.load_state_dict(state["model"], strict=True)
    else:
        full, args, _ = load_canonical(load_dir, iteration)
        sharding.load_full_state_dict(model, full, args.language.vocab_size)
    return meta
