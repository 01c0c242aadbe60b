"""Chain-consistency scoring of CoD candidates for the synthetic world (`--scorer scene-facts`).

The demo's own scorer, beside the reference's embedding MBR: a sentence embedding
sees two templated descriptions of the demo world as near-identical whichever
colours and shapes they state (kept captions were no better than one sample),
while the world's fact parser (`evaluation.facts.text_facts`) reads what a
description claims. The score is still self-consistency, computed from an item's
own candidates and nothing else:

* each candidate's step 1 (salient content) states the objects' shapes, colours,
  sizes and count (`STEP1_KINDS`); the *consensus* is the set of those facts stated
  by more than half of the item's candidates;
* a candidate scores the F1 of its final description's facts of those kinds against
  the consensus: 1.0 when its coherent description says exactly what most chains
  perceived first, lower when it drops, changes or adds an object.

A group of one candidate is scored against its own step 1.

Reasoning items are checked against the same image's perception: `curate`
reads every caption item once before scoring (`perceive`), whatever the order
of its input files, and the image's step-1 consensus answers the colour, count and size-comparison questions of
the world (`perceived_answer`). A CoT item whose question it answers is kept
with the first candidate that reaches that answer (score 1.0, "agrees with the
model's own perception"; none does: dropped, score 0); other questions (positions)
go to the answer vote as before. Both checks use only the model's own outputs.

Only texts of the synthetic world parse; for real data use `--scorer embedding`
(the reference's).
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from ..evaluation.facts import text_facts
from ..evaluation.metrics import fact_fidelity
from ..prompts import split_steps
from ..synthetic import vocab
from .scorers import BaseScorer

__all__ = ["SceneFactsScorer", "STEP1_KINDS", "chain_scores", "consensus", "perceived_answer"]

STEP1_KINDS = frozenset({"object", "colour", "size", "count"})
_FINAL_STEP = 5


def _facts(text: str) -> set:
    return {f for f in text_facts(text) if f[0] in STEP1_KINDS}


def _f1(final: set, agreed: set) -> float:
    """`fact_fidelity`'s F1 of the final description against the consensus; 1.0 when both are empty."""
    return fact_fidelity(final, agreed).f1 if final or agreed else 1.0


def consensus(candidates: Sequence[str]) -> set:
    """The step-1 facts (`STEP1_KINDS`) stated by more than half of the candidates."""
    votes = Counter(f for c in candidates for f in _facts(split_steps(c or "").get(1, "")))
    return {f for f, n in votes.items() if n > len(candidates) / 2}


def chain_scores(candidates: Sequence[str]) -> list[float]:
    """Scores of one item's CoD candidates (full texts, all five steps)."""
    steps = [split_steps(c or "") for c in candidates]
    final = [_facts(s.get(_FINAL_STEP, "")) for s in steps]
    agreed = consensus(candidates)
    return [_f1(fin, agreed) if s.get(1) and s.get(_FINAL_STEP) else 0.0 for fin, s in zip(final, steps)]


_SHAPES = "|".join(vocab.SHAPES)
_COLOURS = "|".join(vocab.COLOURS)
_COLOUR_Q = re.compile(rf"what colou?r is the ({_SHAPES})\b", re.I)
_COUNT_Q = re.compile(r"how many shapes are there", re.I)
_COMPARE_Q = re.compile(rf"which is larger, the ({_COLOURS}) ({_SHAPES}) or the ({_COLOURS}) ({_SHAPES})", re.I)


def perceived_answer(question: str, facts: set) -> Optional[str]:
    """The answer the perceived facts give to one of the world's questions, or None when they do not
    settle it (a question of another kind, a shape named twice, a size or colour not perceived)."""
    q = question or ""
    if _COUNT_Q.search(q):
        counts = [f[1] for f in facts if f[0] == "count"]
        return str(counts[0]) if len(counts) == 1 else None
    m = _COLOUR_Q.search(q)
    if m:
        colours = {f[2] for f in facts if f[0] == "colour" and f[1] == m.group(1).lower()}
        return colours.pop() if len(colours) == 1 else None
    m = _COMPARE_Q.search(q)
    if m:
        a, b = m.group(2).lower(), m.group(4).lower()
        if a == b:
            return None
        sizes = {s: {f[2] for f in facts if f[0] == "size" and f[1] == s} for s in (a, b)}
        if all(len(v) == 1 for v in sizes.values()) and sizes[a] != sizes[b]:
            return a if sizes[a] == {"large"} else b if sizes[b] == {"large"} else None
    return None


class SceneFactsScorer(BaseScorer):
    """`BaseScorer` over whole CoD texts (`reads_chain`: the curator passes every step)."""

    name = "scene-facts"
    reads_chain = True
    perceives = True
    include_self = False

    def __init__(self):
        self.perceived: dict = {}  # image key -> step-1 consensus of its caption item

    def score(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return [np.asarray(chain_scores(g), dtype=np.float64) for g in groups]

    def perceive(self, image, candidates: Sequence[str]) -> None:
        """Keep an image's perception (its caption item's step-1 consensus) for its questions."""
        if image is not None:
            self.perceived[_image_key(image)] = consensus(candidates)

    def answer_for(self, image, question: str) -> Optional[str]:
        facts = self.perceived.get(_image_key(image)) if image is not None else None
        return perceived_answer(question, facts) if facts else None


def _image_key(image) -> str:
    return "\x1f".join(image) if isinstance(image, list) else str(image)
