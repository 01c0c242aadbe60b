"""The tokenizer layer every tool uses: Megatron's tokenizer type names, offline.

`build_tokenizer(tokenizer_type, tokenizer_model)` accepts Megatron-LM's
``--tokenizer-type`` names and returns a small object with one interface:

* ``vocab_size``, ``eod``, ``pad``, ``image_token_id`` (the single token
  ``<image>``), ``token_to_id(piece)`` (None when the piece is not ONE token),
* ``tokenize(text) -> list[int]``, ``tokenize_batch(texts) -> list[list[int]]``
  (one C++/Rust call for many texts: the converter's hot path),
  ``detokenize(ids) -> str``.

Types:

* ``SentencePieceTokenizer`` (aliases ``GPTSentencePieceTokenizer``,
  ``Llama2Tokenizer``): a ``.model`` file, through ``sentencepiece``.
* ``HuggingFaceTokenizer``: a ``tokenizer.json`` file, or a directory holding one
  (special tokens read from its ``tokenizer_config.json`` /
  ``special_tokens_map.json``), through ``tokenizers`` directly; a directory
  without ``tokenizer.json`` falls back to ``transformers.AutoTokenizer`` with
  ``local_files_only=True``. Nothing is ever downloaded. A HF tokenizer lacking
  ``<image>`` gets it added as a special token (``vocab_size`` grows by one, as
  LLaVA does).

These are thin wrappers rather than ``megatron.core.tokenizers`` because the
latter imports all of megatron-core (seconds per worker process) and adds no
batch-encode path.

`train_sentencepiece(...)` trains a byte-fallback BPE SentencePiece model whose
user-defined symbols are ``<image>`` and every special string of the chat
templates (each becomes ONE token), with identity normalisation and no dummy
prefix so ``detokenize(tokenize(t)) == t``. ``tools/train_tokenizer.py`` is its
command line; the tiny demo uses it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from ..guards import UsageError, debug_requested
from ..prompts import IMAGE_PLACEHOLDER

SENTENCEPIECE_TYPES = ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer")
HUGGINGFACE_TYPES = ("HuggingFaceTokenizer",)
TOKENIZER_TYPES = SENTENCEPIECE_TYPES + HUGGINGFACE_TYPES

# Names tried, in order, for the end-of-document token when a model does not say.
_EOD_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "<|im_end|>")
_PAD_CANDIDATES = ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>")


class _TokenizerBase:
    """Shared behaviour: the image token and the error it raises when missing."""

    name: str = ""

    def token_to_id(self, piece: str) -> Optional[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def image_token_id(self) -> int:
        tid = self.token_to_id(IMAGE_PLACEHOLDER)
        if tid is None:
            raise ValueError(
                f"tokenizer {self.name} has no single token for {IMAGE_PLACEHOLDER!r}; "
                "train one with tools/train_tokenizer.py (it adds the chat-template and "
                "image tokens) or use a HuggingFace tokenizer"
            )
        return tid

    def tokenize(self, text: str) -> list[int]:
        return self.tokenize_batch([text])[0]

    def _find(self, names: Iterable[str], what: str) -> int:
        """The id of the first of `names` that is one token."""
        for n in names:
            tid = self.token_to_id(n)
            if tid is not None:
                return tid
        raise ValueError(f"{self.name}: no {what} token (tried {list(names)})")

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:  # pragma: no cover
        raise NotImplementedError


class SentencePieceTokenizer(_TokenizerBase):
    """A SentencePiece ``.model``; eod is its eos, pad its pad (eod when absent)."""

    def __init__(self, model_file: Union[str, Path], num_threads: int = 1):
        import sentencepiece as spm

        self.name = str(model_file)
        if not Path(model_file).is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {model_file}")
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.num_threads = num_threads  # 1: a converter worker is one core
        self.vocab_size = int(self.sp.get_piece_size())
        eos = self.sp.eos_id()
        self.eod = int(eos) if eos >= 0 else self._find(_EOD_CANDIDATES, "eod")
        pad = self.sp.pad_id()
        self.pad = int(pad) if pad >= 0 else self.eod
        self.bos = int(self.sp.bos_id()) if self.sp.bos_id() >= 0 else None

    def token_to_id(self, piece: str) -> Optional[int]:
        tid = self.sp.piece_to_id(piece)
        if tid == self.sp.unk_id() and piece != self.sp.id_to_piece(tid):
            return None
        return int(tid)

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts), num_threads=self.num_threads)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])


def _special_from_config(path: Path) -> dict:
    """eos/pad/bos token strings from tokenizer_config.json + special_tokens_map.json."""
    out: dict = {}
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        f = path / fname
        if not f.is_file():
            continue
        try:
            cfg = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: invalid JSON: {e}") from e
        for key in ("eos_token", "pad_token", "bos_token"):
            val = cfg.get(key)
            if isinstance(val, dict):
                val = val.get("content")
            if isinstance(val, str):
                out[key] = val
    return out


class HuggingFaceTokenizer(_TokenizerBase):
    """A HF fast tokenizer (``tokenizer.json``) used through ``tokenizers``."""

    def __init__(self, model: Union[str, Path]):
        from tokenizers import AddedToken, Tokenizer

        path = Path(model)
        self.name = str(model)
        special: dict = {}
        if path.is_file():
            self.tok = Tokenizer.from_file(str(path))
        elif (path / "tokenizer.json").is_file():
            self.tok = Tokenizer.from_file(str(path / "tokenizer.json"))
            special = _special_from_config(path)
        elif path.is_dir():
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            if not hasattr(hf, "backend_tokenizer"):
                raise ValueError(f"{path}: not a fast tokenizer (no tokenizer.json could be built)")
            self.tok = hf.backend_tokenizer
            special = {k: getattr(hf, k) for k in ("eos_token", "pad_token", "bos_token") if getattr(hf, k, None)}
        else:
            raise FileNotFoundError(f"HuggingFace tokenizer not found: {model}")
        self.tok.no_padding()
        self.tok.no_truncation()
        if self.tok.token_to_id(IMAGE_PLACEHOLDER) is None:
            self.tok.add_special_tokens([AddedToken(IMAGE_PLACEHOLDER, special=True, normalized=False)])
        self.vocab_size = int(self.tok.get_vocab_size(with_added_tokens=True))
        eos = special.get("eos_token")
        self.eod = self.token_to_id(eos) if eos else None
        if self.eod is None:
            self.eod = self._find(_EOD_CANDIDATES, "eod")
        pad = special.get("pad_token")
        pad_id = self.token_to_id(pad) if pad else None
        if pad_id is None:
            pad_id = next((t for t in map(self.token_to_id, _PAD_CANDIDATES) if t is not None), None)
        self.pad = self.eod if pad_id is None else pad_id
        bos = special.get("bos_token")
        self.bos = self.token_to_id(bos) if bos else None

    def token_to_id(self, piece: str) -> Optional[int]:
        tid = self.tok.token_to_id(piece)
        return None if tid is None else int(tid)

    def tokenize(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # encode_batch_fast skips the character offsets nobody here needs
        encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


Tokenizer = Union[SentencePieceTokenizer, HuggingFaceTokenizer]


def build_tokenizer(tokenizer_type: str, tokenizer_model: Union[str, Path]) -> Tokenizer:
    """The tokenizer for Megatron's ``--tokenizer-type`` / ``--tokenizer-model``."""
    if tokenizer_model is None:
        raise ValueError(f"--tokenizer-model is required for --tokenizer-type {tokenizer_type}")
    if tokenizer_type not in SENTENCEPIECE_TYPES + HUGGINGFACE_TYPES:
        raise ValueError(f"unsupported --tokenizer-type {tokenizer_type!r}; expected one of {list(TOKENIZER_TYPES)}")
    if not Path(tokenizer_model).exists():
        raise UsageError(f"--tokenizer-model {tokenizer_model}: no such file or directory")
    try:
        if tokenizer_type in SENTENCEPIECE_TYPES:
            return SentencePieceTokenizer(tokenizer_model)
        # worker processes each run one tokenizer: keep Rust's pool from oversubscribing
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return HuggingFaceTokenizer(tokenizer_model)
    except Exception as e:  # noqa: BLE001 - sentencepiece / tokenizers / transformers raise many kinds
        if debug_requested():
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--tokenizer-model {tokenizer_model} is not a {tokenizer_type} model ({reason})") from None


