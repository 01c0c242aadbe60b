"""Seeded synthetic candidate records that look like sampled CoD / CoT outputs.

For benchmarks and tests of curation: each caption item is a scene whose
candidates are paraphrases in the Chain-of-Description format (with a chance
of one off-topic outlier); each reasoning item is a multiple-choice or counting
question whose candidates are structured CoTs ending in varied answer
phrasings, most of them agreeing with the item's true answer. The true answer
is stored as ``reference``.
"""
from __future__ import annotations

import random
from typing import Iterator

from megatron_sicog.prompts import build_prompt, format_cod, format_cot

__all__ = ["synthetic_records"]

_SUBJECTS = [
    ("dog", ["dog", "puppy", "brown dog", "small dog"]),
    ("cat", ["cat", "kitten", "grey cat", "tabby cat"]),
    ("man", ["man", "person", "young man", "adult man"]),
    ("woman", ["woman", "lady", "young woman", "person"]),
    ("child", ["child", "kid", "little girl", "young boy"]),
    ("bus", ["bus", "city bus", "red bus", "double-decker bus"]),
    ("bird", ["bird", "small bird", "sparrow", "songbird"]),
    ("horse", ["horse", "brown horse", "pony", "mare"]),
]
_ACTIONS = [
    ["running", "sprinting", "jogging", "dashing"],
    ["sitting", "resting", "seated", "lounging"],
    ["standing", "waiting", "standing still", "posing"],
    ["playing", "playing happily", "having fun", "frolicking"],
]
_PLACES = [
    ["on a sandy beach", "along the shore", "on the beach", "by the sea"],
    ["in a park", "on a grassy lawn", "in a green park", "on the grass"],
    ["on a busy street", "on a city road", "in the street", "downtown"],
    ["in a living room", "indoors on a sofa", "on a couch", "inside a cozy room"],
    ["in a snowy field", "on the snow", "in the snow", "in a winter field"],
]
_DETAILS = [
    ["under a clear blue sky", "on a sunny day", "in bright sunlight", "with blue sky above"],
    ["near some trees", "beside tall trees", "with trees behind", "next to a row of trees"],
    ["with a red ball nearby", "next to a red ball", "close to a red ball", "holding a red ball"],
    ["at sunset", "in the evening light", "as the sun goes down", "in warm sunset light"],
]
_OUTLIERS = [
    "A plate of pasta with tomato sauce on a wooden table.",
    "A laptop and a coffee mug on an office desk.",
    "A red car parked inside a concrete garage.",
    "A bowl of fruit with apples and bananas on a counter.",
    "An empty train platform at night with bright lights.",
]
_OPTION_SETS = [
    ["cat", "dog", "rabbit", "horse"],
    ["red", "blue", "green", "yellow"],
    ["left", "right", "center", "top"],
    ["morning", "noon", "evening", "night"],
    ["wood", "metal", "glass", "plastic"],
]
_NUM_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _caption(rng: random.Random, scene: tuple) -> str:
    subj, act, place, det = scene
    s, a, p, d = (rng.choice(x) for x in (subj, act, place, det))
    forms = [
        f"A {s} {a} {p} {d}.",
        f"{p[0].upper()}{p[1:]}, a {s} is {a} {d}.",
        f"The image shows a {s} {a} {p}, {d}.",
        f"A {s} is seen {a} {p} {d}.",
    ]
    return rng.choice(forms)


def _cod(rng: random.Random, scene: tuple, caption: str) -> str:
    subj, act, place, det = scene
    s = rng.choice(subj)
    return format_cod([
        f"The image is about a {s} {rng.choice(place)}.",
        f"The {s} is {rng.choice(act)}; its colours are natural and clearly visible.",
        f"The {s} is in the foreground {rng.choice(place)}.",
        f"In the background there is scenery {rng.choice(det)}.",
        caption,
    ])


