"""Open-ended answers scored by ChartQA's relaxed accuracy.

Rows: a VLMEvalKit TSV (``index``, ``question``, ``answer``, base64
``image``, optional ``split`` / ``category``) or JSONL / JSON list rows
(``question_id`` or ``index``, ``question``, ``answer``, ``image`` file under
the image root, optional ``type`` — ChartQA's human / augmented — ``split``,
``category``). ``answer`` may be a JSON list of accepted answers.

Relaxed accuracy (ChartQA, Masry et al. 2022, §5.1): when the prediction and
the answer are both numbers (a trailing ``%`` divides by 100), the prediction
is right within 5% relative error of a non-zero answer; otherwise it must
equal the answer ignoring case. An item is right when any accepted answer
matches. The prediction is the stripped reply; from a structured-CoT reply,
or one phrased "The answer is X.", the stated answer X is used
(`curation.answers.extract_answer`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional

from megatron_sicog.curation.answers import extract_answer
from megatron_sicog.prompts import conclusion

from .table import BenchmarkError, attach_tsv_images, breakdown, first, mean, path_images, require, row_id

PROMPT_TAIL = "Answer the question using a single word or phrase."
MAX_RELATIVE_CHANGE = 0.05


def _number(text: str) -> Optional[float]:
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correct(answer: str, prediction: str, tolerance: float = MAX_RELATIVE_CHANGE) -> bool:
    answer, prediction = str(answer).strip(), str(prediction).strip()
    a, p = _number(answer), _number(prediction)
    if a and p is not None:  # a == 0 falls through to exact match, as in the reference
        return abs(p - a) / abs(a) <= tolerance
    return prediction.lower() == answer.lower()


def stated_answer(reply: str) -> str:
    text = str(reply or "").strip()
    if "answer" in text.lower() or "\n" in text:
        got = extract_answer(conclusion(text))
        if got is not None:
            return got.strip()
    return text.rstrip(".") if text.endswith(".") and _number(text.rstrip(".")) is None else text


def _answers(value, where: str) -> list[str]:
    if isinstance(value, list):
        out = [str(v) for v in value]
    elif isinstance(value, str) and value.strip().startswith("["):
        try:
            out = [str(v) for v in json.loads(value)]
        except json.JSONDecodeError:
            out = [value]
    else:
        out = [str(value)]
    if not out:
        raise BenchmarkError(f"{where}: empty answer list")
    return out


def load(rows, root: Path, tsv: bool) -> list[dict]:
    rows = list(rows)
    items, seen = [], {}
    for where, r in rows:
        qid = first(r, ("question_id", "index"))
        if qid is None:
            raise BenchmarkError(f"{where}: missing column 'index' (or 'question_id')")
        require(r, where, ("question", "answer", "image"))
        qid = row_id(qid)
        if qid in seen:
            raise BenchmarkError(f"{where}: duplicate index {qid} (first at {seen[qid]})")
        seen[qid] = where
        items.append({"id": qid, "where": where, "question": str(r["question"]).strip(),
                      "answer": _answers(r["answer"], where),
                      "category": first(r, ("category", "type")), "split": first(r, ("split",)),
                      "images": None if tsv else path_images(r["image"], where, root)})
    if tsv:
        attach_tsv_images(items, rows, ("question_id", "index"))
    return items


def score(items: list[dict], predictions: Mapping[str, str]) -> tuple[dict, list[dict]]:
    per_row = []
    for it in items:
        pred = predictions[it["id"]]
        said = stated_answer(pred)
        hit = any(relaxed_correct(a, said) for a in it["answer"])
        per_row.append({"index": it["id"], "prediction": pred, "extracted": said, "answer": it["answer"],
                        "hit": hit, "category": it["category"], "split": it["split"]})
    res = {"overall": mean(r["hit"] for r in per_row), "n": len(per_row)}
    for key, label in (("category", "categories"), ("split", "splits")):
        b = breakdown(per_row, key)
        if b:
            res[label] = b
    return res, per_row
