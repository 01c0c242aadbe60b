"""Hugging Face LLaVA (or CLIP + causal LM + fresh projector) -> checkpoint at any TP/PP.

Steps: read the HF configs and derive `ModelArgs` (rejecting what the megatron
model cannot express); check every expected HF tensor is present with the
expected shape and nothing unexpected is left over, *before* writing; then
stream tensors through `hf_mapping.rules` into
`training.checkpointing.write_from_canonical`, which cuts each TP/PP rank
file in turn. The canonical state dict is a lazy mapping over ``safe_open``:
at any moment memory holds one rank file being assembled (model / (TP*PP))
plus one full tensor.

Everything is written into ``.SAVE.tmp-PID`` next to ``--save`` and renamed
at the end: a failed conversion leaves no partial checkpoint. The save dir
also gets ``tokenizer/`` (the tokenizer and processor files found in the HF
directories) and ``hf_extra.safetensors`` (the tower's ``post_layernorm`` and
SigLIP's pooling ``head``, which LLaVA never uses, kept so the way back is exact). ``meta.json`` records the
HF config and ``image_token_id``.

What the checkpoint needs to see and speak as the HF model did travels with it:
the ``preprocessor_config.json`` of the LLaVA (or vision) directory, checked to be
reproducible (`data.image_processing`; otherwise refused before anything is
written), becomes ``model_args.vision.image_processor``, which training, generation,
evaluation and export then follow; LLaVA's ``image_aspect_ratio`` (``config.json``, or
the ``image_aspect_ratio`` argument) is folded into that record (``"pad"``: the
``LlavaImageProcessor`` with ``do_pad``; ``"resize"``: the squashing processor); the directory's chat template (``chat_template.jinja``
or ``tokenizer_config.json``) is kept as ``meta.json`` ``hf.chat_template`` and, when
a project template renders the same (`hf_chat_template.match_chat_template`),
named in ``meta.json`` ``chat_template``, the default of the inference tools.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from megatron_sicog.conversion import hf_mapping as hm
from megatron_sicog.conversion.hf_mapping import HF_EXTRA, ConversionError
from megatron_sicog.conversion.safetensors_io import HFSource
from megatron_sicog.model.presets import ModelArgs, validate

TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                   "processor_config.json", "preprocessor_config.json")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def expected_hf_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Shape of every HF tensor a model of `args` has (on disk)."""
    lm, vis = args.language, args.vision
    h, f, H, F = vis.hidden_size, vis.ffn_hidden_size, lm.hidden_size, lm.ffn_hidden_size
    d = H // lm.num_attention_heads
    q, kv = lm.num_attention_heads * d, lm.num_query_groups * d
    V, P, L = hm.V, hm.P, hm.LM
    out = {V + "embeddings.patch_embedding.weight": (h, 3, vis.patch_size, vis.patch_size),
           V + "embeddings.position_embedding.weight": (vis.num_positions, h)}
    if vis.class_token:
        out[V + "embeddings.class_embedding"] = (h,)
    if vis.patch_bias:
        out[V + "embeddings.patch_embedding.bias"] = (h,)
    if vis.pre_layernorm:
        out[V + "pre_layrnorm.weight"] = out[V + "pre_layrnorm.bias"] = (h,)
    out.update(hm.hf_only_shapes(args))
    for i in range(vis.num_layers):
        p = f"{V}encoder.layers.{i}."
        for n, (o, inp) in {"self_attn.q_proj": (h, h), "self_attn.k_proj": (h, h), "self_attn.v_proj": (h, h),
                            "self_attn.out_proj": (h, h), "mlp.fc1": (f, h), "mlp.fc2": (h, f)}.items():
            out[f"{p}{n}.weight"], out[f"{p}{n}.bias"] = (o, inp), (o,)
        for n in ("layer_norm1", "layer_norm2"):
            out[f"{p}{n}.weight"] = out[f"{p}{n}.bias"] = (h,)
    out.update({P + "linear_1.weight": (H, h), P + "linear_1.bias": (H,), P + "linear_2.weight": (H, H),
                P + "linear_2.bias": (H,), L + "embed_tokens.weight": (lm.vocab_size, H), L + "norm.weight": (H,)})
    for i in range(lm.num_layers):
        p = f"{L}layers.{i}."
        out.update({p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                    p + "self_attn.q_proj.weight": (q, H), p + "self_attn.k_proj.weight": (kv, H),
                    p + "self_attn.v_proj.weight": (kv, H), p + "self_attn.o_proj.weight": (H, q),
                    p + "mlp.gate_proj.weight": (F, H), p + "mlp.up_proj.weight": (F, H),
                    p + "mlp.down_proj.weight": (H, F)})
        if lm.add_qkv_bias:
            out.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                        p + "self_attn.v_proj.bias": (kv,)})
    if lm.untie_embeddings_and_output_weights:
        out[hm.HEAD] = (lm.vocab_size, H)
    if vis.image_grid_pinpoints:
        out[hm.NEWLINE] = (H,)
    return out


