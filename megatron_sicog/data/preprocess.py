"""Records -> samples: the engine behind ``tools/preprocess_data.py``.

Input records (JSONL or a JSON list, see `megatron_sicog.io.iter_records`; the formats are
`megatron_sicog.records`):

* LLaVA conversations and curated records (multi-turn, text-only or with one
  image path / a list of paths relative to ``image_root``; the number of images
  must equal the number of ``<image>`` placeholders in human turns) -> chat
  template, loss on assistant replies;
* plain documents (pre-training text) -> tokens + eod, loss on all of them;
* with ``preference=True`` only preference pairs (``conversations``: the turns
  up to the last human turn; the string ``chosen`` and ``rejected`` replies;
  from ``tools/curate.py --preference-output``) -> TWO documents, the prompt with the
  chosen reply then the prompt with the rejected reply (loss on the reply; the
  image stored in both), written or skipped together: document 2i is pair i's
  chosen side, 2i+1 its rejected side (`data.preference.PreferencePairs` reads
  them back for DPO).

Work is split in chunks of raw lines; each worker process parses, loads and
checks images, tokenises the whole chunk with ONE batched tokenizer call and
returns the chunk as a single flat array of items (see `indexed` for the
layout), which the main process appends with one write. Chunks are kept in
input order, so the output does not depend on ``--workers``.

A record that cannot be converted (malformed JSON, unknown shape, missing or
unreadable image, no assistant turn, over-long under ``overlong="drop"``) is
returned as an error record (`megatron_sicog.records.error_record`); the
caller decides whether to skip or stop.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from ..guards import UsageError, confined_path
from ..io import RecordError, iter_records, loads
from ..records import error_record
from .chat_template import _IMAGE, plan_conversation, plan_text, encode_plans_spans
from .image import encode_image_bytes
from .image_processing import ImageProcessing
from .length import expanded_length, fit_prefix
from .indexed import MODE_IMAGE, MODE_TEXT, max_tokens_for, pack_bytes, token_dtype
from .tokenizer import build_tokenizer


@dataclass
class ConvertConfig:
    """Everything a worker needs to turn a record into a sample."""

    tokenizer_type: str
    tokenizer_model: str
    chat_template: str = "qwen2"
    system: Optional[str] = None
    image_root: Optional[str] = None
    allow_outside_image_root: bool = False  # image paths may be absolute or leave image_root
    # None: keep the source bytes; else store the uint8 view this processor makes (PPM), see `stored_processing`
    image_processing: Optional[ImageProcessing] = None
    seq_length: Optional[int] = None
    overlong: str = "truncate"         # or "drop"
    image_seq_length: int = 1          # tokens one image occupies after the trainer expands it
    tiling: Optional[object] = None    # data.tiling.Tiling: an image occupies tiling.num_tokens(h, w) instead
    preference: bool = False           # records are chosen/rejected pairs: two documents each
    vocab_size: int = 0                # filled by `prepare`
    dtype: type = field(default=np.int32)


@dataclass
class ChunkResult:
    """One converted chunk: items of all its samples, flat, plus errors and counts."""

    flat: np.ndarray
    item_lengths: np.ndarray
    item_modes: np.ndarray
    items_per_doc: np.ndarray
    errors: list
    records: int
    tokens: int
    images: int
    truncated: int
    nbytes_in: int


class RecordSkip(Exception):
    """A record that cannot be converted; the message is the reason."""


_WORKER: dict = {}


def prepare(cfg: ConvertConfig) -> ConvertConfig:
    """Check the tokenizer and fill vocab size and dtype (in the main process)."""
    tok = build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
    cfg.vocab_size = tok.vocab_size
    cfg.dtype = token_dtype(tok.vocab_size)
    if cfg.overlong not in ("truncate", "drop"):
        raise ValueError(f"--overlong must be truncate or drop, not {cfg.overlong!r}")
    if cfg.image_seq_length < 1:
        raise ValueError(f"--image-seq-length must be >= 1, got {cfg.image_seq_length}")
    if cfg.seq_length is not None and cfg.seq_length < 1:
        raise ValueError(f"--seq-length must be positive, got {cfg.seq_length}")
    _WORKER.clear()
    _WORKER.update(cfg=cfg, tok=tok)
    return cfg


def init_worker(cfg: ConvertConfig) -> None:
    """One tokenizer per worker (reused when forked from `prepare`'s process)."""
    if _WORKER.get("cfg") is not cfg:
        _WORKER.update(cfg=cfg, tok=build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model))


