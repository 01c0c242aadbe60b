"""Build and write the splits of the synthetic world (the tiny demo's data).

Splits, all disjoint by scene key (`scene.scene_key`), sampled in a fixed order
(eval first, so the eval set depends only on `seed` and `num_eval`):

=================  =======  ==================================================
split              default  files
=================  =======  ==================================================
eval               200      ``eval.jsonl`` (scene graph, caption, CoD, questions
                            with answers; never trained on)
align              2000     ``align.jsonl`` (plain short captions, base-model
                            alignment pre-training, LLaVA records)
seed               300      ``seed.jsonl`` (one CoD record + one CoT record per
                            question, LLaVA records; stage-1 training); with
                            ``seed_colours`` only scenes in those colours (the
                            demo: four of the six), every other split keeps all
unlabelled         1000     ``unlabelled_images.jsonl`` (id, image, CoD prompt),
                            ``unlabelled_questions.jsonl`` (id, image, question,
                            CoT prompt) and, apart, ``unlabelled_answers.jsonl``
vision             0        ``vision.jsonl`` (the full detailed caption of each
                            image: every fact; pre-trains a vision encoder apart,
                            as CLIP is trained before LLaVA uses it; written only
                            when the split is non-empty)
=================  =======  ==================================================

Why a narrower seed (the demo's ``seed_colours``): the paper's seed (35k
annotations) covers less than its unlabelled pool (118k images) and its
benchmarks. When the seed, the unlabelled pool and the held-out set are one
distribution, more seed fine-tuning (the equal-compute baseline) teaches what
self-labels would; when the seed is narrower, only labels on the broader pool
can carry the model towards the held-out distribution, which is the claim
SICOG makes. The base model's alignment captions cover all colours.

Why these sizes: on 2 CPU cores the tiny model (16 image tokens, ~100-token
responses) trains at a few hundred sequences per second and samples N=6
candidates for ~1000 images + ~1000 questions in a few minutes, so
align pre-training, stage 1 on the seed, generation, curation and
re-pretraining fit the ~15 minute demo budget, while the unlabelled pool is
3x the seed (the self-generated data must outnumber the seed for the
scaling claim to be visible), and 200 eval images give accuracy with a
standard error of about +-3.5 points.

No split holds a near-copy of a held-out image: a scene of a later split whose
rendered image the decontaminator (`curation.decontaminate.ExclusionIndex`,
its default rule) would take for a copy of an eval image (a texture or a
small object is all that differs) is redrawn from a side stream of its split
(`seed`, split index, 1), so the pool's decontamination against ``eval.jsonl``
drops nothing by construction, and every other scene is the one the split's
own stream draws (on the demo's seed 1234: 4 unlabelled and 3 align scenes
redrawn, each a single dark object on a dark background one shape, texture or
size away from a held-out scene; ``manifest.json`` counts them under
``near_copies_redrawn``).

Every image is ``images/<id>.png``; ``scene_graphs.jsonl`` lists all of them
with their split; ``manifest.json`` records the arguments, counts and
response length statistics.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from tqdm import tqdm

from .. import prompts
from . import vocab
from ..io import atomic_path, atomic_write_json, write_jsonl_atomic
from .render import render_scene
from .scene import Scene, SceneSampler, scene_key
from .text import Question, align_caption, caption, cod_text, make_questions

SPLIT_ORDER = ("eval", "align", "seed", "unlabelled", "vision")
DEFAULT_SIZES = {"eval": 200, "align": 2000, "seed": 300, "unlabelled": 1000, "vision": 0}
QUESTIONS_PER_IMAGE = {"eval": 2, "align": 0, "seed": 2, "unlabelled": 1, "vision": 0}
ID_PREFIX = {"eval": "eval", "align": "align", "seed": "seed", "unlabelled": "unl", "vision": "vis"}


@dataclass
class Item:
    """One image of a split: its id, scene, image path and questions."""

    id: str
    split: str
    scene: Scene
    questions: list[Question] = field(default_factory=list)

    @property
    def image(self) -> str:
        return f"images/{self.id}.png"

    def qid(self, k: int) -> str:
        return f"{self.id}_q{k}"


def _held_out_index(items: Sequence[Item], image_size: int):
    """The decontaminator's index (default thresholds) over the rendered held-out images."""
    from ..curation.decontaminate import ExclusionIndex

    index = ExclusionIndex()
    for it in items:
        index.add_image(np.asarray(render_scene(it.scene, image_size)), it.id)
    return index.freeze()


