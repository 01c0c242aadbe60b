"""What makes an exported directory usable by transformers beyond its weights: tokenizer, chat template, processor.

* `sentencepiece_to_hf(model_file)` -> ``PreTrainedTokenizerFast``: the project's
  SentencePiece model (byte-fallback BPE, identity normalisation, no dummy
  prefix: `data.tokenizer.train_sentencepiece`) as a ``tokenizers`` BPE with the
  same vocabulary and ids (merges ranked by the merged piece's score, ``" "`` ->
  ``"▁"``, byte fallback to ``<0xNN>``), its user-defined symbols (``<image>``
  and the chat-template specials) as special added tokens, ``<s>``/``</s>``/
  ``<unk>``/``<pad>`` as bos/eos/unk/pad. Token ids equal SentencePiece's
  (tests/test_hf_export_dir.py checks that on the demo corpus).
* `chat_template_jinja(name)`: a Jinja ``chat_template`` that renders what
  `data.chat_template` encodes for that template (``qwen2``, ``llama3``,
  ``qwen2.5``, ``llama3.1``, ``plain``), so ``apply_chat_template`` gives the ids
  the model was trained on.
* `write_image_processor(out, args)`: ``preprocessor_config.json`` of that
  processor alone (export of a checkpoint with a HF tokenizer), keeping a copied
  one that already says the same.
* `write_processor_files(out, tokenizer, args, chat_template)`: tokenizer files,
  ``chat_template.jinja``, ``preprocessor_config.json`` (the image processor
  `data.image_processing.for_vision` decides for the model: ``CLIPImageProcessor``
  or ``SiglipImageProcessor``) and ``processor_config.json`` of a
  ``LlavaProcessor`` (patch size, the model's feature selection), so
  ``AutoProcessor.from_pretrained(out)`` works.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from megatron_sicog.conversion.hf_mapping import ConversionError
from megatron_sicog.prompts import IMAGE_PLACEHOLDER


def sentencepiece_to_hf(model_file: str | Path):
    """A ``PreTrainedTokenizerFast`` with the ids of the SentencePiece BPE model `model_file`."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    proto = pb.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    problems = []
    if proto.trainer_spec.model_type != pb.TrainerSpec.BPE:
        problems.append(f"model_type {pb.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)} (only BPE)")
    ns = proto.normalizer_spec
    if ns.add_dummy_prefix or ns.name not in ("identity", ""):
        problems.append(f"normalizer {ns.name!r} add_dummy_prefix={ns.add_dummy_prefix} (only identity, no "
                        "dummy prefix, as tools/train_tokenizer.py writes)")
    if not proto.trainer_spec.byte_fallback:
        problems.append("byte_fallback=False")
    if problems:
        raise ConversionError(f"{model_file}: SentencePiece model cannot be written as a HF tokenizer: "
                              + "; ".join(problems))
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab: dict[str, int] = {}
    special: list[str] = []
    for i, p in enumerate(proto.pieces):
        vocab[p.piece] = i
        if p.type in (pb.ModelProto.SentencePiece.CONTROL, pb.ModelProto.SentencePiece.USER_DEFINED,
                      pb.ModelProto.SentencePiece.UNKNOWN):
            special.append(p.piece)
    mergeable = {p.piece: i for i, p in enumerate(proto.pieces) if p.type == pb.ModelProto.SentencePiece.NORMAL}
    merges = []
    for piece, i in mergeable.items():
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in mergeable and right in mergeable:
                merges.append((i, mergeable[left], mergeable[right], left, right))
    merges.sort()
    unk = sp.id_to_piece(sp.unk_id())
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], unk_token=unk,
                               byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])

    def piece(i):
        return sp.id_to_piece(i) if i >= 0 else None
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=piece(sp.bos_id()), eos_token=piece(sp.eos_id()),
                                 unk_token=unk, pad_token=piece(sp.pad_id()) or piece(sp.eos_id()),
                                 add_bos_token=False, add_eos_token=False, clean_up_tokenization_spaces=False)
    user = [s for s in special if s not in (hf.bos_token, hf.eos_token, hf.unk_token, hf.pad_token)]
    hf.add_special_tokens({"additional_special_tokens": user}, replace_extra_special_tokens=True) \
        if _takes_replace(hf) else hf.add_special_tokens({"additional_special_tokens": user})
    if len(hf) != sp.get_piece_size():
        raise ConversionError(f"{model_file}: HF tokenizer has {len(hf)} tokens, SentencePiece {sp.get_piece_size()}")
    return hf