def init_pool_worker(cfg: ConvertConfig) -> None:
    """Pool initializer: signals are the main process's job (it cleans up and stops the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    init_worker(cfg)


def _load_image_bytes(cfg: ConvertConfig, rel: str) -> bytes:
    from PIL import Image

    try:
        path = confined_path(cfg.image_root, rel, cfg.allow_outside_image_root)
    except ValueError as e:
        raise RecordSkip(str(e)) from None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RecordSkip(f"missing image {path}: {e.strerror}") from None
    try:
        import io

        with Image.open(io.BytesIO(data)) as im:
            im.load()  # full decode: a truncated file fails here, not in training
            if cfg.image_processing is None:
                return data
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Image.UnidentifiedImageError:
        raise RecordSkip(f"unreadable image {path}: not a recognised image format") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds
        raise RecordSkip(f"unreadable image {path}: {type(e).__name__}: {e}") from None
    return encode_image_bytes(cfg.image_processing.pixels_uint8(arr), "PPM")


def stored_processing(spec: str, image_size: Optional[int] = None) -> ImageProcessing:
    """The processor whose pixels ``--image-size`` stores: `spec` is a checkpoint of this project (its model's
    processor: recorded, padded or its family's; `data.image_processing.for_vision`) or a family name
    (``clip`` / ``siglip``, the family's processor at `image_size`).

    Stored are the uint8 pixels after the processor's pad / resize / crop, before rescale and normalisation;
    the trainer's processor leaves them unchanged (`ImageProcessing.keeps_its_output`), so a non-square image
    trains on the pixels the HF processor gives its source. Refused (UsageError): a processor that would
    change its own output, a size other than `image_size`, a tiling model (its tiles need the whole image).
    """
    from pathlib import Path

    if spec in ("clip", "siglip"):
        if image_size is None:
            raise UsageError(f"--image-processor {spec} needs --image-size")
        proc = ImageProcessing.family_default(spec, image_size)
    elif Path(spec).is_dir():
        from ..training.checkpointing import model_args_from_dict, read_meta
        from .image_processing import for_vision
        from .tiling import tiling_for

        vision = model_args_from_dict(read_meta(spec)["model_args"]).vision
        if tiling_for(vision) is not None:
            raise UsageError(f"--image-processor {spec}: the model tiles its images (image_grid_pinpoints); the "
                             "tiles need the whole image: store the source bytes (no --image-size)")
        proc = for_vision(vision)
    else:
        raise UsageError(f"--image-processor {spec}: neither clip, siglip nor a checkpoint directory")
    if image_size is not None and proc.output_size != (image_size, image_size):
        raise UsageError(f"--image-size {image_size}, but the processor of {spec} gives {proc.output_size[0]}x"
                         f"{proc.output_size[1]} pixels")
    if not proc.keeps_its_output:
        raise UsageError(f"--image-processor {spec}: its processor (size={dict(proc.size)!r}) would "
                                  "resize its own output again; store the source bytes (no --image-size)")
    return proc


def checkpoint_tiling(path: str):
    """The `data.tiling.Tiling` of a checkpoint's model (UsageError when it takes one view per image)."""
    from ..training.checkpointing import model_args_from_dict, read_meta
    from .tiling import tiling_for

    tiling = tiling_for(model_args_from_dict(read_meta(path)["model_args"]).vision)
    if tiling is None:
        raise UsageError(f"--tiling-checkpoint {path}: its model does not tile images (no image_grid_pinpoints)")
    return tiling


def _preference_turns(rec: dict) -> list[list[dict]]:
    """The chosen and the rejected conversation of a preference pair: prompt turns + the reply."""
    if not isinstance(rec.get("chosen"), str) or not isinstance(rec.get("rejected"), str):
        raise RecordSkip("a preference record needs string 'chosen' and 'rejected'")
    turns = rec.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RecordSkip("a preference record needs a non-empty 'conversations' list (the prompt)")
    last_human = max((i for i, t in enumerate(turns) if isinstance(t, dict) and t.get("from") != "gpt"),
                     default=None)
    if last_human is None:
        raise RecordSkip("a preference record's 'conversations' has no human turn")
    prompt = turns[:last_human + 1]
    return [prompt + [{"from": "gpt", "value": rec[side]}] for side in ("chosen", "rejected")]


def _plans(cfg: ConvertConfig, rec: dict) -> list:
    """The documents of a record: [(plan, image bytes)] (two for a preference pair), or RecordSkip."""
    if cfg.preference:
        sides = _preference_turns(rec)
        chosen, images = _plan(cfg, {**rec, "conversations": sides[0]})  # images loaded and checked once
        rejected, _ = _plan(cfg, {**rec, "conversations": sides[1]}, load=False)
        return [(chosen, images), (rejected, images)]
    return [_plan(cfg, rec)]


def _plan(cfg: ConvertConfig, rec: dict, load: bool = True):
    """(plan, image bytes) of a record, or RecordSkip."""
    try:
        if "conversations" in rec:
            plan = plan_conversation(rec["conversations"], cfg.chat_template, cfg.system)
        elif isinstance(rec.get("text"), str):
            plan = plan_text(rec["text"])
        else:
            raise RecordSkip("record has neither 'conversations' nor a string 'text'")
    except ValueError as e:
        raise RecordSkip(str(e)) from None
    image = rec.get("image")
    paths = [] if image is None else image if isinstance(image, list) else [image]
    n_placeholders = sum(1 for kind, _, _ in plan if kind == _IMAGE)
    if n_placeholders != len(paths):
        raise RecordSkip(f"record has {len(paths)} image(s) but {n_placeholders} <image> placeholder(s)")
    return plan, [_load_image_bytes(cfg, p) for p in paths] if load else []


_LIMITS: dict = {}


def _dtype_limit(dtype) -> int:
    if dtype not in _LIMITS:  # np.dtype comparisons cost ~30 us: once per dtype
        _LIMITS[dtype] = max_tokens_for(dtype)
    return _LIMITS[dtype]


def _fit(cfg: ConvertConfig, ids: list, spans: list, images: list, image_id: Optional[int]):
    """Apply --seq-length / the dtype limit; returns (ids, spans, images, truncated)."""
    limit = _dtype_limit(cfg.dtype)
    per_image = cfg.image_seq_length if cfg.tiling is None else cfg.tiling.tokens_of(images)
    length = (expanded_length(len(ids), len(images), cfg.image_seq_length) if cfg.tiling is None
              else len(ids) + sum(per_image) - len(images))
    if cfg.seq_length is not None:
        limit = min(limit, cfg.seq_length)
    if length <= limit:
        return ids, spans, images, False
    if cfg.overlong == "drop" or cfg.seq_length is None:
        raise RecordSkip(f"over-long: {length} tokens > limit {limit}")
    keep, n_img = fit_prefix(ids, limit, image_id if images else None, per_image)
    ids = ids[:keep]
    spans = [(s, min(e, keep)) for s, e in spans if s < keep]
    if not spans:
        raise RecordSkip(f"over-long: no assistant token left after truncation to {limit} tokens")
    return ids, spans, images[:n_img], True


def _append_doc(ints: list, arrays: list, lengths: list, modes: list, per_doc: list, ids, spans, images, dtype):
    """Add one document's items; returns (the open int run, its token count)."""
    ints += ids
    for s, e in spans:
        ints += (s, e)
    lengths += (len(ids), 2 * len(spans))
    modes += (MODE_TEXT, MODE_TEXT)
    if images:
        arrays.append(np.array(ints, dtype=dtype))
        ints = []
        for b in images:
            packed = pack_bytes(b, dtype)
            arrays.append(packed)
            lengths.append(packed.size)
            modes.append(MODE_IMAGE)
    per_doc.append(2 + len(images))
    return ints, len(ids)


def convert_chunk(task: tuple) -> ChunkResult:
    """Convert one chunk ``(path, [(line, raw bytes | record | RecordError)], nbytes)``."""
    path, items, nbytes = task
    cfg: ConvertConfig = _WORKER["cfg"]
    tok = _WORKER["tok"]
    errors, plans, meta = [], [], []
    for line, raw in items:
        rec = raw
        if isinstance(raw, (bytes, str)):
            try:
                rec = loads(raw)
            except Exception as e:  # noqa: BLE001
                errors.append(error_record(path, line, None, f"malformed JSON: {e}"))
                continue
        if isinstance(rec, RecordError):
            errors.append(rec.as_dict())
            continue
        if not isinstance(rec, dict):
            errors.append(error_record(path, line, None, f"record is {type(rec).__name__}, not an object"))
            continue
        try:
            docs = _plans(cfg, rec)
        except RecordSkip as e:
            errors.append(error_record(path, line, rec.get("id"), str(e)))
            continue
        plans += [plan for plan, _ in docs]
        meta.append((line, rec.get("id"), [images for _, images in docs]))

    encoded = iter(encode_plans_spans(tok, plans) if plans else [])
    image_id = None
    # token and span numbers go into one Python list, turned into an array once
    # per run of text items (only images break the run): few numpy calls per chunk
    arrays, ints, lengths, modes, per_doc = [], [], [], [], []
    tokens = n_images = truncated = 0
    dtype = cfg.dtype
    for line, rid, doc_images in meta:
        docs, reason = [], None
        for images in doc_images:  # every document of the record, or none of them
            ids, spans = next(encoded)
            if images and image_id is None:
                image_id = tok.image_token_id
            try:
                docs.append(_fit(cfg, ids, spans, images, image_id))
            except RecordSkip as e:
                reason = reason or str(e)
        if reason is not None:
            errors.append(error_record(path, line, rid, reason))
            continue
        for ids, spans, images, cut in docs:
            truncated += cut
            ints, n_tok = _append_doc(ints, arrays, lengths, modes, per_doc, ids, spans, images, dtype)
            tokens += n_tok
            n_images += len(images)
    if ints:
        arrays.append(np.array(ints, dtype=dtype))
    errors.sort(key=lambda e: e["line"])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)
    return ChunkResult(flat, np.asarray(lengths, dtype=np.int64), np.asarray(modes, dtype=np.int8),
                       np.asarray(per_doc, dtype=np.int64), errors, len(items), tokens, n_images,
                       truncated, nbytes)


def _is_json_list(path: Union[str, Path]) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    return head[:1] == b"["


def shard_byte_range(size: int, shard_index: int, num_shards: int) -> tuple[int, int]:
    return size * shard_index // num_shards, size * (shard_index + 1) // num_shards


def input_chunks(path: Union[str, Path], chunk_size: int, shard_index: int = 0,
                 num_shards: int = 1) -> Iterator[tuple]:
    """Chunks ``(path, [(line, raw)], nbytes)`` of this shard's records, in file order.

    JSONL: shard k holds the lines that START in bytes ``[k*S/n, (k+1)*S/n)``
    (so merged shards keep the input order); line numbers are file lines.
    JSON list: shard k holds a contiguous range of list indices.
    """
    path = str(path)
    size = os.path.getsize(path)
    if _is_json_list(path):
        records = list(iter_records(path))
        lo, hi = shard_byte_range(len(records), shard_index, num_shards)
        per = max(1, size // max(1, len(records)))
        for i in range(lo, hi, chunk_size):
            part = records[i:min(hi, i + chunk_size)]
            yield path, part, per * len(part)
        return
    start, end = shard_byte_range(size, shard_index, num_shards)
    with open(path, "rb") as f:
        lineno = 0
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()  # the line that began before our range belongs to the previous shard
            start = f.tell()
            # count the lines before our range (fast: raw byte counting)
            f.seek(0)
            remaining = start
            while remaining:
                block = f.read(min(remaining, 1 << 24))
                lineno += block.count(b"\n")
                remaining -= len(block)
        pos = start
        chunk, nbytes = [], 0
        while pos < end:
            line = f.readline()
            if not line:
                break
            pos += len(line)
            lineno += 1
            nbytes += len(line)
            if line.strip():
                chunk.append((lineno, line))
            if len(chunk) >= chunk_size:
                yield path, chunk, nbytes
                chunk, nbytes = [], 0
        if chunk or nbytes:
            yield path, chunk, nbytes


def shard_input_bytes(paths, shard_index: int, num_shards: int) -> int:
    total = 0
    for p in paths:
        lo, hi = shard_byte_range(os.path.getsize(p), shard_index, num_shards)
        total += hi - lo
    return total