def sample_splits(
    sizes: dict[str, int],
    seed: int,
    questions_per_image: Optional[dict[str, int]] = None,
    max_objects: int = 3,
    max_tries_per_item: int = 1000,
    exclude: Iterable[str] = (),
    seed_colours: Optional[Sequence[str]] = None,
    image_size: int = 64,
    redrawn: Optional[dict[str, int]] = None,
) -> dict[str, list[Item]]:
    """Scenes for every split, no scene key twice across all splits, none of the keys in `exclude`
    (e.g. the scenes another world, such as the embedded base model's, was trained on), and no
    scene after the eval split whose image at `image_size` pixels is a near-copy of an eval image
    under the decontaminator's rule (such a scene is redrawn from the split's side stream; the
    count per split goes into `redrawn` when given).

    `seed_colours` narrows the seed split to those object/dot colours (the others keep the world's
    full range): the annotated seed then covers less than the unlabelled pool and the held-out set,
    as the paper's seed (35k annotations) covers less than its unlabelled images and benchmarks.

    Each split draws from its own RNG stream (`seed`, split index), so a
    split's content depends on its own size and the splits sampled before it.
    A redrawn scene and its questions come from the side stream (`seed`, split
    index, 1), after the main stream has drawn the rejected scene's questions as
    it would have, so the split's other scenes are the ones drawn without the check.
    """
    qpi = dict(QUESTIONS_PER_IMAGE, **(questions_per_image or {}))
    seen: set[str] = set(exclude)
    out: dict[str, list[Item]] = {}
    held_out = None
    for index, split in enumerate(SPLIT_ORDER):
        n = int(sizes.get(split, 0))
        rng = np.random.default_rng([seed, index])
        colours = tuple(seed_colours) if split == "seed" and seed_colours else tuple(vocab.COLOURS)
        sampler = SceneSampler(rng, max_objects=max_objects, colours=colours)
        side = None
        items: list[Item] = []
        tries = 0

        def fresh(s: SceneSampler) -> Optional[Scene]:
            nonlocal tries
            tries += 1
            if tries > max_tries_per_item * max(n, 1):
                raise RuntimeError(
                    f"could not sample {n} distinct scenes for split {split!r} "
                    f"({len(items)} found after {tries - 1} tries, {len(seen)} keys in use)"
                )
            scene = s.sample()
            key = scene_key(scene)
            if key in seen:
                return None
            seen.add(key)
            return scene

        def near_copy(scene: Scene) -> bool:
            return held_out is not None and held_out.image_match(
                np.asarray(render_scene(scene, image_size))) is not None

        while len(items) < n:
            scene = fresh(sampler)
            if scene is None:
                continue
            questions = make_questions(scene, rng, qpi[split])
            if near_copy(scene):
                if side is None:
                    side = SceneSampler(np.random.default_rng([seed, index, 1]), max_objects=max_objects,
                                        colours=colours)
                scene = None
                while scene is None or near_copy(scene):
                    scene = fresh(side)
                questions = make_questions(scene, side.rng, qpi[split])
                if redrawn is not None:
                    redrawn[split] = redrawn.get(split, 0) + 1
            item = Item(f"{ID_PREFIX[split]}_{len(items):05d}", split, scene)
            item.questions = questions
            items.append(item)
        out[split] = items
        if split == "eval" and items:
            held_out = _held_out_index(items, image_size)
    return out


def _llava(rid: str, image: str, human: str, gpt: Optional[str] = None, **extra) -> dict:
    conv = [{"from": "human", "value": human}]
    if gpt is not None:
        conv.append({"from": "gpt", "value": gpt})
    return {"id": rid, "image": image, "conversations": conv, **extra}


def align_records(items: Iterable[Item]) -> Iterator[dict]:
    for it in items:
        yield _llava(it.id, it.image, prompts.build_prompt("caption"), align_caption(it.scene))


def vision_records(items: Iterable[Item]) -> Iterator[dict]:
    """The full detailed caption of each image (every fact), for pre-training a vision encoder apart."""
    for it in items:
        yield _llava(it.id, it.image, prompts.build_prompt("caption"), caption(it.scene))


def seed_records(items: Iterable[Item]) -> Iterator[dict]:
    """One CoD record per image, then one structured-CoT record per question."""
    for it in items:
        yield _llava(f"{it.id}_cod", it.image, prompts.build_prompt("cod"), cod_text(it.scene), task="caption")
        for k, q in enumerate(it.questions):
            yield _llava(it.qid(k), it.image, prompts.build_prompt("cot", q.question), q.cot,
                         task="reasoning", question_type=q.type)


def unlabelled_image_records(items: Iterable[Item]) -> Iterator[dict]:
    """Images only: the human turn (CoD prompt), no response."""
    for it in items:
        yield _llava(it.id, it.image, prompts.build_prompt("cod"), task="caption")


def unlabelled_question_records(items: Iterable[Item]) -> Iterator[dict]:
    """Image-question pairs with the CoT prompt and NO answer."""
    for it in items:
        for k, q in enumerate(it.questions):
            yield _llava(it.qid(k), it.image, prompts.build_prompt("cot", q.question),
                         task="reasoning", question=q.question)


def unlabelled_answer_records(items: Iterable[Item]) -> Iterator[dict]:
    """The held-back answers of the unlabelled questions (analysis only)."""
    for it in items:
        for k, q in enumerate(it.questions):
            yield {"id": it.qid(k), "answer": q.answer, "question_type": q.type}