def check_source(source: HFSource, args: ModelArgs, fresh_projector: bool) -> None:
    """Raise ConversionError listing missing, unexpected and wrongly shaped tensors."""
    expected = expected_hf_shapes(args)
    optional = set(hm.hf_only_shapes(args))
    head = [k for k in optional if k.startswith(hm.SIGLIP_HEAD)]
    if head and 0 < sum(k in source for k in head) < len(head):
        raise ConversionError(f"SigLIP pooling head is incomplete: missing {[k for k in head if k not in source]} "
                              "(vision_use_head needs all of it, or none)")
    if fresh_projector:
        expected = {k: v for k, v in expected.items() if not k.startswith(hm.P)}
    missing = [k for k in expected if k not in source and k not in optional]
    allowed_extra = {hm.HEAD} if not args.language.untie_embeddings_and_output_weights else set()
    unexpected = list(source.unexpected) + [k for k in source.names() if k not in expected and k not in allowed_extra]
    wrong = [f"{k}: {source.shape(k)} != expected {expected[k]}" for k in expected
             if k in source and tuple(source.shape(k)) != tuple(expected[k])]
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            problems.append(f"{len(items)} {what}: " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
    if problems:
        raise ConversionError("Hugging Face tensors do not match the config: " + "; ".join(problems))


class LazyCanonical(Mapping):
    """The canonical state dict, each tensor built from HF tensors when asked for."""

    def __init__(self, source: HFSource, args: ModelArgs, pp: int, dtype: Optional[torch.dtype],
                 fresh_projector_seed: Optional[int] = None, progress: Optional[tqdm] = None):
        self.source, self.args, self.dtype, self.seed, self.progress = source, args, dtype, fresh_projector_seed, progress
        self.rules = {r.canonical: r for r in hm.rules(args)}
        if pp > 1 and not args.language.untie_embeddings_and_output_weights:
            # tied embeddings under PP: the last stage holds its own copy of the embedding as output layer
            out = "language_model.output_layer.weight"
            self.rules[out] = hm.Rule(out, (hm.LM + "embed_tokens.weight",))

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self):
        return iter(self.rules)

    def __getitem__(self, key: str) -> torch.Tensor:
        rule = self.rules[key]
        if self.seed is not None and key.startswith("projector."):
            t = self._fresh_projector(key)
        else:
            t = hm.to_canonical(rule, [self.source.get(n) for n in rule.hf])
        if self.progress is not None:
            self.progress.update(1)
        return t if self.dtype is None else t.to(self.dtype)

    def _fresh_projector(self, key: str) -> torch.Tensor:
        """LLaVA's fresh projector: normal(0, init_method_std) weights, zero biases; seeded per tensor."""
        H, h = self.args.language.hidden_size, self.args.vision.hidden_size
        shape = {"projector.encoder.linear_fc1.weight": (H, h), "projector.encoder.linear_fc2.weight": (H, H)}.get(key)
        if shape is None:
            return torch.zeros(H)
        g = torch.Generator().manual_seed(self.seed + (0 if "fc1" in key else 1))
        return torch.randn(*shape, generator=g) * self.args.init_method_std


