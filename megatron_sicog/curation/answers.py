"""Final-answer extraction and normalisation for structured CoT / free text.

Shared by self-consistency curation (majority vote over candidates) and by the
evaluation of answer accuracy, so both agree on what "the same answer" means:

    normalize_answer(extract_answer(prediction)) == normalize_answer(reference)

* `extract_answer(text)` returns the raw final-answer span (no normalisation
  beyond trimming markup and the trailing full stop), or ``None`` when the text
  states no answer (an abstention for voting).
* `normalize_answer(s)` maps equivalent phrasings onto one key: case,
  punctuation, articles, whitespace, option letters (``(B)``, ``B.``,
  ``**B**``, ``Answer: b``, ``option B`` -> ``b``), yes/no with a trailing
  justification (``Yes, it is.`` -> ``yes``), numbers (``1,200`` -> ``1200``,
  ``2.50`` -> ``2.5``, ``three`` -> ``3``, ``12 cm`` / ``$12`` -> ``12``).

Both are pure functions of their string argument and never raise on odd input.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from typing import Optional

from megatron_sicog.prompts import COT_STEP_TITLES, split_steps

__all__ = ["extract_answer", "normalize_answer"]

# ---------------------------------------------------------------- extraction

# "The answer is X", "the final answer is: X", "Answer: X", "answer would be X",
# "the correct option is X", "so my answer = X".  The span runs to the end of
# the sentence (a full stop not inside a number), a newline, or the text end.
_ANSWER_CUE = re.compile(
    r"(?:\b(?:final|correct|best|right)\s+)?"
    r"\b(?:answer|option|choice)s?\b"
    r"(?:\s*\*\*)?"  # "**Answer**: X" / "**Answer:** X"
    r"\s*(?:(?:is|would\s+be|should\s+be|will\s+be|must\s+be)(?:\s*[:=])?|=|:|-|–|—)"
    r"(?:\s*\*\*)?\s*"
    r"(?:therefore\s+|then\s+|thus\s+|clearly\s+)?"
    r"(?P<ans>[^\n]+)",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\boxed\s*\{(?P<ans>(?:[^{}]|\{[^{}]*\})*)\}")
# Option letters in their common stand-alone forms (A-H).
_OPTION_FORMS = re.compile(
    r"(?:\(\s*(?P<p>[A-Ha-h])\s*\)"              # (B)
    r"|\*\*\s*\(?(?P<b>[A-H])\)?\s*[.)]?\s*\*\*"  # **B** / **(B)** / **B.**
    r"|\b(?:option|choice)\s+\(?(?P<o>[A-Ha-h])\)?(?![A-Za-z])"  # option B
    r"|(?:^|(?<=\s))(?P<d>[A-H])[.)](?=\s|$)"   # B. / B)
    r")",
    re.MULTILINE,
)
_YESNO_START = re.compile(
    r"^\W*(yes|no)\b(?!\s+(?:idea|one|answer|way|clue|information|object|visible|clear)\b)", re.IGNORECASE
)
_REFUSAL = re.compile(
    r"\b(?:cannot|can't|can not|unable|not sure|unclear|not possible|impossible to|"
    r"don't know|do not know|no answer|no idea|not enough information)\b",
    re.IGNORECASE,
)
_NOT_AN_ANSWER_START = frozenset(
    "this that it so therefore thus hence which these those i we based according".split()
)
_N_TEXT = re.compile(r"\\text\s*\{([^{}]*)\}")
_SENT_END = re.compile(r"(?<!\d)\.(?!\d)|(?<=\d)\.(?=\s|$)|[!?;]|\s+(?:because|since|as)\s+", re.IGNORECASE)


_LEAD_OPTION = re.compile(r"^\(?[A-Ha-h][.)]\s+")
_DOLLARS = re.compile(r"^\$+|\$+$")
_WORD_CHAR = re.compile(r"\w")
_QUOTES_MARKUP = " \t*_`\"'“”‘’"


def _trim_span(span: str) -> str:
    """Cut an answer span at its sentence end and strip markup around it."""
    span = span.strip()
    # the period of a leading option letter ("B. red") is not a sentence end
    m = _LEAD_OPTION.match(span)
    head = ""
    if m:
        head, span = span[: m.end()], span[m.end():]
    cut = _SENT_END.search(span)
    if cut:
        span = span[: cut.start()]
    span = (head + span).strip().strip(_QUOTES_MARKUP)
    span = _DOLLARS.sub("", span).strip()  # $x$ (LaTeX) and a currency sign
    if span.startswith("\\(") and span.endswith("\\)"):
        span = span[2:-2].strip()
    return span.rstrip(" .,:;").strip(_QUOTES_MARKUP)


def _looks_like_answer(span: str) -> bool:
    return bool(span) and bool(_WORD_CHAR.search(span)) and len(span.split()) <= 40


def _conclusion_text(text: str) -> tuple[str, bool]:
    """(conclusion step, True) for a structured CoT, else (whole text, False)."""
    steps = split_steps(text)
    last = len(COT_STEP_TITLES)
    if steps.get(last):
        return steps[last], True
    if steps:  # some other step structure: its last step is the conclusion
        return steps[max(steps)], True
    return text.strip(), False


def _cue_answer(segment: str) -> Optional[str]:
    """An explicit cue: the last ``\\boxed{..}``, else the last ``answer is / answer:``."""
    boxed = list(_BOXED.finditer(segment))
    if boxed:
        span = _N_TEXT.sub(r"\1", _trim_span(boxed[-1].group("ans")))
        if _looks_like_answer(span):
            return span
    for m in reversed(list(_ANSWER_CUE.finditer(segment))):
        span = _trim_span(m.group("ans"))
        if _looks_like_answer(span):
            return span
    return None


def _implicit_answer(segment: str) -> Optional[str]:
    """No cue: an option letter in a stand-alone form, or a leading yes / no."""
    opts = list(_OPTION_FORMS.finditer(segment))
    if opts:
        return next(g for g in opts[-1].groups() if g).upper()
    m = _YESNO_START.match(segment)
    if m:
        return m.group(1).capitalize()
    return None


def _short_answer(segment: str) -> Optional[str]:
    """A short segment is its own answer ("42", "red car", "Two.") unless it
    is a sentence about the answer or says it cannot answer."""
    whole = segment.strip().rstrip(" .!")
    words = whole.split()
    if (
        0 < len(words) <= 6
        and "\n" not in whole
        and not re.search(r"[.!?;](?:\s|$)", whole)
        and words[0].lower().strip(",") not in _NOT_AN_ANSWER_START
        and not _REFUSAL.search(whole)
    ):
        span = _trim_span(whole)
        if _looks_like_answer(span):
            return span
    return None


def extract_answer(text: str) -> Optional[str]:
    """The raw final answer of a structured CoT or free-text response.

    Looks at the conclusion step (``Step 4: Conclusion.``; the last step of
    any other step structure) when there is one, the whole text otherwise,
    and takes, in order: the last ``\\boxed{..}`` or ``answer is / answer: /
    correct option is`` cue; an option letter in a stand-alone form (``(B)``,
    ``**B**``, ``B.``, ``option B``); a leading yes / no; for a structured
    CoT, a cue anywhere in the text; finally the segment itself when it is a
    short word or phrase. Returns ``None`` when there is no answer.
    """
    if not isinstance(text, str):
        return None
    text = unicodedata.normalize("NFKC", text).strip()
    if not text:
        return None
    segment, structured = _conclusion_text(text)
    ans = _cue_answer(segment) or _implicit_answer(segment)
    if ans is None and structured:
        ans = _cue_answer(text)
    return ans if ans is not None else _short_answer(segment)


# ------------------------------------------------------------- normalisation

_WORD_NUMBERS = {
    "zero": 0, "none": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
    "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90, "hundred": 100,
}
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_OPTION_ONLY = re.compile(
    r"^(?:option|choice|answer)?\s*[\(\[]?\s*([a-h])\s*[\)\]]?\s*[.):]?$"
)
_OPTION_PREFIX = re.compile(r"^(?:option\s+|choice\s+)?(?:\(\s*([a-h])\s*\)|([a-h])[.):])\s+\S")
_OPTION_WORD = re.compile(r"^(?:option|choice)\s+\(?([a-h])\)?\b")
_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_NUMBER_WITH_UNIT = re.compile(
    rf"^(?:approximately|about|around|roughly|exactly|only|just)?\s*"
    rf"[$€£¥]?\s*(?P<n>{_NUM})\s*(?P<unit>%|°[cf]?|[a-zµ°²³/]+(?:\s+[a-z²³/]+){{0,2}})?$"
)


_N_BOXED = re.compile(r"\\boxed\s*\{(.*)\}")
_YESNO = re.compile(r"^(yes|no)\b(?:\s*[,.;:!-]|\s*$)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_STRAY_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")
_PUNCT = re.compile(r"[^\w\s.%]")


def _canon_number(s: str) -> str:
    s = s.replace(",", "")
    try:
        v = float(s)
    except ValueError:
        return s
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v).rstrip("0").rstrip(".") if "e" not in repr(v) else repr(v)


def normalize_answer(s: str) -> str:
    """Canonical key of an answer: equal keys mean the same answer.

    Lower-cases, strips markup, punctuation, articles and extra whitespace;
    maps option-letter forms to the bare letter, ``yes, ...`` / ``no, ...`` to
    ``yes`` / ``no``, and numbers (commas, trailing zeros, a currency sign or a
    short unit, number words up to twenty and tens) to a plain decimal string.
    Returns ``""`` for non-strings and empty answers.
    """
    if s is None:
        return ""
    return _normalize(s if isinstance(s, str) else str(s))


@functools.lru_cache(maxsize=1 << 16)  # sampled answers repeat a lot ("B", "3", "yes")
def _normalize(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).strip().lower()
    if not s:
        return ""
    if "\\" in s:
        s = _N_BOXED.sub(r"\1", s)
        s = _N_TEXT.sub(r"\1", s)
    s = s.replace("**", "").replace("__", "").replace("`", "")
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        s = s[1:-1].strip()
    s = s.strip(" \t\n\"'“”‘’")
    s = " ".join(s.split()).rstrip(" .!;,:")

    # option letters: "(b)", "b.", "b)", "option b", "(b) red", "b. red"
    m = _OPTION_ONLY.match(s)
    if m:
        return m.group(1)
    m = _OPTION_PREFIX.match(s) or _OPTION_WORD.match(s)
    if m:
        return next(g for g in m.groups() if g)

    # yes / no with a justification
    m = _YESNO.match(s)
    if m:
        return m.group(1)

    # numbers (with commas, a currency sign or a short unit); number words
    t = " ".join(_ARTICLES.sub(" ", s).split())
    m = _NUMBER_WITH_UNIT.match(t)
    if m:
        return _canon_number(m.group("n"))
    words = t.split()
    if (words and words[0] in _WORD_NUMBERS and len(words) <= 3
            and all(w.isalpha() and w not in ("of", "in", "is") for w in words)):
        return str(_WORD_NUMBERS[words[0]])

    # free text: drop punctuation (keeping decimal points inside numbers)
    t = _THOUSANDS.sub("", t)
    t = _STRAY_DOT.sub(" ", t)
    t = _PUNCT.sub(" ", t)
    return " ".join(t.split())
