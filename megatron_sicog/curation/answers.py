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
  ``2.50`` -> ``2.5``, ``three`` -> ``3``, ``twelve hundred`` -> ``1200``,
  ``1/2`` -> ``0.5``), quantities with their unit kept (``2cm`` / ``2
  centimetres`` -> ``2 cm``, never ``2 m``; ``$12`` -> ``12 usd``; ``50%`` stays
  ``50%``); a bare ``2`` is its own key beside ``2 cm`` (`same_answer` and
  `vote.merge_bare_numbers` say when it joins a quantity).

Both are pure functions of their string argument and never raise on odd input.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from fractions import Fraction
from typing import Optional

from megatron_sicog.prompts import COT_STEP_TITLES, split_steps

__all__ = ["extract_answer", "normalize_answer", "same_answer", "parse_quantity", "split_quantity_key",
           "format_number"]

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
_LATEX_DOLLARS = re.compile(r"^\$+(.*?)\$+$")
_STRAY_DOLLARS = re.compile(r"^\$+(?!\s*[\d.])|\$+$")  # a $ before a number is a currency
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
    span = _LATEX_DOLLARS.sub(r"\1", span).strip()  # $x$ (LaTeX)
    span = _STRAY_DOLLARS.sub("", span).strip()
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
#
# A quantity keeps its unit: the key of "2.5 cm" is "2.5 cm", of "2.5 m" is
# "2.5 m", of "50 percent" is "50%". Units are spelled many ways and map to one
# symbol (`_UNIT_ALIASES`: "2cm" = "2 cm" = "2 centimetres"). A number followed
# by words that are not a unit ("3 apples", "two dogs", "2 m tall") keeps only
# the number (and unit): the words name what was counted or measured.
# A bare number ("2") is a different key from "2 cm"; `same_answer` and the vote
# (`vote.merge_bare_numbers`) decide when a bare number counts as a quantity of
# the same value (see there for the rule).

