"""Benchmark-format exports of the synthetic held-out split (made from its scene graphs).

`export_benchmarks(eval_path, image_root, out_dir, num_images, seed)` writes

* ``MMBench_tiny.tsv`` — VLMEvalKit's multiple-choice TSV with CircularEval
  rotations: per image a colour question ("What colour is the circle?", the
  true colour and three others) and a count question ("How many shapes are
  there?", one to four), each in four rotations (``index`` + k x 1,000,000,
  the options shifted by k); categories ``colour`` / ``count``, l2-category
  ``attribute`` / ``instance``; images as base64 PNG.
* ``POPE_tiny.jsonl`` — POPE's yes/no rows: per image and per category one
  question about a present shape (yes) and one about an absent shape (no),
  "Is there a {shape} in the image?"; the absent shape is, as in POPE,
  ``random`` (any absent shape), ``popular`` (the absent shape most frequent in
  the split) or ``adversarial`` (the absent shape that co-occurs most often
  with the present ones). Images are the split's files, relative to the image root.

Both are read by `tools/evaluate_benchmarks.py` with the names ``MMBench_tiny``
and ``POPE_tiny`` (their prefixes pick the formats).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Union

import numpy as np

from megatron_sicog.evaluation.benchmarks.export import MCQ_COLUMNS, image_base64, write_tsv
from megatron_sicog.io import RecordError, iter_records, write_jsonl_atomic

from . import vocab

STRIDE = 1_000_000
LETTERS = "ABCD"
POPE_CATEGORIES = ("random", "popular", "adversarial")


def _records(eval_path: Union[str, Path], n: int) -> list[dict]:
    out = []
    for _, rec in iter_records(eval_path):
        if isinstance(rec, RecordError):
            raise ValueError(str(rec))
        out.append(rec)
        if len(out) >= n:
            break
    return out


def _rotations(g: int, question: str, options: list[str], answer: str, base: dict) -> list[dict]:
    rows = []
    for k in range(len(options)):
        opts = options[k:] + options[:k]
        rows.append({"index": g + k * STRIDE, "question": question, **dict(zip(LETTERS, opts)),
                     "answer": LETTERS[opts.index(answer)], **base})
    return rows


def mcq_rows(records: list[dict], image_root: Path, rng: np.random.Generator) -> list[dict]:
    from PIL import Image

    rows = []
    colours = sorted(vocab.COLOURS)
    for i, rec in enumerate(records):
        with Image.open(image_root / rec["image"]) as im:
            b64 = image_base64(im)
        objs = rec["scene_graph"]["objects"]
        obj = objs[int(rng.integers(len(objs)))]
        others = [c for c in colours if c != obj["colour"]]
        options = [obj["colour"], *rng.choice(others, size=3, replace=False).tolist()]
        options = [options[j] for j in rng.permutation(4)]
        g = 2 * i
        mine = _rotations(g, f"What colour is the {obj['shape']}?", options, obj["colour"],
                          {"category": "colour", "l2-category": "attribute", "split": "eval"})
        mine += _rotations(g + 1, "How many shapes are there?", ["1", "2", "3", "4"], str(len(objs)),
                           {"category": "count", "l2-category": "instance", "split": "eval"})
        for r in mine:  # one copy of the image; the other rows name its row (VLMEvalKit's index reference)
            r["image"] = b64 if r["index"] == g else str(g)
        rows += mine
    return sorted(rows, key=lambda r: r["index"])


def pope_rows(records: list[dict], rng: np.random.Generator) -> list[dict]:
    present = [sorted({o["shape"] for o in r["scene_graph"]["objects"]}) for r in records]
    frequency = Counter(s for p in present for s in p)
    together = Counter((a, b) for p in present for a in p for b in p if a != b)
    rows, qid = [], 0
    for rec, shapes in zip(records, present):
        absent = [s for s in vocab.SHAPES if s not in shapes]
        for cat in POPE_CATEGORIES:
            if cat == "random":
                neg = absent[int(rng.integers(len(absent)))]
            elif cat == "popular":
                neg = max(absent, key=lambda s: (frequency[s], s))
            else:
                neg = max(absent, key=lambda s: (sum(together[(p, s)] for p in shapes), s))
            pos = shapes[int(rng.integers(len(shapes)))]
            for shape, label in ((pos, "yes"), (neg, "no")):
                qid += 1
                rows.append({"question_id": qid, "image": rec["image"], "text": f"Is there a {shape} in the image?",
                             "label": label, "category": cat})
    return rows


def export_benchmarks(eval_path: Union[str, Path], image_root: Union[str, Path], out_dir: Union[str, Path],
                      num_images: int = 40, seed: int = 0) -> dict[str, Path]:
    """Write the two files; returns {benchmark name: path}."""
    records = _records(eval_path, num_images)
    if not records:
        raise ValueError(f"{eval_path}: no records")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    mcq = out / "MMBench_tiny.tsv"
    pope = out / "POPE_tiny.jsonl"
    write_tsv(mcq, mcq_rows(records, Path(image_root), rng), MCQ_COLUMNS)
    write_jsonl_atomic(pope, pope_rows(records, rng))
    return {"MMBench_tiny": mcq, "POPE_tiny": pope}
