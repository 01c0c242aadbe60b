"""Majority vote over the final answers of reasoning candidates.

Each candidate's answer is `extract_answer` + `normalize_answer`; when the
prompt lists options (``(A) cat (B) dog`` or one ``A. cat`` per line), an
answer that spells out an option's text counts as that option's letter, so
``(B)``, ``**B**``, ``Answer: b`` and ``dog`` are one vote. A candidate with no
parseable answer abstains: it is no answer class, but it stays in the
denominator of the winning share (it did not agree).

A bare number beside quantities of the same value (`merge_bare_numbers`):
"2" joins "2 cm" when "cm" is the only unit any candidate gives that value
(the unit was left unsaid); beside both "2 cm" and "2 m" it is ambiguous and
stays its own answer. Different units never vote together, so a 3-3 split of
"2 m" and "2 cm" is a tie at 0.5, not agreement.

The kept answer's surface form (`surface_answer`) is the most common final
answer as the winning group's candidates wrote it ("2.5 cm", not the key).

Ties are broken deterministically and independently of candidate order: the
answer whose supporters are closest to all candidates (mean lexical MBR score)
wins, then the lexicographically smaller normalised answer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence, Union

from collections import Counter

from megatron_sicog.curation.answers import extract_answer, normalize_answer, split_quantity_key

__all__ = ["VoteResult", "parse_options", "candidate_answer", "candidate_answers", "merge_bare_numbers",
           "surface_answer", "vote"]

# "(A) cat (B) dog", "(A) cat\n(B) dog"
_OPT_PAREN = re.compile(r"\(\s*([A-H])\s*\)\s*([^\n()]+?)\s*(?=\(\s*[A-H]\s*\)|\n|$)")
# one option per line: "A. cat", "A) cat", "A: cat"
_OPT_LINE = re.compile(r"^\s*([A-H])\s*[.):]\s+(\S.*?)\s*$", re.MULTILINE)
# several on one line: "Options: A. cat B. dog C. rabbit", "A) cat, B) dog"
_OPT_INLINE = re.compile(r"(?:^|(?<=\s))([A-H])[.)]\s+(\S.*?)[\s,;]*(?=\s[A-H][.)]\s|$)", re.MULTILINE)


def parse_options(prompt: Optional[str]) -> dict[str, str]:
    """Map normalised option text -> option letter (lower case) for a prompt.

    Options are ``(A) cat (B) dog``, one ``A. cat`` / ``A) cat`` / ``A: cat``
    per line, or several ``A. cat B. dog`` on one line (tried in that order). Needs at least two options lettered consecutively from A; otherwise
    returns ``{}`` (the prompt has no multiple-choice options).
    """
    if not isinstance(prompt, str) or not prompt:
        return {}
    for pattern in (_OPT_PAREN, _OPT_LINE, _OPT_INLINE):
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


def _option_key(key: str, options: Mapping[str, str]) -> str:
    """Option text -> its letter; a bare number -> the one option of that value ("2" -> "2 cm" -> "a")."""
    if key in options:
        return options[key]
    q = split_quantity_key(key)
    if q is not None and q[1] is None:
        hits = {letter for text, letter in options.items() if (split_quantity_key(text) or ("", ""))[0] == q[0]}
        if len(hits) == 1:
            return hits.pop()
    return key


def candidate_answer(text, options: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The vote key of one candidate: normalised answer, option text -> letter; None = abstain."""
    return candidate_answers([text], options)[0][0]


def candidate_answers(texts: Sequence, options: Optional[Mapping[str, str]] = None
                      ) -> tuple[list[Optional[str]], list[Optional[str]]]:
    """(vote keys, raw answer spans) of candidates; bare numbers merged (`merge_bare_numbers`)."""
    keys: list[Optional[str]] = []
    raws: list[Optional[str]] = []
    for text in texts:
        raw = extract_answer(text) if isinstance(text, str) else None
        key = normalize_answer(raw) if raw is not None else ""
        if key and options:
            key = _option_key(key, options)
        keys.append(key or None)
        raws.append(raw if key else None)
    return merge_bare_numbers(keys), raws


def merge_bare_numbers(keys: Sequence[Optional[str]]) -> list[Optional[str]]:
    """A bare number joins the quantities of the same value when they all share one unit.

    ``["2 cm", "2", "2 cm"]`` -> all ``"2 cm"``; ``["2 cm", "2 m", "2"]`` stays as it is
    (which unit the bare "2" meant is unknown); ``["2", "3 cm"]`` stays too.
    """
    units: dict[str, set] = {}
    for k in keys:
        q = split_quantity_key(k) if k else None
        if q is not None and q[1] is not None:
            units.setdefault(q[0], set()).add(k)
    out = list(keys)
    for i, k in enumerate(keys):
        q = split_quantity_key(k) if k else None
        if q is not None and q[1] is None and len(units.get(q[0], ())) == 1:
            out[i] = next(iter(units[q[0]]))
    return out


def surface_answer(raws: Sequence[Optional[str]], keys: Sequence[Optional[str]], winner: Optional[str],
                   kept: Optional[int] = None) -> Optional[str]:
    """The winner as the candidates wrote it: the most common raw answer of its supporters.

    Spellings whose own key is the winner ("2.5 cm") come before those that
    only joined it ("2.5", merged into "2.5 cm"); a tie goes to the kept
    candidate's spelling, then to the earliest candidate.
    """
    if winner is None:
        return None
    support = [i for i, k in enumerate(keys) if k == winner and raws[i]]
    if not support:
        return winner
    full = [i for i in support if normalize_answer(raws[i]) == winner]
    pool = full or support
    counts = Counter(raws[i].strip() for i in pool)
    first = {}
    for i in pool:
        first.setdefault(raws[i].strip(), i)
    kept_raw = raws[kept].strip() if kept is not None and kept in pool else None
    return min(counts, key=lambda r: (-counts[r], r != kept_raw, first[r]))


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
