"""LLaVA records -> prompts -> candidate records (SICOG stage 2), in process.

`generate_candidates(model, tokenizer, records, options)` yields, batch by
batch, one candidate record per input (its format: `megatron_sicog.records`).
``provenance`` is `records.generation_provenance` (``options.checkpoint`` names
the weights).

* ``options.mode`` (cod | caption | cot | answer) picks the human turn from
  `megatron_sicog.prompts.build_prompt`; cot/answer need a question: the
  record's ``question`` field, or its first human turn without ``<image>``.
* ``reference`` is the record's ``answer`` field or its first gpt turn, when present.
* The prompt is the chat template's encoding of that one human turn plus the
  assistant prefix (`data.chat_template.encode_prompt`); candidates end at the
  template's stop tokens.
* Bad input never stops the run: an unreadable record, a missing id, a missing
  or unreadable image, a missing question, a duplicate id, or a prompt longer
  than the context is passed to ``on_error({"file", "line", "id", "reason"})`` and skipped.
* Images are preprocessed as the checkpoint's model trains on them (`image_inputs`): one view
  per image, or for a tiled model (``vision.image_grid_pinpoints``, `data.tiling`) the base view
  and grid of tiles the batch builder makes, with each image's size.
* Records are prepared a window at a time (``micro_batch_size * sort_window``),
  sorted by prompt length inside the window and batched, so a batch pads little.

`greedy_answer(model, tokenizer, items, ...)` is the evaluation entry: one
temperature-0 response per ``{"prompt", "image"? | "images"?}`` item, in order
(`iter_greedy_answers` yields them batch by batch, for resumable runs).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from megatron_sicog.data.image_processing import for_vision
from megatron_sicog.data.tiling import tiling_for
from megatron_sicog.generation.engine import Engine, Prompt, expanded_ids
from megatron_sicog.generation.sampling import GREEDY, SamplingParams
from megatron_sicog.guards import confined_path
from megatron_sicog.io import RecordError
from megatron_sicog.records import PROVENANCE_KEY, error_record, generation_provenance, split_where
from megatron_sicog.prompts import IMAGE_PLACEHOLDER, MODE_TASK, PROMPTS, build_prompt

ErrorSink = Callable[[dict], None]


@dataclass
class CandidateOptions:
    mode: str = "cod"
    num_candidates: int = 6  # the paper's N
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.7, top_p=0.9))
    max_new_tokens: int = 512
    seed: int = 1234
    chat_template: str = "qwen2"
    image_root: Optional[Union[str, Path]] = None
    allow_outside_image_root: bool = False  # image paths may be absolute or leave image_root
    micro_batch_size: int = 8  # prompts per batch (rows = prompts x candidates)
    sort_window: int = 8  # batches prepared together and sorted by length
    checkpoint: Optional[dict] = None  # records.checkpoint_provenance of the weights (None: unknown)

    def __post_init__(self):
        if self.mode not in MODE_TASK:
            raise ValueError(f"unknown --mode {self.mode!r}; expected one of {sorted(MODE_TASK)}")
        for name in ("num_candidates", "max_new_tokens", "micro_batch_size", "sort_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Item:
    """A prepared prompt: the record's fields plus token ids and the preprocessed image."""

    id: str
    where: str
    image: Optional[Union[str, list]]
    prompt: str
    tokens: list[int]
    images: Optional[torch.Tensor]
    reference: Optional[str] = None
    image_sizes: Optional[torch.Tensor] = None  # [k, 2] (height, width): tiled models only


@dataclass
class BatchResult:
    records: list[dict]
    num_tokens: int  # generated tokens, all candidates


class InputError(ValueError):
    pass


_ENGINES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def engine_for(model, pad_id: int = 0) -> Engine:
    """One Engine per model (built lazily, reused across calls)."""
    eng = _ENGINES.get(model)
    if eng is None or eng.pad_id != pad_id:
        eng = Engine(model, pad_id=pad_id if pad_id != model.image_token_id else 0)
        _ENGINES[model] = eng
    return eng


def record_question(rec: dict) -> Optional[str]:
    """The ``question`` field, or the first human turn without the image placeholder."""
    q = rec.get("question")
    if isinstance(q, str) and q.strip():
        return q.strip()
    for turn in rec.get("conversations") or ():
        if isinstance(turn, dict) and turn.get("from") in ("human", "user") and isinstance(turn.get("value"), str):
            text = turn["value"].replace(IMAGE_PLACEHOLDER, "").strip()
            return text or None
    return None


def record_reference(rec: dict) -> Optional[str]:
    ans = rec.get("answer")
    if isinstance(ans, str):
        return ans
    for turn in rec.get("conversations") or ():
        if isinstance(turn, dict) and turn.get("from") in ("gpt", "assistant") and isinstance(turn.get("value"), str):
            return turn["value"]
    return None


