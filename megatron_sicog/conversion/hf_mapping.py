"""Canonical (TP1/PP1) tensors <-> Hugging Face LLaVA tensors, and configs both ways.

Hugging Face names are written in the layout ``save_pretrained`` of
``LlavaForConditionalGeneration`` produces in transformers 5.x::

    vision_tower.{embeddings,pre_layrnorm,encoder.layers.N,post_layernorm}.*   (CLIP)
    multi_modal_projector.linear_{1,2}.*
    language_model.model.{embed_tokens,layers.N,norm}.*                       (Llama / Qwen2)
    language_model.lm_head.weight                                             (untied only)

Readers (`safetensors_io.HFSource`) translate other layouts into this one.

Every canonical tensor is made by one `Rule` from one or more HF tensors:

* ``copy``: same tensor.
* ``qkv``: megatron's fused ``linear_qkv`` is grouped by query group
  ``[g0: q heads of g0, k, v | g1: ...]``; HF keeps ``q_proj``, ``k_proj``,
  ``v_proj`` apart (grouped-query attention: fewer k/v heads).
* ``gate_up``: megatron's SwiGLU ``linear_fc1`` is ``[gate; up]``.

SigLIP towers (``siglip_vision_model``) have the same layer names as CLIP,
a patch-embedding bias, no class embedding and no ``pre_layrnorm``.

LLaVA-NeXT (``llava_next``, any-resolution tiling): the same tensors plus the learned
``image_newline`` [hidden] (canonical ``image_newline``); ``image_grid_pinpoints`` becomes
``VisionArgs.image_grid_pinpoints`` and comes back in the exported ``LlavaNextConfig``.

Tied embeddings: the canonical form has no ``output_layer`` and HF has no
``lm_head`` on disk. The towers' ``post_layernorm`` (and SigLIP's pooling
``head``) are not used by LLaVA, which reads ``hidden_states[k]`` before the
post-LayerNorm, and have no megatron counterpart: these `hf_only_shapes`
tensors are kept beside the checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from megatron_sicog.model.presets import LanguageArgs, ModelArgs, VisionArgs

HF_EXTRA = "hf_extra.safetensors"  # SAVE/HF_EXTRA: the HF tensors of `hf_only_shapes` an imported checkpoint keeps

V, P, LM = "vision_tower.", "multi_modal_projector.", "language_model.model."
HEAD = "language_model.lm_head.weight"
NEWLINE = "image_newline"
ARCHITECTURES = {"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration"}
# HF tensors with no megatron counterpart (unused by LLaVA): see hf_only_shapes
POST_LN = (V + "post_layernorm.weight", V + "post_layernorm.bias")
SIGLIP_HEAD = V + "head."

TEXT_FAMILIES = {"llama": "llama", "qwen2": "qwen2"}  # HF text model_type -> LanguageArgs.family
VISION_TYPES = {"clip_vision_model": "clip", "clip": "clip", "siglip_vision_model": "siglip", "siglip": "siglip"}
VISION_ACTS = {"clip": ("quick_gelu", "gelu"), "siglip": ("gelu_pytorch_tanh", "gelu")}


class ConversionError(ValueError):
    """A checkpoint or config that cannot be converted; the message says what and why."""


@dataclass(frozen=True)
class Rule:
    canonical: str
    hf: tuple[str, ...]
    kind: str = "copy"  # copy | qkv | gate_up
    heads: int = 0
    groups: int = 0


def qkv_to_megatron(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, groups: int) -> torch.Tensor:
    """q [heads*d, ...], k/v [groups*d, ...] -> megatron grouped [groups*(heads/groups+2)*d, ...]."""
    rest = q.shape[1:]
    q = q.reshape(groups, -1, *rest)
    k = k.reshape(groups, -1, *rest)
    v = v.reshape(groups, -1, *rest)
    if q.shape[1] != k.shape[1] * (heads // groups):
        raise ConversionError(f"q rows per group {q.shape[1]} != k rows per group {k.shape[1]} x "
                              f"heads/groups {heads // groups}")
    return torch.cat([q, k, v], dim=1).reshape(-1, *rest)


def qkv_from_megatron(t: torch.Tensor, heads: int, groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rest = t.shape[1:]
    per_group = heads // groups + 2
    d = t.shape[0] // (groups * per_group)
    g = t.reshape(groups, per_group * d, *rest)
    q, k, v = g.split([(per_group - 2) * d, d, d], dim=1)
    return (q.reshape(-1, *rest).contiguous(), k.reshape(-1, *rest).contiguous(),
            v.reshape(-1, *rest).contiguous())


def to_canonical(rule: Rule, tensors: list[torch.Tensor]) -> torch.Tensor:
    if rule.kind == "copy":
        return tensors[0]
    if rule.kind == "qkv":
        return qkv_to_megatron(*tensors, rule.heads, rule.groups)
    if rule.kind == "gate_up":
        return torch.cat(tensors, dim=0)
    raise AssertionError(rule.kind)


def to_hf(rule: Rule, t: torch.Tensor) -> list[torch.Tensor]:
    if rule.kind == "copy":
        return [t]
    if rule.kind == "qkv":
        return list(qkv_from_megatron(t, rule.heads, rule.groups))
    if rule.kind == "gate_up":
        return [c.contiguous() for c in t.chunk(2, dim=0)]
    raise AssertionError(rule.kind)


def rules(args: ModelArgs) -> list[Rule]:
    """Every canonical tensor of `args`' model, in HF file order (vision, projector, LM)."""
    lm, vis = args.language, args.vision
    if vis.class_token != (vis.family == "clip"):
        raise ConversionError(f"vision family {vis.family!r} with class_token={vis.class_token}: Hugging Face CLIP "
                              "towers have a class token, SigLIP towers none")
    out = [Rule("vision.class_token", (V + "embeddings.class_embedding",))] if vis.class_token else []
    out.append(Rule("vision.patch_embed.weight", (V + "embeddings.patch_embedding.weight",)))
    if vis.patch_bias:
        out.append(Rule("vision.patch_embed.bias", (V + "embeddings.patch_embedding.bias",)))
    out.append(Rule("vision.position_embeddings.weight", (V + "embeddings.position_embedding.weight",)))
    if vis.pre_layernorm:
        out += [Rule("vision.pre_layernorm.weight", (V + "pre_layrnorm.weight",)),
                Rule("vision.pre_layernorm.bias", (V + "pre_layrnorm.bias",))]
    for i in range(vis.num_layers):
        m, h = f"vision.decoder.layers.{i}.", f"{V}encoder.layers.{i}."
        for s in ("weight", "bias"):
            out += [
                Rule(m + f"input_layernorm.{s}", (h + f"layer_norm1.{s}",)),
                Rule(m + f"self_attention.linear_qkv.{s}",
                     tuple(h + f"self_attn.{x}_proj.{s}" for x in "qkv"), "qkv",
                     vis.num_attention_heads, vis.num_attention_heads),
                Rule(m + f"self_attention.linear_proj.{s}", (h + f"self_attn.out_proj.{s}",)),
                Rule(m + f"pre_mlp_layernorm.{s}", (h + f"layer_norm2.{s}",)),
                Rule(m + f"mlp.linear_fc1.{s}", (h + f"mlp.fc1.{s}",)),
                Rule(m + f"mlp.linear_fc2.{s}", (h + f"mlp.fc2.{s}",)),
            ]
    for i, n in ((1, "linear_fc1"), (2, "linear_fc2")):
        for s in ("weight", "bias"):
            out.append(Rule(f"projector.encoder.{n}.{s}", (f"{P}linear_{i}.{s}",)))
    if vis.image_grid_pinpoints:
        out.append(Rule("image_newline", (NEWLINE,)))
    out.append(Rule("language_model.embedding.word_embeddings.weight", (LM + "embed_tokens.weight",)))
    for i in range(lm.num_layers):
        m, h = f"language_model.decoder.layers.{i}.", f"{LM}layers.{i}."
        out += [
            Rule(m + "input_layernorm.weight", (h + "input_layernorm.weight",)),
            Rule(m + "self_attention.linear_qkv.weight", tuple(h + f"self_attn.{x}_proj.weight" for x in "qkv"),
                 "qkv", lm.num_attention_heads, lm.num_query_groups),
        ]
        if lm.add_qkv_bias:
            out.append(Rule(m + "self_attention.linear_qkv.bias",
                            tuple(h + f"self_attn.{x}_proj.bias" for x in "qkv"),
                            "qkv", lm.num_attention_heads, lm.num_query_groups))
        out += [
            Rule(m + "self_attention.linear_proj.weight", (h + "self_attn.o_proj.weight",)),
            Rule(m + "pre_mlp_layernorm.weight", (h + "post_attention_layernorm.weight",)),
            Rule(m + "mlp.linear_fc1.weight", (h + "mlp.gate_proj.weight", h + "mlp.up_proj.weight"), "gate_up"),
            Rule(m + "mlp.linear_fc2.weight", (h + "mlp.down_proj.weight",)),
        ]
    out.append(Rule("language_model.decoder.final_layernorm.weight", (LM + "norm.weight",)))
    if lm.untie_embeddings_and_output_weights:
        out.append(Rule("language_model.output_layer.weight", (HEAD,)))
    return out


