"""Full (TP=1, PP=1) state dicts <-> this rank's tensor/pipeline shards.

The *canonical* form of a model is the state dict a TP=1, PP=1 model would
have, with global layer numbers and the vocabulary trimmed to the tokenizer's
size. Checkpoint resharding, the Hugging Face converter and the TP/PP
equivalence tests all go through it.

How a tensor is split is read off megatron-core's own parameter attributes
(``tensor_model_parallel``, ``partition_dim``, ``partition_stride``), so this
module knows no layer names except the ones that carry the vocabulary.
``partition_stride`` > 1 (megatron's SwiGLU fc1, stored per rank as
``[gate_r; up_r]``) splits each of the `stride` blocks separately.

Canonical names are the *local* spec's. Transformer Engine fuses each layer
norm into the linear after it (``input_layernorm.weight`` is
``self_attention.linear_qkv.layer_norm_weight`` there) and adds
``_extra_state`` entries; the map between the two is the one megatron-core's
local layer spec declares (``sharded_state_dict_keys_map``), so a checkpoint of
either implementation loads into a model of either.
"""
from __future__ import annotations

import re
from typing import Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_sicog import mcore_compat

_LAYER_RE = re.compile(r"^(language_model\.decoder\.layers\.)(\d+)(\..*)$")
VOCAB_KEYS = ("language_model.embedding.word_embeddings.weight", "language_model.output_layer.weight")



LOCAL_TO_TE = mcore_compat.layer_norm_keys_map()  # {"input_layernorm.": "self_attention.linear_qkv.layer_norm_", ...}


def canonical_key(key: str) -> str:
    """A key of either implementation, in the local spec's names."""
    for local, te in LOCAL_TO_TE.items():
        if f".{te}" in key:
            return key.replace(f".{te}", f".{local}")
    return key


def te_key(key: str) -> str:
    """A local-spec key in Transformer Engine's names."""
    for local, te in LOCAL_TO_TE.items():
        if f".{local}" in key:
            return key.replace(f".{local}", f".{te}")
    return key


def implementation_of(state_dict_keys) -> str:
    """'transformer_engine' when the keys carry TE's fused layer-norm names, else 'local'."""
    te_parts = tuple(LOCAL_TO_TE.values())
    return "transformer_engine" if any(p in k for k in state_dict_keys for p in te_parts) else "local"


def canonical_names(state: dict) -> dict:
    """A state dict of either implementation in local names, without TE's ``_extra_state``."""
    return {canonical_key(k): v for k, v in state.items() if not k.endswith("_extra_state")}


def state_dict_for(model, state: dict) -> dict:
    """`state` (a local state dict of either implementation, same sharding) in `model`'s own names.

    TE's ``_extra_state`` (FP8 scaling metadata) is kept when both sides are TE,
    else the model's own is used.
    """
    state = {canonical_key(k): v for k, v in state.items()}
    out, missing = {}, []
    for key, ref in model.state_dict().items():
        ckey = canonical_key(key)
        if ckey in state:
            out[key] = state[ckey]
        elif key.endswith("_extra_state"):
            out[key] = ref
        else:
            missing.append(key)
    if missing:
        raise KeyError(f"{len(missing)} tensors of the model are missing from the checkpoint: {missing[:10]}")
    return out


# (partition_dim, stride) or None for replicated tensors
PartitionInfo = dict[str, Optional[tuple[int, int]]]


def split_tensor(t: torch.Tensor, dim: int, stride: int, tp: int, rank: int) -> torch.Tensor:
    blocks = t.chunk(stride, dim=dim)
    return torch.cat([b.chunk(tp, dim=dim)[rank] for b in blocks], dim=dim).contiguous()


def merge_tensors(parts: list[torch.Tensor], dim: int, stride: int) -> torch.Tensor:
    if len(parts) == 1:
        return parts[0]
    per_rank = [p.chunk(stride, dim=dim) for p in parts]
    return torch.cat([torch.cat([pr[s] for pr in per_rank], dim=dim) for s in range(stride)], dim=dim)


def layer_offset(model) -> int:
    """Global index of this stage's first LM layer."""
    layers = model.language_model.decoder.layers
    return (layers[0].layer_number - 1) if len(layers) else 0


def to_global_key(key: str, offset: int) -> str:
    m = _LAYER_RE.match(key)
    return f"{m.group(1)}{int(m.group(2)) + offset}{m.group(3)}" if m else key


