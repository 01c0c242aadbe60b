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

A group of one candidate is scored against its own step 1. Only texts of the
synthetic world parse; for real data use `--scorer embedding` (the reference's).
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from ..evaluation.facts import text_facts
from ..prompts import split_steps

__all__ = ["SceneFactsScorer", "STEP1_KINDS", "chain_scores"]

STEP1_KINDS = frozenset({"object", "colour", "size", "count"})
_FINAL_STEP = 5


def _facts(text: str) -> set:
    return {f for f in text_facts(text) if f[0] in STEP1_KINDS}


def _f1(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return 2 * len(a & b) / (len(a) + len(b))


def chain_scores(candidates: Sequence[str]) -> list[float]:
    """Scores of one item's CoD candidates (full texts, all five steps)."""
    steps = [split_steps(c or "") for c in candidates]
    first = [_facts(s.get(1, "")) for s in steps]
    final = [_facts(s.get(_FINAL_STEP, "")) for s in steps]
    votes = Counter(f for fs in first for f in fs)
    consensus = {f for f, n in votes.items() if n > len(candidates) / 2}
    return [_f1(fin, consensus) if s.get(1) and s.get(_FINAL_STEP) else 0.0 for fin, s in zip(final, steps)]


class SceneFactsScorer:
    """`Scorer` interface over whole CoD texts (`reads_chain`: the curator passes every step)."""

    name = "scene-facts"
    reads_chain = True
    include_self = False

    def score(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return [np.asarray(chain_scores(g), dtype=np.float64) for g in groups]
