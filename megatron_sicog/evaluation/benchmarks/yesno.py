"""POPE-style yes/no benchmarks (object hallucination).

Rows (JSONL / JSON list, as POPE's ``coco_pope_*.json``): ``question_id``,
``image`` (a file under the image root), ``text`` (the question), ``label``
(yes/no), optional ``category`` (random / popular / adversarial). lmms-eval's
column names ``question`` / ``answer`` are read too, and so is a VLMEvalKit
TSV (``index``, base64 ``image``, ``question``, ``answer``, ``category``).

A reply reads as "no" when its first sentence (commas dropped) has the word
"no" or "not" in any case, else "yes" — POPE's own rule; a structured-CoT
response is read on its conclusion step. "yes" is the positive class:
accuracy, precision, recall, F1 and the share of "yes" replies
(``yes_ratio``), overall and per category.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Mapping

from megatron_sicog.prompts import conclusion

from .table import BenchmarkError, attach_tsv_images, first, path_images, row_id

PROMPT_TAIL = "Answer the question using a single word or phrase."


def read_yes_no(reply: str) -> str:
    text = conclusion(str(reply or "")).strip()
    sentence = text.split(".", 1)[0].replace(",", "")
    words = {w.lower() for w in sentence.split()}
    return "no" if words & {"no", "not"} else "yes"


def load(rows, root: Path, tsv: bool) -> list[dict]:
    rows = list(rows)
    items, seen = [], {}
    for where, r in rows:
        qid = first(r, ("question_id", "index"))
        question = first(r, ("text", "question"))
        label = first(r, ("label", "answer"))
        missing = [n for n, v in (("question_id", qid), ("text", question), ("label", label)) if v is None]
        if "image" not in r:
            missing.append("image")
        if missing:
            raise BenchmarkError(f"{where}: missing column(s) {', '.join(repr(c) for c in missing)} "
                                 f"(has {', '.join(sorted(r)) or 'none'})")
        qid = row_id(qid)
        if qid in seen:
            raise BenchmarkError(f"{where}: duplicate question_id {qid} (first at {seen[qid]})")
        seen[qid] = where
        label = str(label).strip().lower()
        if label not in ("yes", "no"):
            raise BenchmarkError(f"{where}: label must be yes or no, got {label!r}")
        items.append({"id": qid, "where": where, "question": str(question).strip(), "answer": label,
                      "category": first(r, ("category",)),
                      "images": None if tsv else path_images(r["image"], where, root)})
    if tsv:
        attach_tsv_images(items, rows, ("question_id", "index"))
    return items


def pope_metrics(pairs: list[tuple[str, str]]) -> dict:
    tp = sum(p == "yes" and g == "yes" for p, g in pairs)
    fp = sum(p == "yes" and g == "no" for p, g in pairs)
    fn = sum(p == "no" and g == "yes" for p, g in pairs)
    tn = sum(p == "no" and g == "no" for p, g in pairs)
    n = len(pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / n if n else None, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": (tp + fp) / n if n else None, "n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def score(items: list[dict], predictions: Mapping[str, str]) -> tuple[dict, list[dict]]:
    per_row, by_cat = [], defaultdict(list)
    for it in items:
        pred = predictions[it["id"]]
        read = read_yes_no(pred)
        per_row.append({"question_id": it["id"], "prediction": pred, "read": read, "label": it["answer"],
                        "hit": read == it["answer"], "category": it["category"]})
        if it["category"] is not None:
            by_cat[it["category"]].append((read, it["answer"]))
    res = pope_metrics([(r["read"], r["label"]) for r in per_row])
    res["overall"] = res["accuracy"]
    if by_cat:
        res["categories"] = {c: pope_metrics(v) for c, v in sorted(by_cat.items())}
    return res, per_row