def eval_records(items: Iterable[Item]) -> Iterator[dict]:
    """Ground truth per eval image: scene graph, caption, CoD and the questions."""
    for it in items:
        yield {
            "id": it.id,
            "image": it.image,
            "scene_graph": it.scene.to_dict(),
            "caption": caption(it.scene),
            "cod": cod_text(it.scene),
            "questions": [
                {"id": it.qid(k), "question": q.question, "answer": q.answer, "type": q.type}
                for k, q in enumerate(it.questions)
            ],
        }


def _write_images(items: list[Item], out_dir: Path, image_size: int) -> None:
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for it in tqdm(items, desc="render", unit="img", mininterval=1.0):
        with atomic_path(out_dir / it.image, suffix=".png") as tmp:
            render_scene(it.scene, image_size).save(tmp, format="PNG")


def _length_stats(texts: list[str]) -> dict:
    """Whitespace+punctuation token counts (close to a small SentencePiece model's)."""
    import re

    counts = [len(re.findall(r"\w+|[^\w\s]", t)) for t in texts]
    if not counts:
        return {}
    return {"mean": round(statistics.fmean(counts), 1), "max": max(counts)}


def write_splits(
    out_dir: str | Path,
    sizes: dict[str, int],
    seed: int,
    image_size: int = 64,
    questions_per_image: Optional[dict[str, int]] = None,
    max_objects: int = 3,
    exclude: Iterable[str] = (),
    seed_colours: Optional[Sequence[str]] = None,
) -> dict:
    """Sample, render and write every split under `out_dir`; returns the manifest."""
    out = Path(out_dir)
    exclude = set(exclude)
    redrawn: dict[str, int] = {}
    splits = sample_splits(sizes, seed, questions_per_image, max_objects, exclude=exclude,
                           seed_colours=seed_colours, image_size=image_size, redrawn=redrawn)
    everything = [it for split in SPLIT_ORDER for it in splits[split]]
    _write_images(everything, out, image_size)
    counts = {
        "align.jsonl": write_jsonl_atomic(out / "align.jsonl", align_records(splits["align"])),
        "seed.jsonl": write_jsonl_atomic(out / "seed.jsonl", seed_records(splits["seed"])),
        "unlabelled_images.jsonl": write_jsonl_atomic(
            out / "unlabelled_images.jsonl", unlabelled_image_records(splits["unlabelled"])),
        "unlabelled_questions.jsonl": write_jsonl_atomic(
            out / "unlabelled_questions.jsonl", unlabelled_question_records(splits["unlabelled"])),
        "unlabelled_answers.jsonl": write_jsonl_atomic(
            out / "unlabelled_answers.jsonl", unlabelled_answer_records(splits["unlabelled"])),
        "eval.jsonl": write_jsonl_atomic(out / "eval.jsonl", eval_records(splits["eval"])),
        "scene_graphs.jsonl": write_jsonl_atomic(out / "scene_graphs.jsonl", (
            {"id": it.id, "split": it.split, "image": it.image, "scene_graph": it.scene.to_dict()}
            for it in everything)),
    }
    if splits["vision"]:
        counts["vision.jsonl"] = write_jsonl_atomic(out / "vision.jsonl", vision_records(splits["vision"]))
    seed_items = splits["seed"]
    manifest = {
        "seed": seed,
        "image_size": image_size,
        "max_objects": max_objects,
        **({"seed_colours": list(seed_colours)} if seed_colours else {}),
        **({"excluded_scenes": len(exclude)} if exclude else {}),
        "near_copies_redrawn": redrawn,
        "images": {s: len(splits[s]) for s in SPLIT_ORDER if s != "vision" or splits[s]},
        "questions_per_image": dict(QUESTIONS_PER_IMAGE, **(questions_per_image or {})),
        "records": counts,
        "response_tokens": {
            "cod": _length_stats([cod_text(it.scene) for it in seed_items]),
            "cot": _length_stats([q.cot for it in seed_items for q in it.questions]),
            "align": _length_stats([align_caption(it.scene) for it in splits["align"]]),
        },
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def scene_keys(out_dir: str | Path) -> list[str]:
    """The scene key of every image a written world holds (its ``scene_graphs.jsonl``), in file order."""
    from ..io import iter_records

    return [scene_key(Scene.from_dict(r["scene_graph"])) for _, r in iter_records(Path(out_dir) / "scene_graphs.jsonl")]


def read_scene_keys(path: str | Path) -> set[str]:
    """Scene keys, one per line, from a text file (gzip when it ends in .gz)."""
    import gzip

    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as f:
        keys = {line.rstrip("\n") for line in f if line.strip()}
    if not keys:
        raise ValueError(f"{p}: no scene keys")
    return keys


def write_scene_keys(path: str | Path, keys: Iterable[str]) -> None:
    """Scene keys one per line, gzip (deterministic: no timestamp) when `path` ends in .gz; atomic."""
    import gzip

    data = "".join(k + "\n" for k in keys).encode()
    p = Path(path)
    with atomic_path(p, suffix=p.suffix) as tmp:
        Path(tmp).write_bytes(gzip.compress(data, mtime=0) if p.suffix == ".gz" else data)
