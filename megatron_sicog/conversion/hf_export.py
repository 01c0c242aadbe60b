"""Checkpoint of this project (any TP/PP) -> Hugging Face ``LlavaForConditionalGeneration`` directory.

Output: ``config.json`` (text ``llama`` or ``qwen2`` by family, vision
``clip_vision_model`` or ``siglip_vision_model``, ``vision_feature_layer``,
``vision_feature_select_strategy`` ("default" / "full"), ``image_token_index``, ``projector_hidden_act = "gelu"``),
``model-0000i-of-0000N.safetensors`` shards of at most ``max_shard_size`` with
``model.safetensors.index.json``, and the tokenizer files (the checkpoint's
``tokenizer/`` or ``--tokenizer-path``). A SentencePiece tokenizer (the
trainer's ``tokenizer_model`` of type SentencePieceTokenizer, or a ``.model``
--tokenizer-path) is written as a HF fast tokenizer with the chat template the
checkpoint was trained with (``meta.json`` ``chat_template``, or
--chat-template) and a ``LlavaProcessor`` (``processor_config.json``), see
`hf_tokenizer`: ``AutoProcessor`` + ``LlavaForConditionalGeneration`` load it.
Every export has the ``preprocessor_config.json`` of the checkpoint's image
processing (`data.image_processing.for_vision`: ``CLIPImageProcessor`` or
``SiglipImageProcessor``; a copied one is kept when it says the same). Loadable with
``LlavaForConditionalGeneration.from_pretrained(dir)``, no custom code.

Memory: every rank file is opened with ``torch.load(mmap=True)``, so nothing
is read until used. Tensors are produced one `hf_mapping.Rule` at a time (the
TP slices of one tensor merged, then split into HF tensors) and queued into
the current output shard, which is written as soon as the next tensor would
exceed the cap. Resident memory therefore stays near one output shard plus
one full tensor (and reclaimable page cache), whatever the model size.

Written into ``.SAVE.tmp-PID`` and renamed at the end: never a partial directory.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from megatron_sicog.conversion import hf_mapping as hm
from megatron_sicog.conversion.hf_import import (DTYPES, HF_EXTRA, TOKENIZER_DIR, copy_tokenizer_files,
                                                 prepare_output_dir)
from megatron_sicog.conversion.hf_mapping import ConversionError
from megatron_sicog.conversion.safetensors_io import ShardWriter, parse_size
from megatron_sicog.model import sharding

# Transformer Engine specs fuse the pre-norms into the next linear; canonical names are the local spec's.
_TE_ALIASES = (
    (re.compile(r"self_attention\.linear_qkv\.layer_norm_(weight|bias)$"), r"input_layernorm.\1"),
    (re.compile(r"mlp\.linear_fc1\.layer_norm_(weight|bias)$"), r"pre_mlp_layernorm.\1"),
)
OUTPUT = "language_model.output_layer.weight"


def _canonical_name(key: str) -> str:
    for pat, repl in _TE_ALIASES:
        if pat.search(key):
            return pat.sub(repl, key)
    return key


class CheckpointReader:
    """Canonical tensors of a TP x PP checkpoint, merged one at a time from memory-mapped rank files."""

    def __init__(self, load_dir: str | Path, iteration: Optional[int] = None):
        from megatron_sicog.training import checkpointing as ck

        self.load_dir = Path(load_dir)
        self.meta = ck.read_meta(load_dir, iteration)
        self.args = ck.model_args_from_dict(self.meta["model_args"])
        self.tp, self.pp = self.meta["tensor_model_parallel_size"], self.meta["pipeline_model_parallel_size"]
        it_dir = ck.iteration_dir(load_dir, iteration)
        self.files: dict[tuple[int, int], dict] = {}
        for pp_rank in range(self.pp):
            for tp_rank in range(self.tp):
                path = it_dir / ck.rank_dir_name(tp_rank, pp_rank, self.pp) / ck.RANK_FILE
                if not path.exists():
                    raise FileNotFoundError(f"{path}: missing (checkpoint says TP={self.tp}, PP={self.pp})")
                self.files[(tp_rank, pp_rank)] = ck.torch_load(path, mmap=True)
        self.where: dict[str, tuple[int, str]] = {}  # canonical name -> (pp rank, local key)
        for pp_rank in range(self.pp):
            f = self.files[(0, pp_rank)]
            for key, t in f["model"].items():
                if isinstance(t, torch.Tensor) and not key.endswith("_extra_state"):
                    name = _canonical_name(sharding.to_global_key(key, f["layer_offset"]))
                    self.where.setdefault(name, (pp_rank, key))

    def names(self) -> list[str]:
        return list(self.where)

    def get(self, name: str) -> torch.Tensor:
        pp_rank, key = self.where[name]
        first = self.files[(0, pp_rank)]
        part = first["partition"].get(key)
        if part is None:
            t = first["model"][key]
        else:
            t = sharding.merge_tensors([self.files[(r, pp_rank)]["model"][key] for r in range(self.tp)], *part)
        if name in sharding.VOCAB_KEYS:
            t = t[: self.args.language.vocab_size]
        return t


def check_checkpoint(reader: CheckpointReader, rules: list[hm.Rule]) -> None:
    """Raise ConversionError listing canonical tensors missing from / unexpected in the checkpoint."""
    wanted = {r.canonical for r in rules}
    have = set(reader.names())
    missing = [n for n in (r.canonical for r in rules) if n not in have]
    tied_copy = {OUTPUT} if not reader.args.language.untie_embeddings_and_output_weights else set()
    unexpected = sorted(have - wanted - tied_copy)
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected)):
        if items:
            problems.append(f"{len(items)} {what}: " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
    if problems:
        raise ConversionError(f"{reader.load_dir}: checkpoint does not match its model args: " + "; ".join(problems))


def _tokenizer_source(load: Path, meta: dict, tokenizer_path: Optional[str | Path]) -> list[Path]:
    """Where the tokenizer files are: --tokenizer-path, else SAVE/tokenizer/, else the trainer's meta."""
    if tokenizer_path:
        if not Path(tokenizer_path).exists():
            raise FileNotFoundError(f"--tokenizer-path {tokenizer_path}: does not exist")
        return [Path(tokenizer_path)]
    if (load / TOKENIZER_DIR).is_dir():
        return [load / TOKENIZER_DIR]
    model = meta.get("tokenizer_model")
    if meta.get("tokenizer_type") == "HuggingFaceTokenizer" and model and Path(model).exists():
        return [Path(model)]
    return []