def to_local_key(key: str, offset: int) -> str:
    m = _LAYER_RE.match(key)
    return f"{m.group(1)}{int(m.group(2)) - offset}{m.group(3)}" if m else key


def partition_info(model) -> PartitionInfo:
    """Local key -> (partition_dim, stride) for TP-split tensors, None when replicated."""
    info: PartitionInfo = {}
    params = dict(model.named_parameters())
    for key in model.state_dict():
        p = params.get(key)
        if p is not None and getattr(p, "tensor_model_parallel", False):
            info[key] = (int(p.partition_dim), int(getattr(p, "partition_stride", 1)))
        else:
            info[key] = None
    return info


def _is_state(key: str, value) -> bool:
    return isinstance(value, torch.Tensor) and not key.endswith("_extra_state")


def shard_full_state_dict(full: dict, model, vocab_size: int,
                          tp: Optional[int] = None, tp_rank: Optional[int] = None, prefix: str = "") -> dict:
    """The local state dict of `model` (this rank) cut from a canonical full state dict; with `prefix`,
    only the tensors whose local key starts with it (e.g. "vision." for the vision encoder)."""
    tp = parallel_state.get_tensor_model_parallel_world_size() if tp is None else tp
    tp_rank = parallel_state.get_tensor_model_parallel_rank() if tp_rank is None else tp_rank
    offset = layer_offset(model)
    info = partition_info(model)
    local_ref = model.state_dict()
    full = {canonical_key(k): v for k, v in full.items()}
    out, missing = {}, []
    for key, ref in local_ref.items():
        if not key.startswith(prefix):
            continue
        if not _is_state(key, ref):
            out[key] = ref
            continue
        gkey = canonical_key(to_global_key(key, offset))
        if gkey not in full:
            missing.append(gkey)
            continue
        t = full[gkey]
        if gkey in VOCAB_KEYS:  # pad the vocabulary rows to this model's padded size
            padded = ref.shape[0] * tp
            if t.shape[0] != padded:
                t = torch.cat([t[:vocab_size], t.new_zeros(padded - vocab_size, *t.shape[1:])])
        part = info.get(key)
        if part is not None:
            t = split_tensor(t, part[0], part[1], tp, tp_rank)
        if t.shape != ref.shape:
            raise ValueError(f"{gkey}: full tensor gives local shape {tuple(t.shape)}, "
                             f"model expects {tuple(ref.shape)}")
        out[key] = t.to(ref.dtype)
    if missing:
        raise KeyError(f"{len(missing)} tensors missing from the full state dict: {missing[:10]}"
                       + (" ..." if len(missing) > 10 else ""))
    return out


def load_full_state_dict(model, full: dict, vocab_size: int) -> None:
    """Load a canonical state dict into this rank's shard (strict)."""
    model.load_state_dict(shard_full_state_dict(full, model, vocab_size), strict=True)


def _gather(model, vocab_size: int, tensors) -> dict:
    """TP all-gather + merge each (local key, tensor), then union over PP stages."""
    tp = parallel_state.get_tensor_model_parallel_world_size()
    tp_group = parallel_state.get_tensor_model_parallel_group()
    info = partition_info(model)
    offset = layer_offset(model)
    local = {}
    for key, t in tensors:
        t = t.detach()
        part = info.get(key)
        if part is not None and tp > 1:
            parts = [torch.empty_like(t) for _ in range(tp)]
            dist.all_gather(parts, t.contiguous(), group=tp_group)
            t = merge_tensors(parts, part[0], part[1])
        gkey = canonical_key(to_global_key(key, offset))
        if gkey in VOCAB_KEYS:
            t = t[:vocab_size]
        local[gkey] = t.cpu().clone()
    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return local
    gathered = [None] * parallel_state.get_pipeline_model_parallel_world_size()
    dist.all_gather_object(gathered, local, group=parallel_state.get_pipeline_model_parallel_group())
    full = {}
    for part in gathered:
        full.update(part)
    return full


def gather_full_state_dict(model, vocab_size: int) -> dict:
    """The canonical full state dict assembled from every TP and PP rank (on every rank)."""
    return _gather(model, vocab_size, ((k, t) for k, t in model.state_dict().items() if _is_state(k, t)))


def gather_full_grads(model, vocab_size: int) -> dict:
    """Full gradients (``main_grad`` under megatron DDP, else ``.grad``), canonical keys."""
    def grads():
        for key, p in model.named_parameters():
            g = getattr(p, "main_grad", None)
            g = p.grad if g is None else g
            if g is not None:
                yield key, g
    return _gather(model, vocab_size, grads())