def default_user_symbols() -> list[str]:
    """``<image>`` and every special string of every chat template, each one token."""
    from .chat_template import TEMPLATES

    out = [IMAGE_PLACEHOLDER]
    for tpl in TEMPLATES.values():
        for s in tpl.special_strings():
            if s not in out:
                out.append(s)
    return out


def train_sentencepiece(
    texts_or_file: Union[str, Path, Iterable[str]],
    model_prefix: Union[str, Path],
    vocab_size: int,
    model_type: str = "bpe",
    user_defined_symbols: Optional[Sequence[str]] = None,
    character_coverage: float = 1.0,
    input_sentence_size: int = 0,
    num_threads: int = 1,
) -> Path:
    """Train a SentencePiece model; returns ``<model_prefix>.model``.

    `texts_or_file` is a text file (one sentence per line) or an iterable of
    strings. ``<image>`` and the chat-template specials are always user-defined
    symbols (plus `user_defined_symbols`). ``<unk>``=0, ``<s>``=1, ``</s>``=2
    (eod), ``<pad>``=3. The model is written atomically.
    """
    import sentencepiece as spm

    from ..io import atomic_path

    symbols = default_user_symbols()
    for s in user_defined_symbols or ():
        if s not in symbols:
            symbols.append(s)
    model_prefix = Path(model_prefix)
    kwargs = dict(
        model_type=model_type,
        vocab_size=int(vocab_size),
        user_defined_symbols=symbols,
        character_coverage=character_coverage,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        hard_vocab_limit=False,
        num_threads=num_threads,
        minloglevel=2,
    )
    if input_sentence_size:
        kwargs.update(input_sentence_size=input_sentence_size, shuffle_input_sentence=True)
    out = model_prefix.with_name(model_prefix.name + ".model")
    with atomic_path(out) as tmp:
        tmp_prefix = str(tmp)[: -len(".tmp")] if str(tmp).endswith(".tmp") else str(tmp)
        if isinstance(texts_or_file, (str, Path)) and Path(texts_or_file).is_file():
            kwargs["input"] = str(texts_or_file)
        else:
            # newlines inside a text would split it into sentences: keep each line whole
            kwargs["sentence_iterator"] = (
                line for t in texts_or_file for line in t.split("\n") if line
            )
        spm.SentencePieceTrainer.train(model_prefix=tmp_prefix, **kwargs)
        os.replace(tmp_prefix + ".model", tmp)
        vocab_tmp = tmp_prefix + ".vocab"
        if os.path.exists(vocab_tmp):
            os.replace(vocab_tmp, model_prefix.with_name(model_prefix.name + ".vocab"))
    return out