def hf_only_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """HF tensors LLaVA never reads, with their shapes: the tower's ``post_layernorm`` and, for SigLIP with
    ``vision_use_head``, its attention-pooling ``head`` (optional: present or absent as a whole)."""
    h, f = args.vision.hidden_size, args.vision.ffn_hidden_size
    out = {POST_LN[0]: (h,), POST_LN[1]: (h,)}
    if args.vision.family == "siglip":
        hd = SIGLIP_HEAD
        out.update({hd + "probe": (1, 1, h), hd + "attention.in_proj_weight": (3 * h, h),
                    hd + "attention.in_proj_bias": (3 * h,), hd + "attention.out_proj.weight": (h, h),
                    hd + "attention.out_proj.bias": (h,), hd + "layernorm.weight": (h,), hd + "layernorm.bias": (h,),
                    hd + "mlp.fc1.weight": (f, h), hd + "mlp.fc1.bias": (f,), hd + "mlp.fc2.weight": (h, f),
                    hd + "mlp.fc2.bias": (h,)})
    return out


def default_hf_only(args: ModelArgs, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """What a fresh tower has for the post-LayerNorm LLaVA never reads (ones, zeros); no SigLIP head."""
    h = args.vision.hidden_size
    return {POST_LN[0]: torch.ones(h, dtype=dtype), POST_LN[1]: torch.zeros(h, dtype=dtype)}


# -- configs -----------------------------------------------------------------

def _get(cfg, name, default=None):
    return cfg.get(name, default) if isinstance(cfg, dict) else getattr(cfg, name, default)


_LLAMA3_FIELDS = {"factor": "rope_scaling_factor", "low_freq_factor": "rope_low_freq_factor",
                  "high_freq_factor": "rope_high_freq_factor",
                  "original_max_position_embeddings": "rope_original_max_position_embeddings"}


def _rope(text_cfg) -> dict:
    """LanguageArgs RoPE fields of an HF text config (``rope_parameters`` of transformers 5, or the older
    ``rope_theta`` + ``rope_scaling``); any rope type but default / llama3 is refused, naming field and value."""
    params = dict(_get(text_cfg, "rope_parameters") or {})
    scaling = dict(_get(text_cfg, "rope_scaling") or {})
    where = "rope_parameters" if params.get("rope_type") or params.get("type") else "rope_scaling"
    merged = {**scaling, **params}
    kind = merged.get("rope_type") or merged.get("type") or "default"
    if kind not in ("default", "llama3"):
        raise ConversionError(f"{where}.rope_type {kind!r} is not supported: the megatron model has rope types "
                              "'default' and 'llama3' (Llama-3.x)")
    theta = merged.get("rope_theta", _get(text_cfg, "rope_theta"))
    if theta is None:
        raise ConversionError("text config has no rope_theta (neither rope_parameters.rope_theta nor rope_theta)")
    out = {"rotary_base": float(theta), "rope_type": kind}
    if float(theta) != int(float(theta)):
        raise ConversionError(f"rope_theta {theta!r} is not a whole number (megatron-core's RotaryEmbedding "
                              "takes an integer base)")
    if merged.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConversionError(f"{where}.partial_rotary_factor {merged['partial_rotary_factor']!r} "
                              "(only 1.0: RoPE on the whole head)")
    if kind == "llama3":
        missing = [k for k in _LLAMA3_FIELDS if merged.get(k) is None]
        if missing:
            raise ConversionError(f"{where} of rope_type 'llama3' lacks {', '.join(missing)}")
        out.update({ours: type(getattr(LanguageArgs, ours))(merged[k]) for k, ours in _LLAMA3_FIELDS.items()})
    return out


def rope_parameters(lm: LanguageArgs) -> dict:
    """The transformers 5 ``rope_parameters`` of `lm` (the inverse of `_rope`)."""
    out = {"rope_type": lm.rope_type, "rope_theta": float(lm.rotary_base)}
    if lm.rope_type == "llama3":
        out.update({k: getattr(lm, ours) for k, ours in _LLAMA3_FIELDS.items()})
    return out


def _qwen2_window_problems(text_cfg) -> list[str]:
    """Sliding-window attention (Qwen2 ``use_sliding_window`` below ``max_window_layers``, or transformers 5
    ``layer_types``) has no megatron equivalent here: every layer attends to the whole causal context.
    Qwen2.5 configs carry ``sliding_window``/``max_window_layers`` with ``use_sliding_window: false``, which
    transformers ignores too, so they convert."""
    out = []
    n = _get(text_cfg, "num_hidden_layers")
    if _get(text_cfg, "use_sliding_window"):
        mwl = _get(text_cfg, "max_window_layers")
        if mwl is None or n is None or mwl < n:
            out.append(f"use_sliding_window={_get(text_cfg, 'use_sliding_window')!r} with max_window_layers={mwl!r} "
                       f"and sliding_window={_get(text_cfg, 'sliding_window')!r} (num_hidden_layers {n}): "
                       "sliding-window attention is not supported, only full attention in every layer")
    types = _get(text_cfg, "layer_types")
    if types:
        bad = [i for i, t in enumerate(types) if t != "full_attention"]
        if bad and not out:
            out.append(f"layer_types[{bad[0]}]={types[bad[0]]!r} ({len(bad)} layer(s) not 'full_attention'): "
                       "only full attention in every layer is supported")
    return out


def language_args_from_hf(text_cfg, make_vocab_size_divisible_by: int = 128,
                          tie_word_embeddings: Optional[bool] = None) -> LanguageArgs:
    """LanguageArgs of a Llama- or Qwen2-family HF text config (object or dict)."""
    mt = _get(text_cfg, "model_type")
    if mt not in TEXT_FAMILIES:
        raise ConversionError(f"unknown text architecture {mt!r}: supported model_type {sorted(TEXT_FAMILIES)}")
    family = TEXT_FAMILIES[mt]
    hidden, heads = _get(text_cfg, "hidden_size"), _get(text_cfg, "num_attention_heads")
    kv = _get(text_cfg, "num_key_value_heads") or heads
    head_dim = _get(text_cfg, "head_dim") or hidden // heads
    problems = []
    if hidden % heads or head_dim != hidden // heads:
        problems.append(f"head_dim {head_dim} != hidden_size {hidden} / num_attention_heads {heads}")
    if _get(text_cfg, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {_get(text_cfg, 'hidden_act')!r} (only silu / SwiGLU)")
    if family == "llama" and (_get(text_cfg, "attention_bias") or _get(text_cfg, "mlp_bias")):
        problems.append("Llama attention_bias/mlp_bias=True (biases on o_proj/MLP are not in the megatron model)")
    if family == "qwen2":
        problems += _qwen2_window_problems(text_cfg)
    if problems:
        raise ConversionError(f"{mt} config cannot convert: " + "; ".join(problems))
    tie = _get(text_cfg, "tie_word_embeddings", False) if tie_word_embeddings is None else tie_word_embeddings
    return LanguageArgs(
        family=family, num_layers=_get(text_cfg, "num_hidden_layers"), hidden_size=hidden,
        num_attention_heads=heads, num_query_groups=kv, ffn_hidden_size=_get(text_cfg, "intermediate_size"),
        vocab_size=_get(text_cfg, "vocab_size"), max_position_embeddings=_get(text_cfg, "max_position_embeddings"),
        **_rope(text_cfg), norm_epsilon=float(_get(text_cfg, "rms_norm_eps")),
        add_qkv_bias=family == "qwen2", untie_embeddings_and_output_weights=not bool(tie),
        make_vocab_size_divisible_by=make_vocab_size_divisible_by)


def hf_feature_layer_to_ours(k: int, num_layers: int) -> int:
    """HF hidden_states[k] (0 = embeddings) -> VisionArgs.feature_layer (index of the last layer run)."""
    if k == 0 or not -num_layers <= k <= num_layers:
        raise ConversionError(f"vision_feature_layer {k} is not the output of one of the {num_layers} vision layers")
    return k - 1 if k > 0 else k


def ours_feature_layer_to_hf(f: int) -> int:
    return f + 1 if f >= 0 else f


def vision_args_from_hf(vision_cfg, feature_layer: int, feature_select: str = "default") -> VisionArgs:
    mt = _get(vision_cfg, "model_type")
    if mt not in VISION_TYPES:
        raise ConversionError(f"unknown vision architecture {mt!r}: supported vision_config.model_type "
                              f"{sorted(VISION_TYPES)} (CLIP, SigLIP)")
    family = VISION_TYPES[mt]
    name = family.upper() if family == "clip" else "SigLIP"
    act = _get(vision_cfg, "hidden_act")
    if act not in VISION_ACTS[family]:
        raise ConversionError(f"{name} vision_config.hidden_act {act!r} not supported (expected one of "
                              f"{VISION_ACTS[family]})")
    if _get(vision_cfg, "num_channels", 3) != 3:
        raise ConversionError(f"{name} vision_config.num_channels {_get(vision_cfg, 'num_channels')} (expected 3)")
    size, patch = _get(vision_cfg, "image_size"), _get(vision_cfg, "patch_size")
    if size % patch:
        raise ConversionError(f"{name} vision_config.image_size {size} is not a multiple of patch_size {patch}")
    n = _get(vision_cfg, "num_hidden_layers")
    return VisionArgs(
        family=family, image_size=size, patch_size=patch, num_layers=n,
        hidden_size=_get(vision_cfg, "hidden_size"), num_attention_heads=_get(vision_cfg, "num_attention_heads"),
        ffn_hidden_size=_get(vision_cfg, "intermediate_size"), activation=act,
        layernorm_epsilon=float(_get(vision_cfg, "layer_norm_eps")),
        feature_layer=hf_feature_layer_to_ours(feature_layer, n), class_token=family == "clip",
        feature_select=feature_select)


def model_args_from_llava(cfg, make_vocab_size_divisible_by: int = 128) -> ModelArgs:
    """ModelArgs of a ``LlavaConfig`` or ``LlavaNextConfig`` (transformers object)."""
    if _get(cfg, "model_type") not in ARCHITECTURES:
        raise ConversionError(f"unknown architecture {_get(cfg, 'model_type')!r}: expected a 'llava' or "
                              "'llava_next' config (LlavaForConditionalGeneration, LlavaNextForConditionalGeneration);"
                              " use --vision-path/--language-path for parts")
    problems = []
    strategy = _get(cfg, "vision_feature_select_strategy")
    if strategy not in ("default", "full"):
        problems.append(f"vision_feature_select_strategy {strategy!r} (only 'default': first token dropped, "
                        "or 'full': every token)")
    fl = _get(cfg, "vision_feature_layer")
    if not isinstance(fl, int):
        problems.append(f"vision_feature_layer {fl!r} (only a single layer)")
    if _get(cfg, "projector_hidden_act") != "gelu":
        problems.append(f"projector_hidden_act {_get(cfg, 'projector_hidden_act')!r} (only gelu)")
    if not _get(cfg, "multimodal_projector_bias", True):
        problems.append("multimodal_projector_bias=False (the projector has biases)")
    if problems:
        raise ConversionError("llava config cannot convert: " + "; ".join(problems))
    text = _get(cfg, "text_config")
    tie = _get(cfg, "tie_word_embeddings", None)
    tie = _get(text, "tie_word_embeddings", False) if tie is None else tie
    vision = vision_args_from_hf(_get(cfg, "vision_config"), fl, strategy)
    if _get(cfg, "model_type") == "llava_next":
        vision.image_grid_pinpoints = [[int(h), int(w)] for h, w in _get(cfg, "image_grid_pinpoints")]
        vision.use_thumbnail = True
    return ModelArgs(language=language_args_from_hf(text, make_vocab_size_divisible_by, tie),
                     vision=vision,
                     image_token_id=int(_get(cfg, "image_token_index")),
                     init_method_std=float(_get(text, "initializer_range", 0.02)), transformer_impl="local")


_KEEP_TEXT_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "initializer_range")


def llava_config_from_model_args(args: ModelArgs, recorded: Optional[dict] = None, dtype: Optional[str] = None,
                                 vision_use_head: bool = False):
    """A transformers ``LlavaConfig`` (``LlavaNextConfig`` for a tiled model) for `args`; token ids etc. are
    kept from a recorded HF config. `vision_use_head`: a SigLIP tower with its (unused) attention-pooling head."""
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaNextConfig, Qwen2Config,
                              SiglipVisionConfig)

    lm, vis = args.language, args.vision
    rec_text = (recorded or {}).get("text_config", {})
    kept = {k: rec_text[k] for k in _KEEP_TEXT_FIELDS if rec_text.get(k) is not None}
    tie = not lm.untie_embeddings_and_output_weights
    common = dict(
        vocab_size=lm.vocab_size, hidden_size=lm.hidden_size, intermediate_size=lm.ffn_hidden_size,
        num_hidden_layers=lm.num_layers, num_attention_heads=lm.num_attention_heads,
        num_key_value_heads=lm.num_query_groups, max_position_embeddings=lm.max_position_embeddings,
        rms_norm_eps=lm.norm_epsilon, hidden_act="silu", tie_word_embeddings=tie,
        rope_parameters=rope_parameters(lm),
        initializer_range=args.init_method_std)
    common.update(kept)
    if lm.family == "llama":
        if lm.add_qkv_bias:
            raise ConversionError("llama family with add_qkv_bias=True has no Hugging Face Llama equivalent")
        text = LlamaConfig(attention_bias=False, mlp_bias=False, head_dim=lm.hidden_size // lm.num_attention_heads,
                           **common)
    elif lm.family == "qwen2":
        if not lm.add_qkv_bias:
            raise ConversionError("qwen2 family without QKV bias has no Hugging Face Qwen2 equivalent")
        text = Qwen2Config(use_sliding_window=False, **common)
    else:
        raise ConversionError(f"unknown model family {lm.family!r} (expected llama or qwen2)")
    if vis.class_token != (vis.family == "clip"):
        raise ConversionError(f"vision family {vis.family!r} with class_token={vis.class_token} has no Hugging "
                              "Face equivalent (CLIP has a class token, SigLIP none)")
    common_v = dict(
        hidden_size=vis.hidden_size, intermediate_size=vis.ffn_hidden_size, num_hidden_layers=vis.num_layers,
        num_attention_heads=vis.num_attention_heads, image_size=vis.image_size, patch_size=vis.patch_size,
        hidden_act=vis.activation, layer_norm_eps=vis.layernorm_epsilon, num_channels=3)
    if vis.family == "siglip":
        vision = SiglipVisionConfig(vision_use_head=vision_use_head, **common_v)
    else:
        vision = CLIPVisionConfig(**common_v)
    kw = dict(vision_config=vision, text_config=text, image_token_index=args.image_token_id,
              projector_hidden_act="gelu", vision_feature_select_strategy=vis.feature_select,
              vision_feature_layer=ours_feature_layer_to_hf(vis.feature_layer),
              image_seq_length=vis.num_image_tokens, multimodal_projector_bias=True, tie_word_embeddings=tie)
    if vis.image_grid_pinpoints:
        if not vis.use_thumbnail:
            raise ConversionError("tiling without the base view (use_thumbnail False) has no Hugging Face "
                                  "equivalent: LLaVA-NeXT always packs the base view first")
        cfg = LlavaNextConfig(image_grid_pinpoints=[list(p) for p in vis.image_grid_pinpoints], **kw)
        cfg.architectures = [ARCHITECTURES["llava_next"]]
    else:
        cfg = LlavaConfig(**kw)
        cfg.architectures = [ARCHITECTURES["llava"]]
    if dtype is not None:
        cfg.dtype = dtype
        cfg.text_config.dtype = dtype
        cfg.vision_config.dtype = dtype
    return cfg

