"""Ground-truth texts of a scene: CoD description, captions, questions with CoT.

All sentences are built from `vocab` words with a handful of fixed templates,
objects always in reading order, so the texts are short and regular:

* `cod_text(scene)` — the five CoD steps via `prompts.format_cod`; step 1 is
  `align_caption(scene)` (the salient content in the alignment captions' words), step 5 is
  `caption(scene)`, the full coherent description the fidelity metric parses.
* `align_caption(scene)` — a plain short caption for base-model alignment
  pre-training (colour, size, shape, background only; not CoD).
* `make_questions(scene, rng, k)` — up to k questions of distinct types
  (count, colour, position, compare), each a `Question` with a short answer
  and its structured CoT response (`prompts.format_cot`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .. import prompts
from . import vocab
from .scene import Scene, SceneObject

QUESTION_TYPES = ("count", "colour", "position", "compare")


def _join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _texture_word(o: SceneObject) -> str:
    """'striped ' / 'dotted ' / '' — solid is the default and is never written."""
    return "" if o.texture == vocab.DEFAULT_TEXTURE else o.texture + " "


def noun_phrase(o: SceneObject) -> str:
    """'a large striped red circle at the top left' ('solid' is left out)."""
    return f"a {o.size} {_texture_word(o)}{o.colour} {o.shape} at the {o.position}"


def _a(word: str) -> str:
    """'a red', 'an orange'."""
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _marginal_phrase(scene: Scene) -> Optional[str]:
    m = scene.marginal
    return f"{_a(m.colour)} dot near the {m.side} edge" if m else None


def _relation(a: SceneObject, b: SceneObject) -> str:
    """'circle above and left of square' (a before b in reading order)."""
    parts = []
    if a.row != b.row:
        parts.append("above" if a.row < b.row else "below")
    if a.col != b.col:
        parts.append("left of" if a.col < b.col else "right of")
    rel = " and ".join(parts)
    return f"{a.shape} {rel} {b.shape}"


def caption(scene: Scene) -> str:
    """The coherent detailed description (CoD step 5): every fact of the scene."""
    text = _cap(_join([noun_phrase(o) for o in scene.ordered()]))
    text += f", on a {scene.background} background"
    m = _marginal_phrase(scene)
    if m:
        text += f", with {m}"
    return text + "."


def align_caption(scene: Scene) -> str:
    """Short plain caption for alignment pre-training: 'A large red circle and a small blue square on a white background.'"""
    objs = [f"a {o.size} {o.colour} {o.shape}" for o in scene.ordered()]
    return _cap(_join(objs)) + f" on a {scene.background} background."


def cod_paragraphs(scene: Scene) -> list[str]:
    """The five CoD paragraphs; terse on purpose (the whole response stays ~100 tokens)."""
    objs = scene.ordered()
    # Step 1 (salient content) states what the alignment captions state, in their words: the description
    # starts from what pre-training taught the model to see, as a real MLLM's first step draws on its
    # pre-training captions; the later steps add what alignment never named (texture, position, the edges).
    step1 = align_caption(scene)
    step2 = " ".join(
        f"{_cap(o.shape)}: {o.colour}, {o.size}{', ' + o.texture if o.texture != vocab.DEFAULT_TEXTURE else ''}."
        for o in objs
    )
    step3 = _cap(", ".join(f"{o.shape} at {o.position}" for o in objs)) + "."
    if len(objs) > 1:
        step3 += " " + _cap(", ".join(_relation(a, b) for a, b in zip(objs, objs[1:]))) + "."
    m = _marginal_phrase(scene)
    step4 = f"The background is {scene.background}, with {m if m else 'nothing near the edges'}."
    return [step1, step2, step3, step4, caption(scene)]


def cod_text(scene: Scene) -> str:
    """The full five-step Chain-of-Description response."""
    return prompts.format_cod(cod_paragraphs(scene))


@dataclass(frozen=True)
class Question:
    type: str
    question: str
    answer: str
    cot: str


def _count_q(scene: Scene, rng: np.random.Generator) -> Question:
    objs = scene.ordered()
    n = len(objs)
    visual = "I see " + _join([f"{_a(o.colour)} {o.shape}" for o in objs]) + "."
    reasoning = f"Counting them one by one gives {n}."
    return Question("count", "How many shapes are there?", str(n), prompts.format_cot(
        "Count the shapes in the image.", visual, reasoning, str(n)))


def _colour_q(scene: Scene, rng: np.random.Generator) -> Question:
    o = scene.ordered()[int(rng.integers(len(scene.objects)))]
    return Question("colour", f"What colour is the {o.shape}?", o.colour, prompts.format_cot(
        f"Find the colour of the {o.shape}.",
        f"The {o.shape} is {o.colour} and is at the {o.position}.",
        f"The {o.shape} is {o.colour}.", o.colour))


_RELATIONS = {  # word -> (axis, sign): a REL b holds when sign*(a-b) > 0 on that axis
    "left of": ("col", -1),
    "right of": ("col", 1),
    "above": ("row", -1),
    "below": ("row", 1),
}
_AXIS_WORDS = {"col": ("column", vocab.COLS), "row": ("row", vocab.ROWS)}


def _position_q(scene: Scene, rng: np.random.Generator) -> Optional[Question]:
    if len(scene.objects) < 2:
        return None
    objs = scene.ordered()
    i, j = rng.choice(len(objs), size=2, replace=False)
    a, b = objs[int(i)], objs[int(j)]
    true_rels = [r for r, (ax, sg) in _RELATIONS.items() if sg * (getattr(a, ax) - getattr(b, ax)) > 0]
    false_rels = [r for r in _RELATIONS if r not in true_rels]
    # yes and no equally often (distinct cells: both lists are non-empty)
    pool = true_rels if rng.random() < 0.5 else false_rels
    rel = pool[int(rng.integers(len(pool)))]
    axis, _ = _RELATIONS[rel]
    holds = rel in true_rels
    answer = "yes" if holds else "no"
    word, names = _AXIS_WORDS[axis]
    an, bn = f"{a.colour} {a.shape}", f"{b.colour} {b.shape}"
    visual = f"The {an} is at the {a.position}. The {bn} is at the {b.position}."
    reasoning = (
        f"The {a.shape} is in the {names[getattr(a, axis)]} {word} and the {b.shape} in the "
        f"{names[getattr(b, axis)]} {word}, so the {a.shape} is {'' if holds else 'not '}{rel} the {b.shape}."
    )
    return Question("position", f"Is the {an} {rel} the {bn}?", answer, prompts.format_cot(
        f"Check if the {an} is {rel} the {bn}.", visual, reasoning, answer))


def _compare_q(scene: Scene, rng: np.random.Generator) -> Optional[Question]:
    objs = scene.ordered()
    pairs = [(a, b) for a in objs for b in objs if a.size == "large" and b.size == "small"]
    if not pairs:
        return None
    big, small = pairs[int(rng.integers(len(pairs)))]
    first, second = (big, small) if rng.random() < 0.5 else (small, big)
    fn, sn = f"{first.colour} {first.shape}", f"{second.colour} {second.shape}"
    return Question("compare", f"Which is larger, the {fn} or the {sn}?", big.shape, prompts.format_cot(
        f"Compare the sizes of the {fn} and the {sn}.",
        f"The {fn} is {first.size}. The {sn} is {second.size}.",
        f"Large is bigger than small, so the {big.shape} is larger.", big.shape))


_MAKERS: dict[str, Callable[[Scene, np.random.Generator], Optional[Question]]] = {
    "count": _count_q, "colour": _colour_q, "position": _position_q, "compare": _compare_q,
}


def make_questions(scene: Scene, rng: np.random.Generator, k: int) -> list[Question]:
    """Up to `k` questions of distinct, randomly ordered types that apply to `scene`."""
    out: list[Question] = []
    for t in rng.permutation(len(QUESTION_TYPES)):
        if len(out) >= k:
            break
        q = _MAKERS[QUESTION_TYPES[int(t)]](scene, rng)
        if q is not None:
            out.append(q)
    return out