def image_inputs(vision) -> Callable[[Sequence], tuple]:
    """HxWx3 uint8 arrays -> (pixels, image_sizes) as a model of these `VisionArgs` takes them: a tiled
    model's views [sum of views, 3, S, S] and sizes [k, 2] (`data.tiling.tiling_for`, the tiling the
    batch builder trains with), else one view per image [k, 3, S, S] (`for_vision`) and None."""
    tiling = tiling_for(vision)
    if tiling is not None:
        return tiling
    processing = for_vision(vision)
    return lambda arrays: (processing(arrays), None)


def load_images(paths: Sequence[str], image_root: Optional[Union[str, Path]], processing,
                allow_outside: bool = False) -> tuple:
    """(pixels, image_sizes) of the image files by `processing` (`image_inputs`); ValueError
    naming a missing/unreadable file or a path that leaves `image_root`."""
    from megatron_sicog.data.image import load_image

    arrays = []
    for p in paths:
        full = confined_path(image_root, p, allow_outside)
        arrays.append(np.asarray(load_image(full), dtype=np.uint8))
    return processing(arrays)


def prepare_item(rec: dict, where: str, options: CandidateOptions, tokenizer, model) -> Item:
    """Record -> Item, or InputError with the reason."""
    from megatron_sicog.data.chat_template import encode_prompt

    rid = rec.get("id")
    if rid is None or (isinstance(rid, str) and not rid.strip()):
        raise InputError("record has no 'id'")
    rid = str(rid)
    image = rec.get("image")
    paths = [image] if isinstance(image, str) else list(image) if isinstance(image, list) else []
    if image is not None and (not paths or not all(isinstance(p, str) and p for p in paths)):
        raise InputError(f"'image' must be a path or a list of paths, got {image!r}")
    if MODE_TASK[options.mode] == "caption" and not paths:
        raise InputError(f"mode {options.mode} describes an image, and the record has no 'image'")
    question = None
    if options.mode in ("cot", "answer"):
        question = record_question(rec)
        if not question:
            raise InputError(f"mode {options.mode} needs a question ('question' field or a human turn)")
    prompt = build_prompt(options.mode, question, with_image=bool(paths))
    if len(paths) > 1:  # one placeholder per image
        prompt = IMAGE_PLACEHOLDER * (len(paths) - 1) + prompt
    try:
        tokens = encode_prompt(tokenizer, [{"from": "human", "value": prompt}], options.chat_template)
    except ValueError as e:
        raise InputError(f"cannot encode the prompt: {e}") from None
    images = sizes = None
    if paths:
        try:
            images, sizes = load_images(paths, options.image_root, image_inputs(model.args.vision),
                                        options.allow_outside_image_root)
        except ValueError as e:
            raise InputError(str(e)) from None
    n_expanded = len(expanded_ids(model, Prompt(tokens, images, rid, sizes)))
    context = model.args.language.max_position_embeddings
    if n_expanded >= context:
        raise InputError(f"prompt has {n_expanded} tokens (images expanded), the context is {context}")
    return Item(rid, where, image, prompt, tokens, images, record_reference(rec), sizes)


def _normalise(records: Iterable) -> Iterator[tuple[str, Union[dict, RecordError]]]:
    """Accept dicts, RecordErrors, or (where, record) pairs (e.g. from io.iter_records with a path)."""
    for i, r in enumerate(records, start=1):
        if isinstance(r, tuple) and len(r) == 2:
            yield str(r[0]), r[1]
        elif isinstance(r, RecordError):
            yield f"{r.path}:{r.line}", r
        else:
            yield f"record {i}", r


def _windows(records: Iterable, options: CandidateOptions, tokenizer, model,
             on_error: ErrorSink) -> Iterator[list[Item]]:
    size = options.micro_batch_size * options.sort_window
    seen: set[str] = set()
    window: list[Item] = []
    for where, rec in _normalise(records):
        if isinstance(rec, RecordError):
            on_error(error_record(*split_where(where), None, rec.reason))
            continue
        if not isinstance(rec, dict):
            on_error(error_record(*split_where(where), None, f"record is {type(rec).__name__}, not an object"))
            continue
        try:
            item = prepare_item(rec, where, options, tokenizer, model)
        except InputError as e:
            on_error(error_record(*split_where(where), rec.get("id"), str(e)))
            continue
        if item.id in seen:
            on_error(error_record(*split_where(where), item.id, "duplicate id (first occurrence kept)"))
            continue
        seen.add(item.id)
        window.append(item)
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


def _batches(window: list[Item], micro_batch_size: int) -> Iterator[list[Item]]:
    window = sorted(window, key=lambda it: len(it.tokens))
    for i in range(0, len(window), micro_batch_size):
        yield window[i:i + micro_batch_size]


