"""Majority vote over the final answers of reasoning candidates.

Each candidate's answer is `extract_answer` + `normalize_answer`; when the
prompt lists options (``(A) cat (B) dog`` or one ``A. cat`` per line), an
answer that spells out an option's text counts as that option's letter, so
``(B)``, ``**B**``, ``Answer: b`` and ``dog`` are one vote. A candidate with no
parseable answer abstains: it is no answer class, but it stays in the
denominator of the winning share (it did not agree).

Ties are broken deterministically and independently of candidate order: the
answer whose supporters are closest to all candidates (mean lexical MBR score)
wins, then the lexicographically smaller normalised answer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence, Union

from megatron_sicog.curation.answers import extract_answer, normalize_answer

__all__ = ["VoteResult", "parse_options", "candidate_answer", "vote"]

# "(A) cat (B) dog", "(A) cat\n(B) dog"
_OPT_PAREN = re.compile(r"\(\s*([A-H])\s*\)\s*([^\n()]+?)\s*(?=\(\s*[A-H]\s*\)|\n|$)")
# one option per line: "A. cat", "A) cat", "A: cat"
_OPT_LINE = re.compile(r"^\s*([A-H])\s*[.):]\s+(\S.*?)\s*$", re.MULTILINE)


def parse_options(prompt: Optional[str]) -> dict[str, str]:
    """Map normalised option text -> option letter (lower case) for a prompt.

    Needs at least two options lettered consecutively from A; otherwise
    returns ``{}`` (the prompt has no multiple-choice options).
    """
    if not isinstance(prompt, str) or not prompt:
        return {}
    for pattern in (_OPT_PAREN, _OPT_LINE):
        found: dict[str, str] = {}
        for m in pattern.finditer(prompt):
            found.setdefault(m.group(1).lower(), m.group(2))
        letters = sorted(found)
        if len(letters) >= 2 and letters == [chr(ord("a") + i) for i in range(len(letters))]:
            out: dict[str, str] = {}
            for letter in letters:
                key = normalize_answer(found[letter])
                if key and key not in out and len(key) > 1:
                    out[key] = letter
            return out
    return {}


def candidate_answer(text, options: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The vote key of one candidate: normalised answer, option text -> letter; None = abstain."""
    raw = extract_answer(text) if isinstance(text, str) else None
    if raw is None:
        return None
    key = normalize_answer(raw)
    if not key:
        return None
    if options:
        key = options.get(key, key)
    return key


@dataclass
class VoteResult:
    answer: Optional[str]                 # the normalised winner; None if every candidate abstained
    score: float                          # winner votes / candidates (abstentions included)
    kept_index: Optional[int]             # the kept candidate (answers the winner)
    answers: list[Optional[str]]          # per-candidate vote key (None = abstention)
    scores: list[float]                   # per-candidate share of candidates agreeing with it
    counts: dict[str, int] = field(default_factory=dict)
    abstentions: int = 0


def vote(
    answers: Sequence[Optional[str]],
    closeness: Optional[Sequence[float]] = None,
    well_formed: Union[None, Sequence[bool], Callable[[int], bool]] = None,
) -> VoteResult:
    """Majority vote over per-candidate answer keys.

    `closeness[i]`: how close candidate i is to the others (e.g. its lexical
    MBR score); used to break ties between answers and to choose the kept
    candidate among the winner's supporters. `well_formed[i]`: whether it is a
    full structured CoT (a sequence, or a callable asked only about the winner's
    supporters); a well-formed supporter is kept before a bare answer.
    """
    n = len(answers)
    close = list(closeness) if closeness is not None else [0.0] * n
    if well_formed is None:
        formed: Callable[[int], bool] = lambda i: True  # noqa: E731
    elif callable(well_formed):
        formed = well_formed
    else:
        formed = list(well_formed).__getitem__
    counts: dict[str, int] = {}
    support: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
            support.setdefault(a, []).append(i)
    abstentions = n - sum(counts.values())
    if not counts:
        return VoteResult(None, 0.0, None, list(answers), [0.0] * n, {}, abstentions)

    def rank(a: str):
        mean_close = sum(close[i] for i in support[a]) / len(support[a])
        return (-counts[a], -mean_close, a)

    winner = min(counts, key=rank)
    # the closest well-formed supporter (formed() asked in closeness order, lazily)
    by_close = sorted(support[winner], key=lambda i: (-close[i], i))
    kept = next((i for i in by_close if formed(i)), by_close[0])
    scores = [counts[a] / n if a is not None else 0.0 for a in answers]
    return VoteResult(winner, counts[winner] / n, kept, list(answers), scores, counts, abstentions)
