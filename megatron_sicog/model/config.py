"""ModelArgs -> megatron-core TransformerConfig objects and layer specs.

Local (pure megatron-core) specs on CPU; Transformer Engine specs when TE is
importable on a GPU (``transformer_impl="auto"``). Choosing the implementation
is a different ``ModuleSpec``, never an ``if`` inside the model.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from megatron.core.activations import quick_gelu
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.models.vision.vit_layer_specs import (
    get_vit_layer_with_local_spec,
    get_vit_layer_with_transformer_engine_spec,
)
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_sicog import runtime
from megatron_sicog.model.presets import ModelArgs


def use_transformer_engine(m: ModelArgs) -> bool:
    if m.transformer_impl == "local":
        return False
    if m.transformer_impl == "transformer_engine":
        if not runtime.cuda_available():
            raise RuntimeError("--transformer-impl transformer_engine needs a GPU (CUDA is not usable here)")
        error = runtime.transformer_engine_import_error()
        if error is not None:
            raise RuntimeError(f"--transformer-impl transformer_engine: Transformer Engine cannot be imported ({error})")
        return True
    return runtime.transformer_engine_available()


def _common(tp: int, pp: int, params_dtype: torch.dtype) -> dict:
    return dict(
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        pipeline_dtype=params_dtype,
        params_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        # CPU init makes the full weights, then slices them per TP rank: the same
        # seed gives the same model at every TP size (and runs on any machine).
        use_cpu_initialization=True,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        sequence_parallel=False,
    )


def language_config(m: ModelArgs, tp: int = 1, pp: int = 1,
                    params_dtype: torch.dtype = torch.float32) -> TransformerConfig:
    lm = m.language
    return TransformerConfig(
        num_layers=lm.num_layers,
        hidden_size=lm.hidden_size,
        num_attention_heads=lm.num_attention_heads,
        num_query_groups=lm.num_query_groups,
        ffn_hidden_size=lm.ffn_hidden_size,
        kv_channels=lm.hidden_size // lm.num_attention_heads,
        normalization="RMSNorm",
        layernorm_epsilon=lm.norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=lm.add_qkv_bias,
        init_method_std=m.init_method_std,
        **_common(tp, pp, params_dtype),
    )


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation: transformers' ``gelu_pytorch_tanh`` (SigLIP)."""
    return F.gelu(x, approximate="tanh")


VISION_ACTIVATION_FUNCS = {"quick_gelu": quick_gelu, "gelu": F.gelu, "gelu_pytorch_tanh": gelu_tanh}


def vision_config(m: ModelArgs, tp: int = 1, params_dtype: torch.dtype = torch.float32) -> TransformerConfig:
    v = m.vision
    return TransformerConfig(
        num_layers=v.num_layers,
        hidden_size=v.hidden_size,
        num_attention_heads=v.num_attention_heads,
        ffn_hidden_size=v.ffn_hidden_size,
        kv_channels=v.hidden_size // v.num_attention_heads,
        normalization="LayerNorm",
        layernorm_epsilon=v.layernorm_epsilon,
        gated_linear_unit=False,
        activation_func=VISION_ACTIVATION_FUNCS[v.activation],
        add_bias_linear=True,
        add_qkv_bias=True,
        init_method_std=m.init_method_std,
        **dict(_common(tp, 1, params_dtype), pipeline_model_parallel_size=1),
    )


def projector_config(m: ModelArgs, tp: int = 1, params_dtype: torch.dtype = torch.float32) -> TransformerConfig:
    """2-layer MLP vision_hidden -> lm_hidden -> lm_hidden with GELU (LLaVA-1.5)."""
    lm = m.language
    return TransformerConfig(
        num_layers=1,
        hidden_size=lm.hidden_size,
        ffn_hidden_size=lm.hidden_size,
        num_attention_heads=tp,  # unused by an MLP; must divide by TP for the config check
        gated_linear_unit=False,
        activation_func=F.gelu,
        add_bias_linear=True,
        init_method_std=m.init_method_std,
        **dict(_common(tp, 1, params_dtype), pipeline_model_parallel_size=1),
    )


def _with_sdpa_core_attention(spec: ModuleSpec) -> ModuleSpec:
    """Local spec with torch SDPA as the attention core (see model/attention.py)."""
    from megatron_sicog.model.attention import SDPADotProductAttention

    spec = copy.deepcopy(spec)
    spec.submodules.self_attention.submodules.core_attention = SDPADotProductAttention
    return spec


def language_layer_spec(m: ModelArgs) -> ModuleSpec:
    if use_transformer_engine(m):
        return get_gpt_layer_with_transformer_engine_spec()
    return _with_sdpa_core_attention(get_gpt_layer_local_spec(normalization="RMSNorm"))


def vision_layer_spec(m: ModelArgs) -> ModuleSpec:
    """ViT layer: megatron's spec with *bidirectional* attention.

    megatron-core 0.16's ViT specs declare ``AttnMaskType.causal``; a CLIP
    encoder attends over all patches, so we swap in ``no_mask`` here.
    """
    spec = get_vit_layer_with_transformer_engine_spec() if use_transformer_engine(m) \
        else _with_sdpa_core_attention(get_vit_layer_with_local_spec())
    spec = copy.deepcopy(spec)
    spec.submodules.self_attention.params = dict(spec.submodules.self_attention.params,
                                                 attn_mask_type=AttnMaskType.no_mask)
    return spec


def projector_spec(m: ModelArgs) -> ModuleSpec:
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.mlp import MLPSubmodules

    if use_transformer_engine(m):
        from megatron.core.extensions.transformer_engine import TEColumnParallelLinear, TERowParallelLinear

        return MLPSubmodules(linear_fc1=TEColumnParallelLinear, linear_fc2=TERowParallelLinear)
    return MLPSubmodules(linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear)
