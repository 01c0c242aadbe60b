"""Prompt texts and the structured response formats of SICOG, in one place.

Generation (`tools/generate_candidates.py`), curation (`tools/curate.py`), the
synthetic seed data of the tiny demo and the converter all import from here, so
a step header changed here changes everywhere at once.

* Chain-of-Description (CoD): five steps, each a paragraph headed
  ``Step k: <title>.`` — salient content, detailed attributes, relational
  attributes, marginal content, coherent description (the caption).
* Structured chain-of-thought (CoT): four steps — task objective, crucial
  visual information, reasoning, conclusion (``The answer is X.``).
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

IMAGE_PLACEHOLDER = "<image>"

COD_STEP_TITLES = (
    "Salient content",
    "Detailed attributes",
    "Relational attributes",
    "Marginal content",
    "Coherent description",
)
COT_STEP_TITLES = (
    "Task objective",
    "Crucial visual information",
    "Reasoning",
    "Conclusion",
)
FORMATS = {"cod": COD_STEP_TITLES, "cot": COT_STEP_TITLES}

# Prompt texts, by generation mode. `{question}` is filled for the QA modes.
PROMPTS = {
    "cod": (
        "Describe the image step by step: 1) salient content, 2) detailed attributes, "
        "3) relational attributes, 4) marginal content, 5) a coherent description."
    ),
    "caption": "Describe the image in detail.",
    "cot": (
        "{question}\nAnswer step by step: 1) task objective, 2) crucial visual information, "
        "3) reasoning, 4) conclusion ending with 'The answer is X.'"
    ),
    "answer": "{question}\nAnswer with a single word or phrase.",
}
MODE_TASK = {"cod": "caption", "caption": "caption", "cot": "reasoning", "answer": "reasoning"}

_FORMATS_LOWER = tuple(tuple(t.lower() for t in titles) for titles in FORMATS.values())
_STEP_RE = re.compile(r"^\s*(?:\*\*)?Step\s+(\d+)\s*[:.]\s*", re.IGNORECASE | re.MULTILINE)


def build_prompt(mode: str, question: Optional[str] = None, with_image: bool = True) -> str:
    """The human turn for a generation mode, with the image placeholder first."""
    if mode not in PROMPTS:
        raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(PROMPTS)}")
    text = PROMPTS[mode]
    if "{question}" in text:
        if not question:
            raise ValueError(f"mode {mode!r} needs a question")
        text = text.format(question=question.strip())
    return f"{IMAGE_PLACEHOLDER}\n{text}" if with_image else text


def step_header(kind: str, k: int) -> str:
    """``Step k: Title.`` for kind 'cod' or 'cot' (k is 1-based)."""
    return f"Step {k}: {FORMATS[kind][k - 1]}."


def format_steps(kind: str, paragraphs: Sequence[str]) -> str:
    """Join one paragraph per step under its header."""
    titles = FORMATS[kind]
    if len(paragraphs) != len(titles):
        raise ValueError(f"{kind} needs {len(titles)} steps, got {len(paragraphs)}")
    return "\n".join(f"{step_header(kind, k)} {p.strip()}" for k, p in enumerate(paragraphs, 1))


def format_cod(paragraphs: Sequence[str]) -> str:
    return format_steps("cod", paragraphs)


def format_cot(objective: str, visual: str, reasoning: str, answer: str) -> str:
    answer = answer.strip().rstrip(".")
    return format_steps("cot", [objective, visual, reasoning, f"The answer is {answer}."])


def split_steps(text: str) -> dict[int, str]:
    """Map step number -> body text (header removed) for every ``Step k:`` found."""
    out: dict[int, str] = {}
    matches = list(_STEP_RE.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end():end].strip()
        # drop the step title ("Salient content.") when present
        k = int(m.group(1))
        for titles in _FORMATS_LOWER:
            if 1 <= k <= len(titles):
                title = titles[k - 1]
                if body[: len(title)].lower() == title:
                    body = body[len(title):].lstrip(" .:*").strip()
                    break
        out.setdefault(k, body)
    return out


def follows_format(text: str, kind: str) -> bool:
    """True when `text` has exactly steps 1..n of `kind` in order, each non-empty."""
    n = len(FORMATS[kind])
    nums = [int(m.group(1)) for m in _STEP_RE.finditer(text)]
    if nums != list(range(1, n + 1)):
        return False
    steps = split_steps(text)
    return all(steps.get(k) for k in range(1, n + 1))


def final_description(text: str) -> str:
    """The caption of a CoD response (step 5) or the whole text when not CoD."""
    steps = split_steps(text)
    last = len(COD_STEP_TITLES)
    return steps[last] if steps.get(last) else text.strip()


def conclusion(text: str) -> str:
    """The conclusion step of a CoT response, or the whole text when not CoT."""
    steps = split_steps(text)
    last = len(COT_STEP_TITLES)
    return steps[last] if steps.get(last) else text.strip()
