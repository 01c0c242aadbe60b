"""Tiny hand-made benchmark files in the published formats, with figures computed by hand.

MMBench-style TSV (CircularEval): three questions with two rotations each
(index g and g + 1,000,000), four options. With `MCQ_PREDICTIONS`:

=====  ========  =================  =====================  ======
index  answer    prediction         read as                hit
=====  ========  =================  =====================  ======
0      A (red)   "A"                A                      yes
1e6+0  B (red)   "(B)"              B                      yes
1      C (blue)  "Answer: C"        C                      yes
1e6+1  D (blue)  "B."               B                      no
2      B (two)   "two shapes"       B (option text)        yes
1e6+2  C (two)   "I cannot tell."   none (unmatched)       no
=====  ========  =================  =====================  ======

per-row accuracy 4/6; CircularEval 1/3 (only question 0 has every rotation
right); categories colour 1/2, count 0/1; one unmatched prediction. Row 1
has a hint; the second rotation of question 0 shares row 0's image by
referencing its index.

POPE (JSONL, 8 questions, 4 random + 4 adversarial); replies read as
yes/no, "yes" positive:

random:      labels y y n n, replies y  y  y  n  -> tp 2 fp 1 tn 1 fn 0
adversarial: labels y y n n, replies n  y  y  y  -> tp 1 fp 2 tn 0 fn 1
overall: tp 3 fp 3 tn 1 fn 1: accuracy 4/8, precision 3/6, recall 3/4,
F1 0.6, yes ratio 6/8.

ChartQA (JSONL, 4 questions): relaxed accuracy 2/4 (12.5 vs 12 is within
5%, 13 vs 12 is not, "Yes" equals "yes", 0.3 vs "50%" is not).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from megatron_sicog.evaluation.benchmarks.export import MCQ_COLUMNS, image_base64, write_tsv
from megatron_sicog.io import write_jsonl_atomic

S = 1_000_000


def tiny_image(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def mcq_rows() -> list[dict]:
    img = [image_base64(tiny_image(i)) for i in range(3)]
    rows = [
        {"index": 0, "question": "What colour is the square?", "A": "red", "B": "green", "C": "blue",
         "D": "yellow", "answer": "A", "category": "colour", "image": img[0], "l2-category": "attribute",
         "split": "dev"},
        {"index": S + 0, "question": "What colour is the square?", "A": "yellow", "B": "red", "C": "green",
         "D": "blue", "answer": "B", "category": "colour", "image": "0", "l2-category": "attribute",
         "split": "dev"},
        {"index": 1, "question": "What colour is the circle?", "hint": "Look at the round shape.",
         "A": "red", "B": "green", "C": "blue", "D": "yellow", "answer": "C", "category": "colour",
         "image": img[1], "l2-category": "attribute", "split": "dev"},
        {"index": S + 1, "question": "What colour is the circle?", "hint": "Look at the round shape.",
         "A": "yellow", "B": "red", "C": "green", "D": "blue", "answer": "D", "category": "colour",
         "image": img[1], "l2-category": "attribute", "split": "dev"},
        {"index": 2, "question": "How many shapes are there?", "A": "one", "B": "two", "C": "three",
         "D": "four", "answer": "B", "category": "count", "image": img[2], "l2-category": "instance", "split": "dev"},
        {"index": S + 2, "question": "How many shapes are there?", "A": "four", "B": "one", "C": "two",
         "D": "three", "answer": "C", "category": "count", "image": img[2], "l2-category": "instance", "split": "dev"},
    ]
    return rows


MCQ_PREDICTIONS = {"0": "A", str(S): "(B)", "1": "Answer: C", str(S + 1): "B.", "2": "two shapes",
                   str(S + 2): "I cannot tell."}

POPE_ROWS = [  # (question_id, category, label, reply)
    (1, "random", "yes", "Yes, there is a dog."),
    (2, "random", "yes", "yes"),
    (3, "random", "no", "Yes."),
    (4, "random", "no", "No, there is not."),
    (5, "adversarial", "yes", "There is not a cat in the image."),
    (6, "adversarial", "yes", "Yes"),
    (7, "adversarial", "no", "I think so, yes."),
    (8, "adversarial", "no", "There is a bench. No car is visible."),  # first sentence decides: yes
]
POPE_PREDICTIONS = {str(q): reply for q, _, _, reply in POPE_ROWS}

CHART_ROWS = [  # (question_id, question, answer, reply, type)
    (10, "What is the highest value?", "12", "12.5", "human"),
    (11, "What is the lowest value?", "12", "13", "human"),
    (12, "Is the trend increasing?", "yes", "Yes", "augmented"),
    (13, "What share is blue?", "50%", "0.3", "augmented"),
]
CHART_PREDICTIONS = {str(q): reply for q, _, _, reply, _ in CHART_ROWS}


def write_mcq(path: Path, rows=None) -> Path:
    write_tsv(path, rows if rows is not None else mcq_rows(), MCQ_COLUMNS)
    return path


def _write_jsonl_with_images(dir_: Path, name: str, records: list[dict], seeds: list[int]) -> Path:
    """JSONL rows whose ``image`` names a PNG under dir_/images, made from `seeds`."""
    (dir_ / "images").mkdir(parents=True, exist_ok=True)
    for rec, seed in zip(records, seeds):
        Image.fromarray(tiny_image(seed)).save(dir_ / rec["image"])
    write_jsonl_atomic(dir_ / name, records)
    return dir_ / name


def write_pope(dir_: Path, name: str = "pope.jsonl") -> Path:
    recs = [{"question_id": q, "image": f"images/{q}.png", "text": "Is there a dog?", "label": label,
             "category": cat} for q, cat, label, _ in POPE_ROWS]
    return _write_jsonl_with_images(dir_, name, recs, [100 + q for q, *_ in POPE_ROWS])


def write_chart(dir_: Path, name: str = "chartqa.jsonl") -> Path:
    recs = [{"question_id": q, "image": f"images/c{q}.png", "question": question, "answer": answer, "type": t}
            for q, question, answer, _, t in CHART_ROWS]
    return _write_jsonl_with_images(dir_, name, recs, [200 + q for q, *_ in CHART_ROWS])


def write_predictions(path: Path, id_field: str, predictions: dict) -> Path:
    write_jsonl_atomic(path, ({id_field: int(k), "prediction": v} for k, v in predictions.items()))
    return path
