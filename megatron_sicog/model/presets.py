"""Model sizes as named presets, and the Megatron flags that override them.

Every tool selects a shape with ``--model-preset NAME``; individual Megatron
flags (``--num-layers``, ``--hidden-size``, ``--num-attention-heads``,
``--ffn-hidden-size``, ``--num-query-groups``, ...) override single fields.
`ModelArgs` is plain values with defaults beside them; `model/config.py`
turns it into megatron-core ``TransformerConfig`` objects.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Optional


ROPE_TYPES = ("default", "llama3")
VISION_FAMILIES = ("clip", "siglip")
VISION_ACTIVATIONS = ("quick_gelu", "gelu", "gelu_pytorch_tanh")
FEATURE_SELECT = ("default", "full")


@dataclass
class VisionArgs:
    """CLIP- or SigLIP-style ViT.

    ``family`` "clip": class token, conv patch embedding without bias, a pre-LayerNorm
    (CLIP's ``pre_layrnorm``); "siglip": no class token, patch embedding with bias, no
    pre-LayerNorm. Neither family's ``post_layernorm`` is used: LLaVA reads
    ``hidden_states[vision_feature_layer]``, the layer's output before it.
    ``feature_select`` is LLaVA's ``vision_feature_select_strategy``: "default" drops the
    first token (CLIP's class token), "full" keeps every token (SigLIP).
    ``image_processor``: the pixel-deciding fields of the HF ``preprocessor_config.json``
    the tower came with (recorded on import); None: the family's processor
    (`data.image_processing.for_vision` decides).
    ``image_grid_pinpoints``: LLaVA-NeXT any-resolution tiling, the allowed (height, width)
    resolutions of the tile grid; None: one view per image (`data.tiling.tiling_for`).
    ``use_thumbnail``: with tiling, the whole image's base view comes first (LLaVA-NeXT).
    """

    family: str = "clip"
    image_size: int = 64
    patch_size: int = 16
    num_layers: int = 2
    hidden_size: int = 128
    num_attention_heads: int = 4
    ffn_hidden_size: int = 512
    activation: str = "quick_gelu"  # "quick_gelu" (OpenAI CLIP), "gelu", "gelu_pytorch_tanh" (SigLIP)
    layernorm_epsilon: float = 1e-5
    # Which layer's output feeds the projector (LLaVA: -2, the penultimate);
    # -1 is the last layer. Negative counts from the end like Python indices.
    feature_layer: int = -1
    class_token: bool = True
    feature_select: str = "default"
    image_processor: Optional[dict] = None
    image_grid_pinpoints: Optional[list] = None
    use_thumbnail: bool = True

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_positions(self) -> int:
        return self.num_patches + (1 if self.class_token else 0)

    @property
    def num_image_tokens(self) -> int:
        """Features per image fed to the LM (what one ``<image>`` expands to)."""
        return self.num_positions - (1 if self.feature_select == "default" else 0)

    @property
    def pre_layernorm(self) -> bool:
        return self.family == "clip"

    @property
    def patch_bias(self) -> bool:
        return self.family == "siglip"


@dataclass
class LanguageArgs:
    """Decoder-only LM (Llama- or Qwen2-family)."""

    family: str = "qwen2"  # "llama" or "qwen2" (qwen2 = llama + QKV bias)
    num_layers: int = 4
    hidden_size: int = 192
    num_attention_heads: int = 6
    num_query_groups: int = 2  # grouped-query attention; == heads for MHA
    ffn_hidden_size: int = 512
    vocab_size: int = 1024  # the tokenizer's; padded for TP by `padded_vocab_size`
    max_position_embeddings: int = 1024
    rotary_base: float = 10000.0
    # RoPE frequencies: "default" (plain) or "llama3" (Llama-3.1/3.2 scaling of the
    # inverse frequencies; the four numbers below are its parameters, as in the HF
    # config's rope_parameters / rope_scaling).
    rope_type: str = "default"
    rope_scaling_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position_embeddings: int = 8192
    norm_epsilon: float = 1e-6
    add_qkv_bias: bool = True
    untie_embeddings_and_output_weights: bool = True
    make_vocab_size_divisible_by: int = 64


@dataclass
class ModelArgs:
    language: LanguageArgs = field(default_factory=LanguageArgs)
    vision: VisionArgs = field(default_factory=VisionArgs)
    projector_type: str = "mlp"  # 2-layer MLP with GELU (LLaVA-1.5)
    image_token_id: int = 3  # replaced by the tokenizer's id of "<image>" at build time
    init_method_std: float = 0.02
    transformer_impl: str = "auto"  # "local", "transformer_engine" or "auto"

    def replace(self, **kw) -> "ModelArgs":
        """A copy with `kw` replaced; the nested vision/language args are copied too, so changing the
        copy's fields never changes a shared preset (dataclasses.replace alone is shallow)."""
        return dataclasses.replace(copy.deepcopy(self), **kw)


def _clip_l336() -> VisionArgs:
    """CLIP ViT-L/14 at 336 px, penultimate layer (LLaVA-1.5)."""
    return VisionArgs(image_size=336, patch_size=14, num_layers=24, hidden_size=1024, num_attention_heads=16,
                      ffn_hidden_size=4096, activation="quick_gelu", layernorm_epsilon=1e-5, feature_layer=-2)


def _siglip_so400m() -> VisionArgs:
    """SigLIP so400m/14 at 384 px as LLaVA-OneVision uses it: 27 layers, features of the last
    (``vision_feature_layer`` -1, before ``post_layernorm``), every token (``full``): 729 per image."""
    return VisionArgs(family="siglip", image_size=384, patch_size=14, num_layers=27, hidden_size=1152,
                      num_attention_heads=16, ffn_hidden_size=4304, activation="gelu_pytorch_tanh",
                      layernorm_epsilon=1e-6, feature_layer=-1, class_token=False, feature_select="full")


def _qwen2_7b() -> LanguageArgs:
    return LanguageArgs(
        family="qwen2", num_layers=28, hidden_size=3584, num_attention_heads=28,
        num_query_groups=4, ffn_hidden_size=18944, vocab_size=152064,
        max_position_embeddings=32768, rotary_base=1000000.0, norm_epsilon=1e-6,
        add_qkv_bias=True, untie_embeddings_and_output_weights=True,
        make_vocab_size_divisible_by=128,
    )


PRESETS: dict[str, ModelArgs] = {
    # Tests and the tiny SICOG demo: trains in minutes on 2 CPU cores.
    "tiny": ModelArgs(),
    # The paper's 7B-class shape: Qwen2-7B + CLIP ViT-L/14 at 336 px (LLaVA-1.5 style).
    "qwen2-7b-clip-l336": ModelArgs(language=_qwen2_7b(), vision=_clip_l336()),
    # LLaVA-OneVision-7B-like: Qwen2-7B + SigLIP so400m/14-384.
    "qwen2-7b-siglip-so400m": ModelArgs(language=_qwen2_7b(), vision=_siglip_so400m()),
    # LLaVA-Llama-3.1-8B: Llama-3.1-8B(-Instruct) (llama3 RoPE scaling, 128k vocab) + CLIP ViT-L/14-336.
    "llama3.1-8b-clip-l336": ModelArgs(
        language=LanguageArgs(
            family="llama", num_layers=32, hidden_size=4096, num_attention_heads=32,
            num_query_groups=8, ffn_hidden_size=14336, vocab_size=128256,
            max_position_embeddings=131072, rotary_base=500000.0, rope_type="llama3",
            rope_scaling_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
            rope_original_max_position_embeddings=8192, norm_epsilon=1e-5,
            add_qkv_bias=False, untie_embeddings_and_output_weights=True,
            make_vocab_size_divisible_by=128,
        ),
        vision=_clip_l336(),
    ),
    # LLaVA-1.5-7B-like: Llama-family (Vicuna / Llama-2 7B) + CLIP ViT-L/14-336.
    "llama-7b-clip-l336": ModelArgs(
        language=LanguageArgs(
            family="llama", num_layers=32, hidden_size=4096, num_attention_heads=32,
            num_query_groups=32, ffn_hidden_size=11008, vocab_size=32000,
            max_position_embeddings=4096, rotary_base=10000.0, norm_epsilon=1e-5,
            add_qkv_bias=False, untie_embeddings_and_output_weights=True,
            make_vocab_size_divisible_by=128,
        ),
        vision=_clip_l336(),
    ),
}

# Megatron flag -> ModelArgs field path. A flag left unset keeps the preset's value.
_LM_FLAGS = {
    "num_layers": "num_layers",
    "hidden_size": "hidden_size",
    "num_attention_heads": "num_attention_heads",
    "num_query_groups": "num_query_groups",
    "ffn_hidden_size": "ffn_hidden_size",
    "max_position_embeddings": "max_position_embeddings",
    "rotary_base": "rotary_base",
    "rope_scaling_factor": "rope_scaling_factor",
    "norm_epsilon": "norm_epsilon",
    "make_vocab_size_divisible_by": "make_vocab_size_divisible_by",
}
_VISION_FLAGS = {
    "vision_num_layers": "num_layers",
    "vision_hidden_size": "hidden_size",
    "vision_num_attention_heads": "num_attention_heads",
    "vision_ffn_hidden_size": "ffn_hidden_size",
    "img_h": "image_size",
    "patch_dim": "patch_size",
    "vision_activation": "activation",
    "vision_feature_layer": "feature_layer",
}


def add_model_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add --model-preset and the Megatron model-shape flags (all default None = preset)."""
    g = parser.add_argument_group("model")
    g.add_argument("--model-preset", default="tiny", choices=sorted(PRESETS))
    for flag, typ in [
        ("--num-layers", int), ("--hidden-size", int), ("--num-attention-heads", int),
        ("--num-query-groups", int), ("--ffn-hidden-size", int),
        ("--max-position-embeddings", int), ("--rotary-base", float), ("--norm-epsilon", float),
        ("--rope-scaling-factor", float),
        ("--make-vocab-size-divisible-by", int),
        ("--vision-num-layers", int), ("--vision-hidden-size", int),
        ("--vision-num-attention-heads", int), ("--vision-ffn-hidden-size", int),
        ("--img-h", int), ("--patch-dim", int), ("--vision-feature-layer", int),
    ]:
        g.add_argument(flag, type=typ, default=None)
    g.add_argument("--use-rope-scaling", action="store_true", default=None,
                   help="Llama-3.x RoPE scaling of the inverse frequencies (rope type llama3)")
    g.add_argument("--vision-activation", choices=list(VISION_ACTIVATIONS), default=None)
    g.add_argument("--model-family", choices=["llama", "qwen2"], default=None,
                   help="llama: no QKV bias; qwen2: QKV bias")
    g.add_argument("--untie-embeddings-and-output-weights", dest="untie", action="store_true", default=None)
    g.add_argument("--tie-embeddings-and-output-weights", dest="untie", action="store_false")
    g.add_argument("--transformer-impl", choices=["auto", "local", "transformer_engine"], default=None)
    g.add_argument("--use-tiling", action="store_true", default=None,
                   help="any-resolution tiling (LLaVA-NeXT): a grid of img-h tiles per image, chosen by its "
                        "aspect ratio and resolution among the grids of at most --max-num-tiles tiles")
    g.add_argument("--max-num-tiles", type=int, default=6, help="with --use-tiling: most tiles per image")
    g.add_argument("--use-thumbnail", action="store_true", default=None,
                   help="with --use-tiling: the whole image as one more view, first (LLaVA-NeXT's base view)")
    return parser


def model_args_from_flags(args: argparse.Namespace, vocab_size: Optional[int] = None,
                          image_token_id: Optional[int] = None) -> ModelArgs:
    """The preset named by --model-preset with every given flag applied."""
    base = PRESETS[args.model_preset]
    lm = dataclasses.replace(base.language)
    vis = dataclasses.replace(base.vision)
    for flag, name in _LM_FLAGS.items():
        if getattr(args, flag, None) is not None:
            setattr(lm, name, getattr(args, flag))
    for flag, name in _VISION_FLAGS.items():
        if getattr(args, flag, None) is not None:
            setattr(vis, name, getattr(args, flag))
    if getattr(args, "model_family", None):
        lm.family = args.model_family
        lm.add_qkv_bias = args.model_family == "qwen2"
    if getattr(args, "use_rope_scaling", None):
        lm.rope_type = "llama3"
    if getattr(args, "untie", None) is not None:
        lm.untie_embeddings_and_output_weights = args.untie
    if vocab_size is not None:
        lm.vocab_size = vocab_size
    if getattr(args, "use_tiling", None):
        from megatron_sicog.data.tiling import grids_up_to

        vis.image_grid_pinpoints = grids_up_to(args.max_num_tiles, vis.image_size)
        vis.use_thumbnail = bool(args.use_thumbnail)
    out = ModelArgs(language=lm, vision=vis, projector_type=base.projector_type,
                    image_token_id=base.image_token_id if image_token_id is None else image_token_id,
                    init_method_std=base.init_method_std,
                    transformer_impl=getattr(args, "transformer_impl", None) or base.transformer_impl)
    validate(out)
    return out


def flag_conflicts(args: argparse.Namespace, m: ModelArgs) -> list[str]:
    """Shape flags given on the command line that disagree with `m` (a checkpoint's shape).

    A run that starts from a checkpoint takes the checkpoint's shape; a flag that
    says otherwise is a mistake to report, not a setting to drop silently.
    """
    out = []
    for table, part, prefix in ((_LM_FLAGS, m.language, ""), (_VISION_FLAGS, m.vision, "vision ")):
        for flag, name in table.items():
            given = getattr(args, flag, None)
            if given is not None and given != getattr(part, name):
                out.append(f"--{flag.replace('_', '-')} {given} (checkpoint: {prefix}{name} {getattr(part, name)})")
    return out + tiling_flag_conflicts(args, m)


def tiling_flag_conflicts(args: argparse.Namespace, m: ModelArgs) -> list[str]:
    """``--use-tiling [--max-num-tiles N] [--use-thumbnail]`` where `m` (a checkpoint's shape) tiles
    otherwise or not at all. Without ``--use-tiling`` the checkpoint's tiling is taken as it is."""
    if not getattr(args, "use_tiling", None):
        return []
    from megatron_sicog.data.tiling import grids_up_to

    vis, out = m.vision, []
    if not vis.image_grid_pinpoints:
        return ["--use-tiling (checkpoint: one view per image, no image_grid_pinpoints)"]
    want = grids_up_to(args.max_num_tiles, vis.image_size)
    if sorted(map(list, vis.image_grid_pinpoints)) != sorted(want):
        out.append(f"--max-num-tiles {args.max_num_tiles} (checkpoint: vision image_grid_pinpoints "
                   f"{vis.image_grid_pinpoints}; leave the tiling flags out to use them)")
    if bool(getattr(args, "use_thumbnail", None)) != vis.use_thumbnail:
        out.append(f"--use-thumbnail {bool(getattr(args, 'use_thumbnail', None))} "
                   f"(checkpoint: vision use_thumbnail {vis.use_thumbnail})")
    return out


def padded_vocab_size(vocab_size: int, divisible_by: int, tensor_model_parallel_size: int) -> int:
    """Megatron's rule: pad the vocab to a multiple of divisible_by * TP."""
    multiple = divisible_by * tensor_model_parallel_size
    return ((vocab_size + multiple - 1) // multiple) * multiple


def validate(m: ModelArgs, tensor_model_parallel_size: int = 1, pipeline_model_parallel_size: int = 1) -> None:
    """Raise ValueError, with the numbers, for shapes megatron-core cannot build."""
    lm, vis, tp, pp = m.language, m.vision, tensor_model_parallel_size, pipeline_model_parallel_size
    errors = []
    if lm.hidden_size % lm.num_attention_heads:
        errors.append(f"hidden size {lm.hidden_size} is not divisible by attention heads {lm.num_attention_heads}")
    if lm.num_attention_heads % lm.num_query_groups:
        errors.append(f"attention heads {lm.num_attention_heads} not divisible by query groups {lm.num_query_groups}")
    if lm.num_attention_heads % tp:
        errors.append(f"attention heads {lm.num_attention_heads} not divisible by tensor-model-parallel-size {tp}")
    if lm.num_query_groups % tp:
        errors.append(f"query groups {lm.num_query_groups} not divisible by tensor-model-parallel-size {tp}")
    if lm.ffn_hidden_size % tp:
        errors.append(f"ffn hidden size {lm.ffn_hidden_size} not divisible by tensor-model-parallel-size {tp}")
    if lm.num_layers % pp:
        errors.append(f"num layers {lm.num_layers} not divisible by pipeline-model-parallel-size {pp}")
    if vis.hidden_size % vis.num_attention_heads:
        errors.append(f"vision hidden size {vis.hidden_size} not divisible by heads {vis.num_attention_heads}")
    if vis.num_attention_heads % tp:
        errors.append(f"vision heads {vis.num_attention_heads} not divisible by tensor-model-parallel-size {tp}")
    if vis.ffn_hidden_size % tp:
        errors.append(f"vision ffn hidden size {vis.ffn_hidden_size} not divisible by tensor-model-parallel-size {tp}")
    if vis.image_size % vis.patch_size:
        errors.append(f"image size {vis.image_size} not divisible by patch size {vis.patch_size}")
    if not -vis.num_layers <= vis.feature_layer < vis.num_layers or vis.feature_layer == 0 and vis.num_layers == 0:
        errors.append(f"vision feature layer {vis.feature_layer} out of range for {vis.num_layers} layers")
    if vis.family not in VISION_FAMILIES:
        errors.append(f"unknown vision family {vis.family!r} (expected one of {VISION_FAMILIES})")
    if vis.family == "siglip" and vis.class_token:
        errors.append("vision family 'siglip' has no class token (class_token must be False)")
    if vis.activation not in VISION_ACTIVATIONS:
        errors.append(f"vision activation {vis.activation!r} not supported (expected one of {VISION_ACTIVATIONS})")
    if vis.feature_select not in FEATURE_SELECT:
        errors.append(f"vision feature_select {vis.feature_select!r} not supported (expected one of {FEATURE_SELECT})")
    if vis.image_grid_pinpoints is not None:
        bad = [p for p in vis.image_grid_pinpoints
               if len(p) != 2 or min(p) <= 0 or p[0] % vis.image_size or p[1] % vis.image_size]
        if bad or not vis.image_grid_pinpoints:
            errors.append(f"image grid pinpoints {bad or '[]'} are not (height, width) multiples of image size "
                          f"{vis.image_size}")
        if vis.class_token and vis.feature_select == "full":
            errors.append("tiling needs one feature per patch: feature_select 'full' with a class token")
    if lm.rope_type not in ROPE_TYPES:
        errors.append(f"rope type {lm.rope_type!r} not supported (expected one of {ROPE_TYPES})")
    if lm.rope_type == "llama3" and not (lm.rope_high_freq_factor > lm.rope_low_freq_factor > 0
                                         and lm.rope_scaling_factor > 0):
        errors.append(f"llama3 rope needs high_freq_factor {lm.rope_high_freq_factor} > low_freq_factor "
                      f"{lm.rope_low_freq_factor} > 0 and factor {lm.rope_scaling_factor} > 0")
    if lm.family not in ("llama", "qwen2"):
        errors.append(f"unknown model family {lm.family!r} (expected llama or qwen2)")
    if errors:
        raise ValueError("impossible model configuration: " + "; ".join(errors))


def parameter_count(m: ModelArgs) -> dict[str, int]:
    """Parameters of the megatron model of `m` by part, with the LM's true (unpadded) vocabulary.

    Counted from the shapes, so it needs no weights (the 7B presets count in no time); checked against the
    model megatron-core builds (tiny) and against transformers' LLaVA built on the meta device for the
    real presets (tests/test_presets.py). Hugging Face has a few more: the tower's unused ``post_layernorm``.
    """
    v, lm = m.vision, m.language
    h, f = v.hidden_size, v.ffn_hidden_size
    vision = h * 3 * v.patch_size ** 2 + (h if v.patch_bias else 0) + (h if v.class_token else 0)
    vision += v.num_positions * h + (2 * h if v.pre_layernorm else 0)
    vision += v.num_layers * (2 * h + 3 * h * h + 3 * h + h * h + h + 2 * h + f * h + f + h * f + h)
    H, F = lm.hidden_size, lm.ffn_hidden_size
    projector = h * H + H + H * H + H
    d = H // lm.num_attention_heads
    qkv = (lm.num_attention_heads + 2 * lm.num_query_groups) * d
    layer = H + qkv * H + (qkv if lm.add_qkv_bias else 0) + lm.num_attention_heads * d * H + H + 2 * F * H + F * H
    language = lm.vocab_size * H + lm.num_layers * layer + H
    if lm.untie_embeddings_and_output_weights:
        language += lm.vocab_size * H
    return {"vision": vision, "projector": projector, "language": language,
            "total": vision + projector + language}


def _print_presets(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m megatron_sicog.model.presets",
                                description="The model presets with their parameter counts.")
    p.add_argument("names", nargs="*", help="presets to show (default: all)")
    a = p.parse_args(argv)
    unknown = [n for n in a.names if n not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {unknown}; known: {sorted(PRESETS)}")
    print(f"{'preset':26} {'vision':>8} {'LM':>8} {'img tok':>7} {'vision':>14} {'projector':>12} "
          f"{'language':>15} {'total':>15}")
    for name in a.names or PRESETS:
        m = PRESETS[name]
        c = parameter_count(m)
        print(f"{name:26} {m.vision.family:>8} {m.language.family:>8} {m.vision.num_image_tokens:>7} "
              f"{c['vision']:>14,} {c['projector']:>12,} {c['language']:>15,} {c['total']:>15,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_print_presets())