_SMALL_NUMBERS = {
    "zero": 0, "none": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
    "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90,
}
_SCALES = {"thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_MULTIPLIERS = {"hundred": 100, "dozen": 12}
# fraction words after a count ("three quarters", "two thirds", "one and a half")
_FRACTION_WORDS = {
    "half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4,
    "fourth": 4, "fourths": 4, "fifth": 5, "fifths": 5, "sixth": 6, "sixths": 6,
    "seventh": 7, "sevenths": 7, "eighth": 8, "eighths": 8, "ninth": 9, "ninths": 9,
    "tenth": 10, "tenths": 10,
}
_ALONE_FRACTIONS = {"half": Fraction(1, 2), "quarter": Fraction(1, 4)}  # without a count
_NEGATIVE_WORDS = frozenset({"minus", "negative"})

# canonical unit -> spellings (lower case; multi-word spellings allowed)
_UNIT_SPELLINGS = {
    "mm": "mm millimeter millimeters millimetre millimetres",
    "cm": "cm centimeter centimeters centimetre centimetres",
    "m": "m meter meters metre metres",
    "km": "km kilometer kilometers kilometre kilometres",
    "in": "in inch inches",
    "ft": "ft foot feet",
    "yd": "yd yard yards",
    "mi": "mi mile miles",
    "mg": "mg milligram milligrams",
    "g": "g gram grams gramme grammes",
    "kg": "kg kgs kilogram kilograms kilo kilos",
    "t": "tonne tonnes",
    "lb": "lb lbs pound pounds",
    "oz": "oz ounce ounces",
    "ml": "ml milliliter milliliters millilitre millilitres",
    "l": "l liter liters litre litres",
    "gal": "gal gallon gallons",
    "ms": "ms millisecond milliseconds",
    "s": "s sec secs second seconds",
    "min": "min mins minute minutes",
    "h": "h hr hrs hour hours",
    "day": "day days",
    "week": "week weeks",
    "month": "month months",
    "year": "yr yrs year years",
    "km/h": "km/h kmh kph|kilometers per hour|kilometres per hour",
    "mph": "mph|miles per hour",
    "m/s": "m/s|meters per second|metres per second",
    "m2": "m2 m^2 sqm|sq m|square meter|square meters|square metre|square metres",
    "cm2": "cm2 cm^2|sq cm|square centimeter|square centimeters|square centimetre|square centimetres",
    "km2": "km2 km^2|sq km|square kilometer|square kilometers|square kilometre|square kilometres",
    "ft2": "ft2 ft^2|sq ft|square foot|square feet",
    "°c": "°c ℃|degrees celsius|degree celsius|celsius|degrees c|deg c",
    "°f": "°f ℉|degrees fahrenheit|degree fahrenheit|fahrenheit|degrees f|deg f",
    "°": "° degree degrees deg",
    "%": "% percent pct|per cent",
    "usd": "$ usd dollar dollars|us dollars",
    "eur": "€ eur euro euros",
    "gbp": "£ gbp|pounds sterling",
    "jpy": "¥ jpy yen",
    "¢": "¢ cent cents",
    "w": "w watt watts",
    "kw": "kw kilowatt kilowatts",
    "v": "v volt volts",
    "hz": "hz hertz",
    "kb": "kb kilobyte kilobytes",
    "mb": "mb megabyte megabytes",
    "gb": "gb gigabyte gigabytes",
}


def _unit_aliases() -> dict[tuple[str, ...], str]:
    out: dict[tuple[str, ...], str] = {}
    for canon, spec in _UNIT_SPELLINGS.items():
        head, *phrases = spec.split("|")
        for spelling in head.split() + phrases:
            out[tuple(spelling.split())] = canon
    return out


_UNIT_ALIASES = _unit_aliases()
_MAX_UNIT_WORDS = max(len(k) for k in _UNIT_ALIASES)
_UNIT_LAST_ONLY = frozenset({"in"})  # also a preposition: a unit only as the answer's last word
_CURRENCY_SIGNS = {"$": "usd", "€": "eur", "£": "gbp", "¥": "jpy"}
_QUALIFIERS = frozenset("approximately about around roughly exactly only just nearly almost approx ca".split())
# words after a quantity that change its meaning: the answer is then free text
_NOT_A_COUNT_NOUN = frozenset(
    "of or and to per times than more less fewer by x plus minus over under out from am pm "
    "on in at with near next behind beside is are was were".split()
)

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_OPTION_ONLY = re.compile(
    r"^(?:option|choice|answer)?\s*[\(\[]?\s*([a-h])\s*[\)\]]?\s*[.):]?$"
)
_OPTION_PREFIX = re.compile(r"^(?:option\s+|choice\s+)?(?:\(\s*([a-h])\s*\)|([a-h])[.):])\s+\S")
_OPTION_WORD = re.compile(r"^(?:option|choice)\s+\(?([a-h])\)?\b")
# numerals: 1,200 / 1200.5 / .5, a fraction 3/4, a mixed number 1 1/2; then the rest
_SIGN = r"(?P<sign>[-+−])?\s*"
_DECIMAL = re.compile(_SIGN + r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?P<dec>\.\d+)?(?P<rest>.*)$")
_FRACTION = re.compile(_SIGN + r"(?:(?P<whole>\d+)\s+)?(?P<n>\d+)\s*/\s*(?P<d>\d+)(?P<rest>.*)$")
_YES_WORDS = frozenset("yes yeah yep yup true correct affirmative".split())
_NO_WORDS = frozenset("no nope false incorrect negative".split())
_YESNO = re.compile(
    r"^(yes|yeah|yep|yup|true|correct|affirmative|no|nope|false|incorrect|negative)\b"
    r"(?:\s*[,.;:!-]|\s*$|\s+(?:it|there|they|he|she|this|that|i|we|you)\b)"  # "Yes it is", "no there isn't"
)
_N_BOXED = re.compile(r"\\boxed\s*\{(.*)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_STRAY_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")
_PUNCT = re.compile(r"[^\w\s.%]")
_QUANTITY_KEY = re.compile(r"^(?P<n>-?\d+(?:\.\d+)?(?:/\d+)?)(?P<u>%| \S+)?$")


def format_number(v: Fraction) -> str:
    """Canonical string of an exact number: ``2``, ``2.5``, ``-0.125``, ``1/3``."""
    if v.denominator == 1:
        return str(v.numerator)
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:  # not a terminating decimal
        return f"{v.numerator}/{v.denominator}"
    sign, a = ("-" if v < 0 else ""), abs(v)
    whole, frac = divmod(a.numerator, a.denominator)
    digits = ""
    while frac:
        frac *= 10
        q, frac = divmod(frac, a.denominator)
        digits += str(q)
    return f"{sign}{whole}.{digits}"


def _parse_numeral(t: str) -> Optional[tuple[Fraction, str]]:
    """(value, rest of the text) when `t` starts with a written numeral."""
    m = _FRACTION.match(t)
    if m and int(m.group("d")) != 0:
        v = int(m.group("whole") or 0) + Fraction(int(m.group("n")), int(m.group("d")))
    else:
        m = _DECIMAL.match(t)
        if not m or not (m.group("int") or m.group("dec")):
            return None
        v = Fraction(int(m.group("int").replace(",", "")) if m.group("int") else 0)
        if m.group("dec"):
            v += Fraction(m.group("dec"))
    if m.group("sign") in ("-", "−"):
        v = -v
    return v, m.group("rest")


def _parse_number_words(words: list[str]) -> Optional[tuple[Fraction, int]]:
    """(value, words used) for a number written in words at the start of `words`.

    Handles compounds ("twelve hundred", "one hundred and five", "two thousand
    three hundred", "twenty-five" after hyphen splitting, "a dozen"), a sign
    ("minus five"), decimals ("two point five") and fractions ("three
    quarters", "two thirds", "one and a half", "half").
    """
    i, sign = 0, 1
    if words and words[0] in _NEGATIVE_WORDS and len(words) > 1:
        sign, i = -1, 1
    total = current = 0
    used_any = False
    j = i
    while j < len(words):
        w = words[j]
        if w in _SMALL_NUMBERS:
            v = _SMALL_NUMBERS[w]
            tens = current % 100
            if current and not (tens == 0 or (tens >= 20 and tens % 10 == 0 and v < 10)):
                return None  # "fifty fifty", "twenty twelve", "one two three": not one number
            current += v
        elif w in _MULTIPLIERS:
            current = (current or 1) * _MULTIPLIERS[w]
        elif w in _SCALES:
            total += (current or 1) * _SCALES[w]
            current = 0
        elif w == "and" and used_any and j + 1 < len(words) and (
                words[j + 1] in _SMALL_NUMBERS or words[j + 1] in _ALONE_FRACTIONS):
            if words[j + 1] in _ALONE_FRACTIONS:  # "one and a half" (articles already gone)
                value = Fraction(total + current) + _ALONE_FRACTIONS[words[j + 1]]
                return sign * value, j + 2
        else:
            break
        used_any = True
        j += 1
    if not used_any:
        if i < len(words) and words[i] in _ALONE_FRACTIONS:
            return sign * _ALONE_FRACTIONS[words[i]], i + 1
        return None
    value = Fraction(total + current)
    if j < len(words) and words[j] == "point" and j + 1 < len(words):
        digits = ""
        k = j + 1
        while k < len(words) and words[k] in _SMALL_NUMBERS and _SMALL_NUMBERS[words[k]] < 10:
            digits += str(_SMALL_NUMBERS[words[k]])
            k += 1
        if digits:
            return sign * (value + Fraction(f"0.{digits}")), k
    if j < len(words) and words[j] in _FRACTION_WORDS and total == 0 and 0 < current < 100:
        return sign * Fraction(current, _FRACTION_WORDS[words[j]]), j + 1
    return sign * value, j


def _match_unit(words: list[str]) -> tuple[Optional[str], int]:
    """(canonical unit, words used) for the longest unit spelling at the start of `words`."""
    for k in range(min(_MAX_UNIT_WORDS, len(words)), 0, -1):
        canon = _UNIT_ALIASES.get(tuple(words[:k]))
        if canon is not None:
            if k == 1 and words[0] in _UNIT_LAST_ONLY and len(words) > 1:
                continue  # "2 in the box" is no length
            return canon, k
    return None, 0


def _split_glued(rest: str) -> list[str]:
    """Words after a number, with a glued unit split off ("cm", "°c", "%")."""
    rest = rest.replace("°", " °").replace("%", " % ").replace("° c", "°c").replace("° f", "°f")
    rest = rest.replace("-", " ")
    return rest.split()


def parse_quantity(t: str) -> Optional[tuple[Fraction, Optional[str]]]:
    """(value, canonical unit or None) when the answer `t` is a quantity.

    `t` is lower case with articles removed. A currency sign before the number
    is its unit; up to three words after the number and unit that name what
    was counted ("3 apples", "2 m tall", "2 kg of flour") are allowed and
    dropped. Number words must form one number ("fifty fifty" is text). Returns None
    for anything else (free text, ranges, times, several quantities).
    """
    words = t.split()
    while words and words[0] in _QUALIFIERS:
        words = words[1:]
    t = " ".join(words)
    unit: Optional[str] = None
    if t[:1] in _CURRENCY_SIGNS:
        unit, t = _CURRENCY_SIGNS[t[0]], t[1:].lstrip()
    elif len(t) > 1 and t[0] in "-+−" and t[1:2] in _CURRENCY_SIGNS:
        unit, t = _CURRENCY_SIGNS[t[1]], t[0] + t[2:]
    parsed = _parse_numeral(t)
    if parsed is not None:
        value, rest = parsed
        after = _split_glued(rest)
        if after and not after[0][:1].isalpha() and after[0][:1] not in "°%$€£¥¢℃℉":
            return None  # "2-3" handled by hyphen split; "3:30", "2x3", "2,5" etc. stay text
    else:
        words = t.replace("-", " ").split()
        got = _parse_number_words(words)
        if got is None:
            return None
        value, used = got
        after = words[used:]
        after = _split_glued(" ".join(after))
    u, k = _match_unit(after)
    if u is not None:
        if unit is not None and u != unit:
            return None  # "$5 euros"
        unit, after = u, after[k:]
        if unit is not None and len(after) in (2, 3) and after[0] == "of":
            after = after[1:]  # "2 kg of apples": what was measured
    if len(after) > 3 or any(not w.isalpha() or w in _NOT_A_COUNT_NOUN for w in after):
        return None
    if after and unit is None and _match_unit(after[1:])[0] is not None:
        return None  # "3 square metres" is a unit; "3 big metres" is nonsense, keep as text
    return value, unit


def quantity_key(value: Fraction, unit: Optional[str]) -> str:
    if unit is None:
        return format_number(value)
    return format_number(value) + (unit if unit == "%" else f" {unit}")


def split_quantity_key(key: str) -> Optional[tuple[str, Optional[str]]]:
    """("2.5", "cm") for the key "2.5 cm", ("2", None) for "2", None for other keys."""
    m = _QUANTITY_KEY.match(key or "")
    if not m:
        return None
    u = m.group("u")
    return m.group("n"), (u.strip() if u else None)


def same_answer(a: str, b: str) -> bool:
    """Whether two normalised keys are the same answer (for scoring against a reference).

    Equal keys are; so are a bare number and a quantity of the same value
    ("2" and "2 cm": a reference or a reply that states no unit is read in the
    other's unit). Two different units never match ("2 cm" vs "2 m").
    """
    if not a or not b:
        return False
    if a == b:
        return True
    qa, qb = split_quantity_key(a), split_quantity_key(b)
    return qa is not None and qb is not None and qa[0] == qb[0] and (qa[1] is None or qb[1] is None)


def normalize_answer(s: str) -> str:
    """Canonical key of an answer: equal keys mean the same answer.

    Lower-cases, strips markup, punctuation, articles and extra whitespace;
    maps option-letter forms to the bare letter; ``yes`` / ``no`` and their
    synonyms (``yeah``, ``true``, ``correct``; ``nope``, ``false``,
    ``incorrect``), alone or with a justification, to ``yes`` / ``no``;
    numbers written any way (``1,200``, ``1200.00``, ``twelve hundred``,
    ``one hundred and five``, ``3/4``, ``three quarters``, ``0.75``) to one
    exact decimal (or reduced fraction) string, keeping a unit of measure or
    currency in one spelling (``2 centimetres`` -> ``2 cm``, ``50 percent`` ->
    ``50%``, ``$12`` -> ``12 usd``). Returns ``""`` for non-strings and empty
    answers.
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
        s = s.replace("\\%", "%").replace("\\$", "$")
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

    # yes / no (and synonyms) with a justification
    m = _YESNO.match(s)
    if m:
        return "yes" if m.group(1) in _YES_WORDS else "no"

    # quantities: numerals or number words, with their unit
    t = " ".join(_ARTICLES.sub(" ", s).split())
    q = parse_quantity(t)
    if q is not None:
        return quantity_key(*q)

    # free text: drop punctuation (keeping decimal points inside numbers)
    t = _THOUSANDS.sub("", t)
    t = _STRAY_DOT.sub(" ", t)
    t = _PUNCT.sub(" ", t)
    return " ".join(t.split())