def _takes_replace(hf) -> bool:
    import inspect

    return "replace_extra_special_tokens" in inspect.signature(hf.add_special_tokens).parameters


def _lit(s: str) -> str:
    """A Jinja string literal of `s`."""
    return json.dumps(s)


def chat_template_jinja(name: str) -> str:
    """A Jinja ``chat_template`` rendering exactly what `data.chat_template` encodes for template `name`."""
    from megatron_sicog.data.chat_template import _SPECIAL, _TEXT, get_template

    tpl = get_template(name)
    if tpl.eod_after_reply:  # plain: texts back to back, eos after each reply
        return ("{%- for m in messages %}{{- m['content'] }}{%- if m['role'] == 'assistant' %}{{- eos_token }}"
                "{%- endif %}{%- endfor %}")
    opening = "".join(v for k, v in tpl.turn_open if k in (_SPECIAL, _TEXT))
    if opening.count("{role}") != 1:
        raise ConversionError(f"chat template {name!r}: turn opening {opening!r} has no single {{role}}")
    before, after = opening.split("{role}")
    close = "".join(v for k, v in tpl.turn_close)
    trim = " | trim" if tpl.strip_content else ""
    out = [f"{{%- set open_a = {_lit(before)} %}}{{%- set open_b = {_lit(after)} %}}{{%- set close = {_lit(close)} %}}",
           "".join(f"{{{{- {_lit(s)} }}}}" for s in tpl.begin), "{%- set msgs = messages %}"]
    if tpl.default_system is not None or tpl.system_prefix is not None:
        default = tpl.default_system if tpl.system_prefix is None else ""
        out.append("{%- if messages and messages[0]['role'] == 'system' %}"
                   f"{{%- set sys = messages[0]['content']{trim} %}}{{%- set msgs = messages[1:] %}}"
                   f"{{%- else %}}{{%- set sys = {_lit(default)} %}}{{%- endif %}}"
                   f"{{{{- open_a + 'system' + open_b + {_lit(tpl.system_prefix or '')} + sys + close }}}}")
    out.append(f"{{%- for m in msgs %}}{{{{- open_a + m['role'] + open_b + (m['content']{trim}) + close }}}}"
               "{%- endfor %}")
    out.append("{%- if add_generation_prompt %}{{- open_a + 'assistant' + open_b }}{%- endif %}")
    return "".join(out)


def write_processor_files(out: Path, tokenizer, args, chat_template: Optional[str]) -> list[str]:
    """Save tokenizer + image processor + LlavaProcessor config (+ chat template) into `out`; returns file names."""
    from transformers import LlavaNextProcessor, LlavaProcessor

    from megatron_sicog.data.image_processing import for_vision
    from megatron_sicog.data.tiling import tiling_for

    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tiling = tiling_for(args.vision)
    cls, image_processor = ((LlavaProcessor, for_vision(args.vision).hf_processor()) if tiling is None
                            else (LlavaNextProcessor, tiling.hf_processor()))
    proc = cls(image_processor=image_processor, tokenizer=tokenizer,
                          patch_size=args.vision.patch_size,
                          vision_feature_select_strategy=args.vision.feature_select,
                          num_additional_image_tokens=1 if args.vision.class_token else 0,
                          image_token=IMAGE_PLACEHOLDER, chat_template=chat_template)
    before = set(p.name for p in out.iterdir())
    proc.save_pretrained(str(out))
    if not (out / "preprocessor_config.json").is_file():
        proc.image_processor.save_pretrained(str(out))
    return sorted(set(p.name for p in out.iterdir()) - before)


def write_image_processor(out: Path, args) -> str:
    """Make ``out/preprocessor_config.json`` the processor `data.image_processing.for_vision` decides for
    `args`: a copied one that already parses to it is kept as it is, any other is replaced. Returns
    "kept", "written" or "replaced"."""
    from megatron_sicog.data.image_processing import ImageProcessing, ImageProcessorError, for_vision
    from megatron_sicog.data.tiling import processing_from_llava_next, tiling_for

    want, tiling = for_vision(args.vision), tiling_for(args.vision)
    path = out / "preprocessor_config.json"
    state = "written"
    if path.is_file():
        try:
            cfg = json.loads(path.read_text())
            if tiling is None and ImageProcessing.from_hf(cfg, args.vision.image_size) == want:
                return "kept"
            if tiling is not None and processing_from_llava_next(cfg, args.vision.image_size) == (
                    want, [list(p) for p in tiling.pinpoints]):
                return "kept"
        except (ImageProcessorError, ValueError):
            pass
        state = "replaced"
    (want if tiling is None else tiling).hf_processor().save_pretrained(str(out))
    return state