def _answer_phrase(rng: random.Random, letter: str, text: str) -> str:
    forms = [
        f"The answer is ({letter}).",
        f"The answer is {letter}.",
        f"The answer is ({letter}) {text}.",
        f"Therefore, the correct option is **{letter}**.",
        f"Answer: {letter.lower()}",
        f"So the answer is {text}.",
        f"{letter}. {text[0].upper()}{text[1:]}",
        f"The final answer is option {letter}.",
    ]
    return rng.choice(forms)


def _count_phrase(rng: random.Random, n: int, noun: str) -> str:
    forms = [
        f"The answer is {n}.",
        f"The answer is {_NUM_WORDS[n] if n < len(_NUM_WORDS) else n}.",
        f"There are {n} {noun}s, so the answer is {n} {noun}s.",
        f"Answer: {n}",
        f"The final answer is \\boxed{{{n}}}.",
    ]
    return rng.choice(forms)


def _reasoning(rng: random.Random, idx: int, n_candidates: int, p_correct: float) -> dict:
    if rng.random() < 0.6:
        opts = list(rng.choice(_OPTION_SETS))
        rng.shuffle(opts)
        truth = rng.randrange(len(opts))
        letters = "ABCD"
        q = "Which option best answers the question about the image? " + " ".join(
            f"({letters[k]}) {o}" for k, o in enumerate(opts))
        cands = []
        for _ in range(n_candidates):
            pick = truth if rng.random() < p_correct else rng.randrange(len(opts))
            r = rng.random()
            if r < 0.08:
                cands.append("Step 1: Task objective. Decide.\nStep 2: Crucial visual information. "
                             "The image is unclear.\nStep 3: Reasoning. Hard to say.\nStep 4: Conclusion. "
                             "I cannot determine it from the image.")
                continue
            concl = _answer_phrase(rng, letters[pick], opts[pick])
            cands.append(format_cot(
                "Pick the option that matches the image.",
                f"The relevant region shows something {opts[pick]}-like near the {rng.choice(['center', 'left', 'top'])}.",
                f"Comparing the options, {opts[pick]} fits best while the others do not.",
                "x",
            ).replace("The answer is x.", concl))
        ref = letters[truth]
    else:
        noun = rng.choice(["apple", "person", "car", "bird", "chair"])
        truth = rng.randint(1, 9)
        q = f"How many {noun}s are in the image?"
        cands = []
        for _ in range(n_candidates):
            n = truth if rng.random() < p_correct else max(0, truth + rng.choice([-2, -1, 1, 2]))
            concl = _count_phrase(rng, n, noun)
            cands.append(format_cot(
                f"Count the {noun}s.", f"I can see {n} {noun}s spread across the scene.",
                f"Counting them one by one gives {n}.", "x",
            ).replace("The answer is x.", concl))
        ref = str(truth)
    return {"id": f"r{idx:07d}", "image": f"img/{idx:07d}.jpg", "task": "reasoning",
            "prompt": build_prompt("cot", q), "candidates": cands, "reference": ref}


def synthetic_records(n_items: int, n_candidates: int = 6, seed: int = 0, task: str = "mixed",
                      cod: bool = True, p_outlier: float = 0.3, p_correct: float = 0.7) -> Iterator[dict]:
    """Yield `n_items` candidate records (task 'caption', 'reasoning' or 'mixed')."""
    rng = random.Random(seed)
    for i in range(n_items):
        t = task if task != "mixed" else ("caption" if i % 2 == 0 else "reasoning")
        if t == "reasoning":
            yield _reasoning(rng, i, n_candidates, p_correct)
            continue
        scene = (rng.choice(_SUBJECTS)[1], rng.choice(_ACTIONS), rng.choice(_PLACES), rng.choice(_DETAILS))
        caps = [_caption(rng, scene) for _ in range(n_candidates)]
        if n_candidates > 2 and rng.random() < p_outlier:
            caps[rng.randrange(n_candidates)] = rng.choice(_OUTLIERS)
        cands = [_cod(rng, scene, c) for c in caps] if cod else caps
        yield {"id": f"c{i:07d}", "image": f"img/{i:07d}.jpg", "task": "caption",
               "prompt": build_prompt("cod" if cod else "caption"), "candidates": cands}
