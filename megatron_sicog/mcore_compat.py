"""Every megatron-core internal this project touches, in one place.

Checked against megatron-core 0.16.1 (the 0.16.x line; `CHECKED_VERSION`).
Public API (models, layer specs, schedules, DDP, optimizer, datasets,
``parallel_state``) is imported where it is used; what is here is private
(underscore names, module globals, undocumented fields) and may move in
another release. ``tests/test_mcore_compat.py`` fails when one of them
disappears, so an upgrade shows at once what to revisit.

* `rotate_half` — ``models.common.embeddings.rope_utils._rotate_half``
  (generation engine's RoPE at per-row positions).
* `attention_geometry` — ``SelfAttention.num_query_groups_per_partition``,
  ``.hidden_size_per_attention_head``, ``DotProductAttention.softmax_scale``
  (generation engine). ``model/attention.py``'s SDPA core subclasses
  ``DotProductAttention`` and reads ``self.softmax_scale``,
  ``self.attn_mask_type`` and ``self.config.softmax_type``, keeping the
  ``forward(query, key, value, attention_mask, attn_mask_type,
  attention_bias, packed_seq_params)`` signature of 0.16.
* `install_rng_tracker` — ``tensor_parallel.random._CUDA_RNG_STATE_TRACKER``
  and ``_CUDA_RNG_STATE_TRACKER_INITIALIZED`` (CPU RNG tracker, `runtime`).
* `replace_grad_clipping` — ``optimizer.clip_grads.clip_grad_by_total_norm_fp32``
  and the name ``optimizer.optimizer`` imported from it (CPU clipping, `runtime`).
* `llama3_inv_freq` — ``RotaryEmbedding._apply_scaling`` (the llama3 frequency
  formula, called with all four of a checkpoint's numbers, `model.llava.set_llama3_rope`).
* `layer_norm_keys_map` — the local GPT layer spec's
  ``submodules.sharded_state_dict_keys_map`` (local <-> Transformer Engine
  layer-norm names, `model.sharding`).
* `index_file_dtype` — ``indexed_dataset._INDEX_HEADER`` and the header layout
  (header, version <Q, dtype code <B) that ``_IndexReader`` reads, with
  ``DType.dtype_from_code`` (`data.indexed.open_dtype`).
* `builder_append_documents` / `builder_abort` — ``IndexedDatasetBuilder``'s
  ``data_file``, ``sequence_lengths``, ``sequence_modes``, ``document_indices``
  (one write per chunk of documents, `data.indexed.SampleWriter`).
* ``megatron.core.jit.jit_fuser`` (= ``torch.compile`` at import) is made lazy by
  `megatron_sicog.mcore_import`, which must run before megatron is imported and so
  lives outside this module (``tests/test_mcore_import.py``).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import numpy as np
import torch

CHECKED_VERSION = "0.16.1"


def rotate_half(x: torch.Tensor, interleaved: bool) -> torch.Tensor:
    from megatron.core.models.common.embeddings.rope_utils import _rotate_half

    return _rotate_half(x, interleaved)


def attention_geometry(self_attention) -> tuple[int, int, float | None]:
    """(query groups on this TP rank, head dim, core attention's softmax scale or None)."""
    core = self_attention.core_attention
    return (self_attention.num_query_groups_per_partition, self_attention.hidden_size_per_attention_head,
            getattr(core, "softmax_scale", None))


def install_rng_tracker(tracker) -> None:
    """Make `tracker` megatron's model-parallel RNG tracker (what ``get_cuda_rng_tracker`` returns)."""
    from megatron.core.tensor_parallel import random as mcore_random

    mcore_random._CUDA_RNG_STATE_TRACKER = tracker
    mcore_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True


def replace_grad_clipping(fn: Callable) -> None:
    """Replace ``clip_grad_by_total_norm_fp32(parameters, max_norm, total_norm, use_decoupled_grad)``."""
    from megatron.core.optimizer import clip_grads, optimizer

    clip_grads.clip_grad_by_total_norm_fp32 = fn
    optimizer.clip_grad_by_total_norm_fp32 = fn


def llama3_inv_freq(rotary_pos_emb, plain: torch.Tensor, factor: float, low_freq_factor: float,
                    high_freq_factor: float, original_max_position_embeddings: int) -> torch.Tensor:
    """megatron-core's llama3 scaling of inverse frequencies (``RotaryEmbedding._apply_scaling``, 0.16.1)."""
    return rotary_pos_emb._apply_scaling(
        plain, factor=factor, low_freq_factor=low_freq_factor, high_freq_factor=high_freq_factor,
        original_max_position_embeddings=original_max_position_embeddings)


def builder_append_documents(builder, flat: np.ndarray, item_lengths: Sequence[int], item_modes: Sequence[int],
                             items_per_doc: Sequence[int]) -> None:
    """Append whole documents to an ``IndexedDatasetBuilder`` with one write.

    The index is the same as ``add_item`` per item and ``end_document`` per
    document (``tests/test_preprocess.py`` compares them).
    """
    builder.data_file.write(memoryview(flat).cast("B"))
    start = len(builder.sequence_lengths)
    builder.sequence_lengths.extend(int(n) for n in item_lengths)
    builder.sequence_modes.extend(int(m) for m in item_modes)
    ends = start + np.cumsum(items_per_doc, dtype=np.int64)
    builder.document_indices.extend(int(e) for e in ends)


def builder_abort(builder) -> None:
    """Close a builder's open ``.bin`` without writing an index."""
    with contextlib.suppress(Exception):
        builder.data_file.close()


def layer_norm_keys_map() -> dict[str, str]:
    """local name fragment -> TE name fragment, from megatron-core's local GPT layer spec (0.16.1)."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    keys_map = getattr(get_gpt_layer_local_spec().submodules, "sharded_state_dict_keys_map", None)
    return dict(keys_map or {"input_layernorm.": "self_attention.linear_qkv.layer_norm_",
                             "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_"})


def index_file_dtype(idx_path: str):
    """The numpy dtype recorded in a megatron ``.idx`` header (reads 18 bytes; layout of 0.16.1's ``_IndexReader``)."""
    import struct

    from megatron.core.datasets.indexed_dataset import _INDEX_HEADER, DType

    with open(idx_path, "rb") as f:
        header = f.read(len(_INDEX_HEADER) + 8 + 1)
    if len(header) < len(_INDEX_HEADER) + 9 or header[:len(_INDEX_HEADER)] != _INDEX_HEADER:
        raise ValueError(f"{idx_path}: not a megatron index file")
    code = struct.unpack("<B", header[-1:])[0]
    try:
        return DType.dtype_from_code(code)
    except (ValueError, KeyError):
        return None