def _auto_config(path: str | Path):
    from transformers import AutoConfig

    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"{path}: no config.json (not a Hugging Face model directory)")
    return AutoConfig.from_pretrained(str(path), local_files_only=True)


def _image_token_from_tokenizer(path: Path) -> Optional[int]:
    tj = path / "tokenizer.json"
    if tj.exists():
        for tok in json.loads(tj.read_text()).get("added_tokens", []):
            if tok.get("content") == "<image>":
                return int(tok["id"])
    return None


def _image_processor_record(path: Path, args: ModelArgs, image_aspect_ratio: Optional[str] = None) -> Optional[dict]:
    """The reproducible ``preprocessor_config.json`` of `path` (else the family's processor) under LLaVA's
    `image_aspect_ratio` (`ImageProcessing.with_aspect_ratio`), normalised; None when neither says anything.
    A LLaVA-NeXT processor (tiled model) records its per-view fields; its ``image_grid_pinpoints`` must be
    the model's."""
    from megatron_sicog.data.image_processing import ImageProcessing, ImageProcessorError, for_vision
    from megatron_sicog.data.tiling import processing_from_llava_next

    f = path / "preprocessor_config.json"
    if not f.is_file() and image_aspect_ratio in (None, "square"):
        return None
    try:
        if args.vision.image_grid_pinpoints and f.is_file():
            processing, pins = processing_from_llava_next(json.loads(f.read_text()), args.vision.image_size)
            if pins != [list(p) for p in args.vision.image_grid_pinpoints]:
                raise ConversionError(f"{f}: image_grid_pinpoints {pins} differ from the model config's "
                                      f"{args.vision.image_grid_pinpoints}")
            return processing.to_hf()
        proc = (ImageProcessing.from_hf(json.loads(f.read_text()), args.vision.image_size) if f.is_file()
                else for_vision(args.vision))
        return proc.with_aspect_ratio(image_aspect_ratio).to_hf()
    except (ImageProcessorError, json.JSONDecodeError) as e:
        raise ConversionError(f"{f if f.is_file() else path}: {e}") from None


def _config_aspect_ratio(path: Path) -> Optional[str]:
    """LLaVA's ``image_aspect_ratio`` in the directory's ``config.json`` (checkpoints trained by LLaVA's code)."""
    f = path / "config.json"
    return json.loads(f.read_text()).get("image_aspect_ratio") if f.is_file() else None


def _chat_template_record(path: Path) -> dict:
    """``{"hf": {"chat_template": jinja}}`` plus ``chat_template: name`` when a project template matches."""
    from megatron_sicog.conversion.hf_chat_template import (match_chat_template, read_hf_chat_template,
                                                            special_tokens)

    jinja = read_hf_chat_template(path)
    if jinja is None:
        return {}
    name = match_chat_template(jinja, special_tokens(path))
    if name is None:
        print(f"note: the chat template of {path} renders like none of the project's templates; "
              "generation and evaluation of this checkpoint need --chat-template")
    return {"hf_chat_template": jinja, **({"chat_template": name} if name else {})}


def copy_tokenizer_files(sources: list[Path], dest: Path) -> list[str]:
    """Copy the known tokenizer/processor files of the first source that has each (a file source: itself)."""
    copied: list[str] = []
    for src in sources:
        files = [src] if src.is_file() else [src / n for n in TOKENIZER_FILES]
        for f in files:
            if f.is_file() and f.name not in copied:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest / f.name)
                copied.append(f.name)
    return copied


