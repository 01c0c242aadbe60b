"""Multiple-choice benchmarks in VLMEvalKit's TSV format, with CircularEval.

Columns: ``index, question, A, B, [C, D, ...], answer, image`` (base64)
required; ``hint, category, l2-category, split`` optional. Used by MMBench,
MMStar, AI2D, ScienceQA_IMG, SEEDBench, CCBench.

The prompt is VLMEvalKit's: ``Hint: ...`` (when given), ``Question: ...``,
``Options:`` with one ``X. text`` line per option, then "Please select the
correct answer from the options above."

`match_option(prediction, options)` reads the chosen letter as VLMEvalKit's
exact matching does, in three tries:

1. exactly one option letter stands alone as a word once ``.()[],:;!*#{}``
   become spaces ("B", "(B)", "B.", "Answer: B"), and it is among the last
   five words (so the article "A" early in a sentence is not option A);
2. "answer is X" / "correct answer is **X**";
3. the text of exactly one option appears in the (lower-cased) prediction,
   when the prediction is at most twice as long as all option texts together.

A structured-CoT response is matched on its conclusion step, first on the
answer it states ("The answer is 2." -> "2", `curation.answers.extract_answer`),
then on the whole step. A prediction that matches no option is counted
(``unmatched``) and wrong.

CircularEval (MMBench, CCBench): rows whose ``index`` differ by multiples of
1,000,000 are rotations of one question (``index % 1e6`` names it); a question
is right only if every rotation is. ``overall`` and per-category figures are
over questions (the category of the row with ``index < 1e6``); the per-row
accuracy is reported beside them as ``per_row``.
"""
from __future__ import annotations

import re
import string
from collections import defaultdict
from typing import Mapping, Optional

from megatron_sicog.curation.answers import extract_answer
from megatron_sicog.prompts import conclusion

from .table import BenchmarkError, breakdown, first, mean, require, row_id, tsv_images

CIRCULAR_STRIDE = 1_000_000
PROMPT_TAIL = "Please select the correct answer from the options above."
_SPACE_OUT = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
_ANSWER_IS = re.compile(r"(?:correct\s+)?answer\s+is\s+\**\(?([A-Z])\)?\**(?![A-Za-z])", re.IGNORECASE)
_LAST_WORDS = 5


def build_question(question: str, options: Mapping[str, str], hint: Optional[str] = None) -> str:
    lines = []
    if hint:
        lines.append(f"Hint: {hint}")
    lines.append(f"Question: {question}")
    if options:
        lines.append("Options:")
        lines.extend(f"{k}. {v}" for k, v in options.items())
        lines.append(PROMPT_TAIL)
    return "\n".join(lines)


def match_option(prediction: str, options: Mapping[str, str]) -> Optional[str]:
    """The option letter a free-text prediction chooses, or None (see the module docstring)."""
    text = conclusion(str(prediction or ""))
    stated = extract_answer(text)
    if stated and stated.strip() != text.strip():
        letter = _match_text(stated, options)
        if letter is not None:
            return letter
    return _match_text(text, options)


def _match_text(text: str, options: Mapping[str, str]) -> Optional[str]:
    words = text.translate(_SPACE_OUT).split()
    named = [w for w in words if w in options]
    if len(set(named)) == 1:
        letter = named[0]
        if words.index(letter) >= len(words) - _LAST_WORDS:
            return letter
    m = _ANSWER_IS.search(text)
    if m and m.group(1).upper() in options:
        return m.group(1).upper()
    low = text.lower()
    if len(low) <= 2 * sum(len(str(v)) for v in options.values()):
        hits = [k for k, v in options.items() if str(v).lower() in low]
        if len(hits) == 1:
            return hits[0]
    return None


def load(rows, name: str, circular: bool) -> list[dict]:
    """Benchmark items of a multiple-choice TSV (rows from `table.read_rows`)."""
    rows = list(rows)
    items, seen = [], {}
    for where, r in rows:
        require(r, where, ("index", "question", "answer", "A", "B"))
        idx = row_id(r["index"])
        if idx in seen:
            raise BenchmarkError(f"{where}: duplicate index {idx} (first at {seen[idx]})")
        seen[idx] = where
        options = {k: r[k].strip() if isinstance(r[k], str) else str(r[k])
                   for k in string.ascii_uppercase if r.get(k) not in (None, "")}
        answer = str(r["answer"]).strip()
        if answer not in options:
            raise BenchmarkError(f"{where}: answer {answer!r} is not one of the options {sorted(options)}")
        group = idx
        if circular:
            try:
                group = str(int(float(idx)) % CIRCULAR_STRIDE)
            except ValueError:
                raise BenchmarkError(f"{where}: CircularEval ({name}) needs integer indices, got {idx!r}") from None
        items.append({
            "id": idx, "where": where, "answer": answer, "options": options, "group": group,
            "question": build_question(r["question"], options, first(r, ("hint",))),
            "open_question": build_question(r["question"], {}, first(r, ("hint",))),
            "raw_question": str(r["question"]).strip(),
            "category": first(r, ("category",)), "l2_category": first(r, ("l2-category", "l2_category")),
            "split": first(r, ("split",)),
        })
    images = tsv_images(rows)
    for it in items:
        it["images"] = images[it["id"]]
    return items


def score(items: list[dict], predictions: Mapping[str, str], circular: bool) -> tuple[dict, list[dict]]:
    """(results, per-row records) for predictions keyed by ``index``."""
    per_row = []
    for it in items:
        pred = predictions[it["id"]]
        choice = match_option(pred, it["options"])
        per_row.append({"index": it["id"], "prediction": pred, "choice": choice, "answer": it["answer"],
                        "hit": choice == it["answer"], "category": it["category"],
                        "l2_category": it["l2_category"], "split": it["split"], "group": it["group"]})
    unmatched = sum(r["choice"] is None for r in per_row)
    res = {"n_rows": len(per_row), "unmatched": unmatched,
           "unmatched_rate": unmatched / len(per_row) if per_row else None}
    if circular:
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in per_row:
            groups[r["group"]].append(r)
        questions = []
        for g, rs in groups.items():
            main = next((r for r in rs if r["index"] == g), rs[0])
            ok = all(r["hit"] for r in rs)
            for r in rs:
                r["question_hit"] = ok
            questions.append({**main, "hit": ok})
        res.update(overall=mean(q["hit"] for q in questions), n=len(questions),
                   per_row=mean(r["hit"] for r in per_row))
        unit = questions
    else:
        res.update(overall=mean(r["hit"] for r in per_row), n=len(per_row))
        unit = per_row
    for key, label in (("category", "categories"), ("l2_category", "l2_categories"), ("split", "splits")):
        b = breakdown(unit, key)
        if b:
            res[label] = b
    return res, per_row
