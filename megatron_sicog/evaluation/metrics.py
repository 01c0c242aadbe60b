"""Evaluation metrics of the tiny demo: answer accuracy and caption fidelity.

* `answer_correct(prediction, answer)` — the shared definition of curation and
  evaluation: ``same_answer(normalize_answer(extract_answer(prediction)),
  normalize_answer(answer))`` — equal keys, or a bare number against a
  quantity of the same value (a prediction with no answer is wrong).
* `caption_fidelity(text, graph)` — the final description of a CoD response
  (`prompts.final_description`; a plain caption is used whole) is parsed into
  facts (`facts.text_facts`) and compared with the scene graph's facts:
  precision = correct claims / claims (hallucinated objects and wrong
  attributes lower it), recall = correct claims / true facts, score = F1.
* `aggregate_*` turn per-item results into means, per question type and per
  fact kind (the recall of colours, positions, the marginal dot, ...).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Optional

from ..curation.answers import extract_answer, normalize_answer, same_answer
from ..prompts import final_description
from .facts import FACT_KINDS, Fact, graph_facts, text_facts


def answer_correct(prediction: str, answer: str) -> bool:
    """True when the prediction's final answer normalises to the reference's."""
    extracted = extract_answer(prediction)
    if extracted is None:
        return False
    key = normalize_answer(extracted)
    return same_answer(key, normalize_answer(answer))


@dataclass
class Fidelity:
    """Fact-level comparison of one description with its scene graph."""

    precision: float
    recall: float
    f1: float
    correct: list[Fact] = field(default_factory=list)
    missing: list[Fact] = field(default_factory=list)
    hallucinated: list[Fact] = field(default_factory=list)

    def as_dict(self) -> dict:
        def fmt(facts):
            return [" ".join(map(str, f)) for f in facts]

        return {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                "missing": fmt(self.missing), "hallucinated": fmt(self.hallucinated)}


def fact_fidelity(claimed: set[Fact], true: set[Fact]) -> Fidelity:
    """Precision / recall / F1 of claimed facts against the true ones (empty claims score 0)."""
    correct = claimed & true
    p = len(correct) / len(claimed) if claimed else 0.0
    r = len(correct) / len(true) if true else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return Fidelity(p, r, f1, sorted(correct, key=str), sorted(true - claimed, key=str),
                    sorted(claimed - true, key=str))


def caption_fidelity(text: str, graph: dict) -> Fidelity:
    """Fidelity of a caption or CoD response (its step 5) to a scene graph."""
    return fact_fidelity(text_facts(final_description(text or "")), graph_facts(graph))


def _mean(xs: list[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def aggregate_fidelity(results: Iterable[Fidelity]) -> dict:
    """Mean precision / recall / F1 and, per fact kind, the recall and hallucination count."""
    results = list(results)
    found: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    wrong: dict[str, int] = defaultdict(int)
    for r in results:
        for f in r.correct:
            found[f[0]] += 1
            total[f[0]] += 1
        for f in r.missing:
            total[f[0]] += 1
        for f in r.hallucinated:
            wrong[f[0]] += 1
    return {
        "n": len(results),
        "f1": _mean([r.f1 for r in results]),
        "precision": _mean([r.precision for r in results]),
        "recall": _mean([r.recall for r in results]),
        "exact": _mean([float(r.f1 == 1.0) for r in results]),
        "recall_by_kind": {k: found[k] / total[k] for k in FACT_KINDS if total[k]},
        "hallucinated_by_kind": {k: wrong[k] for k in FACT_KINDS if wrong[k]},
    }


def aggregate_accuracy(results: Iterable[tuple[str, bool]]) -> dict:
    """Accuracy overall and per question type from (type, correct) pairs."""
    by_type: dict[str, list[float]] = defaultdict(list)
    every: list[float] = []
    for qtype, ok in results:
        by_type[qtype].append(float(ok))
        every.append(float(ok))
    return {
        "n": len(every),
        "accuracy": _mean(every),
        "by_type": {t: {"n": len(v), "accuracy": _mean(v)} for t, v in sorted(by_type.items())},
    }