def _sentencepiece_source(meta: dict, tokenizer_path: Optional[str | Path]) -> Optional[Path]:
    """The SentencePiece ``.model`` to convert: --tokenizer-path when it is one, else the trainer's meta."""
    from megatron_sicog.data.tokenizer import SENTENCEPIECE_TYPES

    if tokenizer_path:
        p = Path(tokenizer_path)
        return p if p.is_file() and p.suffix == ".model" else None
    model = meta.get("tokenizer_model")
    if meta.get("tokenizer_type") in SENTENCEPIECE_TYPES and model:
        if not Path(model).is_file():
            raise FileNotFoundError(f"the checkpoint's tokenizer_model {model} (SentencePiece) does not exist; "
                                    "give --tokenizer-path")
        return Path(model)
    return None


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


def export_hf(load: str | Path, save: str | Path, max_shard_size: str | int = "5GB", dtype: Optional[str] = None,
              tokenizer_path: Optional[str | Path] = None, iteration: Optional[int] = None,
              progress: bool = True, chat_template: Optional[str] = None) -> Path:
    """Write the HF directory; returns it. See the module docstring."""
    reader = CheckpointReader(load, iteration)
    args = reader.args
    if args.projector_type != "mlp":
        raise ConversionError(f"projector_type {args.projector_type!r}: LLaVA's is the 2-layer 'mlp'")
    rules = hm.rules(args)
    check_checkpoint(reader, rules)
    recorded = (reader.meta.get("hf") or {}).get("config")
    first_rule = rules[0]
    out_dtype = DTYPES[dtype] if dtype else reader.get(first_rule.canonical).dtype
    extra_path = Path(load) / HF_EXTRA
    extras = hm.default_hf_only(args, out_dtype)
    if extra_path.exists():  # written by hf-to-megatron: post_layernorm (+ SigLIP head), unused by LLaVA
        extras.update({k: v for k, v in load_file(str(extra_path)).items() if k in hm.hf_only_shapes(args)})
    use_head = any(k.startswith(hm.SIGLIP_HEAD) for k in extras)
    cfg = hm.llava_config_from_model_args(args, recorded, _dtype_name(out_dtype), vision_use_head=use_head)
    save = Path(save)
    tmp = prepare_output_dir(save)
    try:
        writer = ShardWriter(tmp, parse_size(max_shard_size))
        last_vision = [r.canonical for r in rules if r.canonical.startswith("vision.")][-1]
        for rule in tqdm(rules, desc="megatron-to-hf", unit="tensor", disable=not progress):
            for name, t in zip(rule.hf, hm.to_hf(rule, reader.get(rule.canonical))):
                writer.add(name, t.to(out_dtype))
            if rule.canonical == last_vision:  # after the tower's own tensors, as save_pretrained orders them
                for name, t in extras.items():
                    writer.add(name, t.to(out_dtype))
        writer.close()
        cfg.save_pretrained(str(tmp))
        template = chat_template or reader.meta.get("chat_template")
        sp_model = _sentencepiece_source(reader.meta, tokenizer_path)
        if sp_model is not None:  # the demo's tokenizer: written as a HF fast tokenizer + LlavaProcessor
            from megatron_sicog.conversion import hf_tokenizer as ht

            hf_tok = ht.sentencepiece_to_hf(sp_model)
            if hf_tok.convert_tokens_to_ids("<image>") != args.image_token_id:
                raise ConversionError(f"{sp_model}: <image> is id {hf_tok.convert_tokens_to_ids('<image>')}, the "
                                      f"model's image_token_id {args.image_token_id}: wrong tokenizer?")
            copied = ht.write_processor_files(tmp, hf_tok, args,
                                              ht.chat_template_jinja(template) if template else None)
        else:
            copied = copy_tokenizer_files(_tokenizer_source(Path(load), reader.meta, tokenizer_path), tmp)
            from megatron_sicog.conversion.hf_tokenizer import write_image_processor

            if write_image_processor(tmp, args) == "replaced":
                print("note: the copied preprocessor_config.json did not match the checkpoint's image "
                      "processing; written from the checkpoint")
        if not copied:
            print(f"note: no Hugging Face tokenizer files found for {load} (give --tokenizer-path); "
                  "the output has none")
        if save.exists():
            save.rmdir()
        os.replace(tmp, save)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return save