def prepare_output_dir(save: Path) -> Path:
    if save.exists() and (not save.is_dir() or any(save.iterdir())):
        raise FileExistsError(f"{save}: exists and is not empty; choose a new --save directory")
    tmp = save.parent / f".{save.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def import_hf(save: str | Path, tp: int = 1, pp: int = 1, hf_path: Optional[str | Path] = None,
              vision_path: Optional[str | Path] = None, language_path: Optional[str | Path] = None,
              image_token_id: Optional[int] = None, vision_feature_layer: int = -2,
              make_vocab_size_divisible_by: int = 128, dtype: Optional[str] = None, seed: int = 1234,
              progress: bool = True, image_aspect_ratio: Optional[str] = None) -> Path:
    """Convert and write the checkpoint; returns the save dir. See the module docstring."""
    from transformers import LlavaConfig

    save = Path(save)
    if (hf_path is None) == (vision_path is None and language_path is None):
        raise ValueError("give either --hf-path (a LLaVA directory) or both --vision-path and --language-path")
    if hf_path is not None:
        cfg = _auto_config(hf_path)
        source, fresh, tok_dirs = HFSource.llava(hf_path), False, [Path(hf_path)]
    else:
        if vision_path is None or language_path is None:
            raise ValueError("--vision-path and --language-path go together")
        vcfg, tcfg = _auto_config(vision_path), _auto_config(language_path)
        if getattr(vcfg, "model_type", None) in ("clip", "siglip"):  # a whole CLIP / SigLIP: its vision part
            vcfg = vcfg.vision_config
        if image_token_id is None:
            image_token_id = _image_token_from_tokenizer(Path(language_path))
        if image_token_id is None:
            raise ConversionError(f"{language_path}/tokenizer.json has no '<image>' token; add it (and resize the "
                                  "LM's embeddings) or pass --image-token-id")
        cfg = LlavaConfig(vision_config=vcfg.to_dict(), text_config=tcfg.to_dict(), image_token_index=image_token_id,
                          vision_feature_layer=vision_feature_layer,
                          # CLIP: drop the class token; SigLIP has none, LLaVA-OneVision & co. keep every patch
                          vision_feature_select_strategy="full" if "siglip" in vcfg.model_type else "default",
                          projector_hidden_act="gelu",
                          tie_word_embeddings=bool(getattr(tcfg, "tie_word_embeddings", False)))
        source, fresh = HFSource.parts(vision_path, language_path), True
        tok_dirs = [Path(language_path), Path(vision_path)]
    args = hm.model_args_from_llava(cfg, make_vocab_size_divisible_by)
    if not 0 <= args.image_token_id < args.language.vocab_size:
        raise ConversionError(f"image token id {args.image_token_id} is outside the LM vocabulary "
                              f"(vocab_size {args.language.vocab_size}): resize the LM's embeddings first")
    try:
        validate(args, tp, pp)
    except ValueError as e:
        raise ConversionError(f"TP={tp}, PP={pp}: {e}") from None
    check_source(source, args, fresh)
    aspect = image_aspect_ratio or (_config_aspect_ratio(Path(hf_path)) if hf_path else None)
    args.vision.image_processor = _image_processor_record(Path(hf_path or vision_path), args, aspect)
    template = _chat_template_record(Path(hf_path or language_path))

    from megatron_sicog.training import checkpointing

    tmp = prepare_output_dir(save)
    try:
        bar = tqdm(desc=f"hf-to-megatron TP={tp} PP={pp}", unit="tensor", disable=not progress)
        full = LazyCanonical(source, args, pp, DTYPES.get(dtype), seed if fresh else None, bar)
        bar.total = len(full) * tp
        meta_extra = {"hf": {"config": cfg.to_dict(), "image_token_id": args.image_token_id,
                             "source": {k: str(v) for k, v in (("hf_path", hf_path), ("vision_path", vision_path),
                                                               ("language_path", language_path)) if v}}}
        if "hf_chat_template" in template:
            meta_extra["hf"]["chat_template"] = template["hf_chat_template"]
        if "chat_template" in template:
            meta_extra["chat_template"] = template["chat_template"]
        copied = copy_tokenizer_files(tok_dirs, tmp / TOKENIZER_DIR)
        if "tokenizer.json" in copied:  # what the trainer and tools read (data/tokenizer.py)
            meta_extra.update(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=str(save.resolve() / TOKENIZER_DIR))
        checkpointing.write_from_canonical(full, args, tmp, tp, pp, iteration=0, meta_extra=meta_extra)
        bar.close()
        extras = {n: source.get(n).contiguous() for n in hm.hf_only_shapes(args) if n in source}
        if extras:
            save_file(extras, str(tmp / HF_EXTRA), metadata={"format": "pt"})
        if save.exists():
            save.rmdir()  # empty (checked above)
        os.replace(tmp, save)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return save