def generate_candidates(model, tokenizer, records: Iterable, options: Optional[CandidateOptions] = None,
                        on_error: Optional[ErrorSink] = None) -> Iterator[BatchResult]:
    """Yield candidate records batch by batch (see the module docstring)."""
    from megatron_sicog.data.chat_template import stop_token_ids

    options = options or CandidateOptions()
    errors: ErrorSink = on_error or (lambda e: None)
    engine = engine_for(model, tokenizer.pad)
    stops = stop_token_ids(tokenizer, options.chat_template)
    task = MODE_TASK[options.mode]
    sp = options.sampling
    prov = generation_provenance(options.checkpoint, mode=options.mode, prompt_template=PROMPTS[options.mode],
                                 chat_template=options.chat_template, temperature=sp.temperature,
                                 top_p=sp.top_p, top_k=sp.top_k, max_new_tokens=options.max_new_tokens,
                                 num_candidates=options.num_candidates, seed=options.seed)
    for window in _windows(records, options, tokenizer, model, errors):
        for batch in _batches(window, options.micro_batch_size):
            prompts = [Prompt(it.tokens, it.images, key=it.id, image_sizes=it.image_sizes) for it in batch]
            out = engine.generate(prompts, options.sampling, num_candidates=options.num_candidates,
                                  max_new_tokens=options.max_new_tokens, stop_token_ids=stops, seed=options.seed)
            recs = []
            for it, cands in zip(batch, out.tokens):
                rec = {"id": it.id, "image": it.image, "task": task, "prompt": it.prompt,
                       "candidates": [tokenizer.detokenize(c) for c in cands]}
                if it.reference is not None:
                    rec["reference"] = it.reference
                rec[PROVENANCE_KEY] = prov
                recs.append(rec)
            yield BatchResult(recs, out.num_generated)


def iter_greedy_answers(model, tokenizer, items: Sequence[dict], chat_template: str = "qwen2",
                        image_root: Optional[Union[str, Path]] = None, max_new_tokens: int = 256,
                        micro_batch_size: int = 8, sort_window: int = 8) -> Iterator[list[tuple[int, str]]]:
    """Greedy (temperature 0) responses, yielded batch by batch as ``[(item position, text), ...]``.

    An item is ``{"prompt": human turn text, "image"?: path, "images"?: [HxWx3 arrays or
    zero-argument callables returning one], "id"?}``. The prompt holds one ``<image>`` per
    image (one is prepended when it has none and an image is given). Items are tokenised
    a window (``micro_batch_size * sort_window``) at a time and sorted by length inside it;
    images are decoded per batch, so a large benchmark is never held decoded in memory.
    Errors (missing image, prompt too long) raise ValueError naming the item: evaluation
    must not silently skip.
    """
    from megatron_sicog.data.chat_template import encode_prompt, stop_token_ids
    engine = engine_for(model, tokenizer.pad)
    stops = stop_token_ids(tokenizer, chat_template)
    processing = image_inputs(model.args.vision)

    def images_of(it: dict) -> tuple:
        """(pixels, image_sizes) of the item's images; (None, None) without."""
        if it.get("images"):
            return processing([im() if callable(im) else im for im in it["images"]])
        if it.get("image") is not None:
            return load_images([it["image"]], image_root, processing)
        return None, None

    window = max(1, micro_batch_size * sort_window)
    for w0 in range(0, len(items), window):
        tokens = {}
        for i in range(w0, min(w0 + window, len(items))):
            it = items[i]
            text = it["prompt"]
            if (it.get("images") or it.get("image") is not None) and IMAGE_PLACEHOLDER not in text:
                text = f"{IMAGE_PLACEHOLDER}\n{text}"
            tokens[i] = encode_prompt(tokenizer, [{"from": "human", "value": text}], chat_template)
        order = sorted(tokens, key=lambda i: len(tokens[i]))
        for s in range(0, len(order), micro_batch_size):
            idx = order[s:s + micro_batch_size]
            prompts = []
            for i in idx:
                pixels, sizes = images_of(items[i])
                prompts.append(Prompt(tokens[i], pixels, key=str(items[i].get("id", i)), image_sizes=sizes))
            out = engine.generate(prompts, GREEDY, num_candidates=1, max_new_tokens=max_new_tokens,
                                  stop_token_ids=stops)
            yield [(i, tokenizer.detokenize(c[0])) for i, c in zip(idx, out.tokens)]


def greedy_answer(model, tokenizer, items: Sequence[dict], chat_template: str = "qwen2",
                  image_root: Optional[Union[str, Path]] = None, max_new_tokens: int = 256,
                  micro_batch_size: int = 8) -> list[str]:
    """One greedy response per item, in order (`iter_greedy_answers` collected)."""
    answers: list[Optional[str]] = [None] * len(items)
    for batch in iter_greedy_answers(model, tokenizer, items, chat_template, image_root, max_new_tokens,
                                     micro_batch_size):
        for i, text in batch:
            answers[i] = text
    return answers  # type: ignore[return-value]
