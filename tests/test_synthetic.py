"""Tests of the synthetic shapes world: determinism, disjoint splits, formats, pixels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from megatron_sicog import prompts
from megatron_sicog.io import iter_records
from megatron_sicog.synthetic import vocab
from megatron_sicog.synthetic.render import render_scene
from megatron_sicog.synthetic.scene import Layout, Marginal, Scene, SceneObject, SceneSampler, scene_key
from megatron_sicog.synthetic.splits import SPLIT_ORDER, sample_splits, write_splits
from megatron_sicog.synthetic.text import align_caption, caption, cod_text, make_questions

SMALL = {"eval": 12, "align": 20, "seed": 10, "unlabelled": 15}


def _records(path: Path) -> list[dict]:
    out = []
    for _, rec in iter_records(path):
        assert isinstance(rec, dict), rec
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("syn")
    write_splits(d, SMALL, seed=7, image_size=64)
    return d


def test_same_seed_same_bytes_other_seed_differs(tmp_path, data_dir):
    write_splits(tmp_path / "again", SMALL, seed=7, image_size=64)
    write_splits(tmp_path / "other", SMALL, seed=8, image_size=64)
    for name in ("seed.jsonl", "eval.jsonl", "align.jsonl", "unlabelled_questions.jsonl"):
        assert (data_dir / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
        assert (data_dir / name).read_bytes() != (tmp_path / "other" / name).read_bytes(), name
    for png in ("images/eval_00003.png", "images/seed_00001.png"):
        assert (data_dir / png).read_bytes() == (tmp_path / "again" / png).read_bytes()


def test_eval_split_does_not_depend_on_other_split_sizes():
    a = sample_splits(SMALL, seed=3)
    b = sample_splits(dict(SMALL, seed=40, unlabelled=3, align=0), seed=3)
    assert [scene_key(i.scene) for i in a["eval"]] == [scene_key(i.scene) for i in b["eval"]]


def test_splits_disjoint_and_sized():
    splits = sample_splits({"eval": 200, "align": 400, "seed": 100, "unlabelled": 300}, seed=0)
    keys = [scene_key(it.scene) for s in SPLIT_ORDER for it in splits[s]]
    ids = [it.id for s in SPLIT_ORDER for it in splits[s]]
    assert len(keys) == 1000
    assert len(set(keys)) == len(keys)
    assert len(set(ids)) == len(ids)


def test_files_written_and_disjoint(data_dir):
    graphs = _records(data_dir / "scene_graphs.jsonl")
    assert len(graphs) == sum(SMALL.values())
    keys = {scene_key(Scene.from_dict(g["scene_graph"])) for g in graphs}
    assert len(keys) == len(graphs)
    for g in graphs:
        assert (data_dir / g["image"]).is_file()
    by_split = {}
    for g in graphs:
        by_split.setdefault(g["split"], set()).add(g["image"])
    eval_images = {r["image"] for r in _records(data_dir / "eval.jsonl")}
    seed_images = {r["image"] for r in _records(data_dir / "seed.jsonl")}
    unl_images = {r["image"] for r in _records(data_dir / "unlabelled_images.jsonl")}
    align_images = {r["image"] for r in _records(data_dir / "align.jsonl")}
    assert eval_images == by_split["eval"] and seed_images == by_split["seed"]
    for a, b in [(eval_images, seed_images), (eval_images, unl_images), (eval_images, align_images),
                 (seed_images, unl_images), (seed_images, align_images), (unl_images, align_images)]:
        assert not a & b
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert manifest["images"] == SMALL


def test_seed_records_follow_formats(data_dir):
    recs = _records(data_dir / "seed.jsonl")
    cod = [r for r in recs if r["task"] == "caption"]
    cot = [r for r in recs if r["task"] == "reasoning"]
    assert len(cod) == SMALL["seed"] and len(cot) >= SMALL["seed"]
    for r in recs:
        human, gpt = r["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].startswith(prompts.IMAGE_PLACEHOLDER + "\n")
    for r in cod:
        assert r["conversations"][0]["value"] == prompts.build_prompt("cod")
        assert prompts.follows_format(r["conversations"][1]["value"], "cod")
    for r in cot:
        assert prompts.follows_format(r["conversations"][1]["value"], "cot")
        assert prompts.conclusion(r["conversations"][1]["value"]).startswith("The answer is ")


def test_unlabelled_files_carry_no_answers(data_dir):
    questions = _records(data_dir / "unlabelled_questions.jsonl")
    answers = {r["id"]: r["answer"] for r in _records(data_dir / "unlabelled_answers.jsonl")}
    assert questions and [q["id"] for q in questions] == list(answers)
    for q in questions + _records(data_dir / "unlabelled_images.jsonl"):
        assert [t["from"] for t in q["conversations"]] == ["human"]
        assert "answer" not in q
        assert "Step 1" not in json.dumps(q)


def test_align_captions_are_plain(data_dir):
    for r in _records(data_dir / "align.jsonl"):
        text = r["conversations"][1]["value"]
        assert "Step" not in text and text.endswith("background.")
        assert len(text.split()) <= 25


def _scene(objects, background="white", marginal=None) -> Scene:
    return Scene(background, tuple(objects), marginal)


def test_pixels_show_the_scene():
    rng = np.random.default_rng(11)
    sampler = SceneSampler(rng, marginal_prob=1.0)
    for size in (64, 96):
        lay = Layout(size)
        for _ in range(40):
            scene = sampler.sample()
            img = render_scene(scene, size)
            assert img.size == (size, size) and img.mode == "RGB"
            for o in scene.objects:
                assert img.getpixel(lay.center(o)) == vocab.COLOURS[o.colour], (o, size)
            assert img.getpixel(lay.dot_center(scene.marginal)) == vocab.COLOURS[scene.marginal.colour]
            assert img.getpixel((0, 0)) == vocab.BACKGROUNDS[scene.background]


def test_textures_and_sizes_are_visible():
    def pixels(obj):
        img = np.asarray(render_scene(_scene([obj], background="black"), 64)).reshape(-1, 3)
        colours = {tuple(p) for p in img}
        area = int((img != np.array(vocab.BACKGROUNDS["black"])).any(axis=1).sum())
        return colours, area

    solid, big = pixels(SceneObject("square", "red", "large", "solid", 1, 1))
    striped, _ = pixels(SceneObject("square", "red", "large", "striped", 1, 1))
    dotted, _ = pixels(SceneObject("square", "red", "large", "dotted", 1, 1))
    _, small = pixels(SceneObject("square", "red", "small", "solid", 1, 1))
    assert len(solid) == 2 and len(striped) == 3 and len(dotted) == 3
    assert big > 2.5 * small


def test_texts_state_the_graph():
    scene = _scene(
        [SceneObject("circle", "red", "large", "striped", 0, 0),
         SceneObject("square", "blue", "small", "solid", 2, 2)],
        background="gray", marginal=Marginal("yellow", "top"),
    )
    cap = caption(scene)
    assert cap == ("A large striped red circle at the top left and a small blue square at the bottom right, "
                   "on a gray background, with a yellow dot near the top edge.")
    cod = cod_text(scene)
    assert prompts.final_description(cod) == cap
    assert prompts.split_steps(cod)[3] == "Circle at top left, square at bottom right. Circle above and left of square."
    assert align_caption(scene) == "A large red circle and a small blue square on a gray background."
    assert prompts.split_steps(cod)[1] == align_caption(scene)  # step 1 speaks the alignment captions' words


def test_question_answers_are_true():
    rng = np.random.default_rng(5)
    sampler = SceneSampler(rng)
    seen_types = set()
    for _ in range(300):
        scene = sampler.sample()
        for q in make_questions(scene, rng, 4):
            seen_types.add(q.type)
            assert prompts.conclusion(q.cot) == f"The answer is {q.answer}."
            if q.type == "count":
                assert q.answer == str(len(scene.objects))
            elif q.type == "colour":
                shape = q.question.split()[-1].rstrip("?")
                assert q.answer == scene.by_shape(shape).colour
            elif q.type == "compare":
                shapes = [w.rstrip("?,") for w in q.question.split() if w.rstrip("?,") in vocab.SHAPES]
                sizes = {s: scene.by_shape(s).size for s in shapes}
                assert sizes[q.answer] == "large" and "small" in sizes.values()
            elif q.type == "position":
                words = q.question.rstrip("?").split()
                a, b = scene.by_shape(words[3]), scene.by_shape(words[-1])
                rel = " ".join(words[4:-3])
                truth = {"left of": a.col < b.col, "right of": a.col > b.col,
                         "above": a.row < b.row, "below": a.row > b.row}[rel]
                assert q.answer == ("yes" if truth else "no")
    assert seen_types == {"count", "colour", "position", "compare"}


def test_yes_no_balanced():
    rng = np.random.default_rng(9)
    sampler = SceneSampler(rng, min_objects=2)
    answers = [q.answer for _ in range(400) for q in make_questions(sampler.sample(), rng, 4)
               if q.type == "position"]
    assert len(answers) == 400
    assert 0.4 < answers.count("yes") / len(answers) < 0.6


def test_response_lengths_stay_small():
    rng = np.random.default_rng(2)
    sampler = SceneSampler(rng, marginal_prob=1.0, min_objects=3)
    import re

    for _ in range(50):
        scene = sampler.sample()
        assert len(re.findall(r"\w+|[^\w\s]", cod_text(scene))) <= 160
        for q in make_questions(scene, rng, 4):
            assert len(re.findall(r"\w+|[^\w\s]", q.cot)) <= 90


def test_cli_writes_everything(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, str(root / "tools/make_synthetic_data.py"), "--output-dir", str(out),
         "--num-align", "3", "--num-seed", "2", "--num-unlabelled", "2", "--num-eval", "2",
         "--seed", "1", "--image-size", "48"],
        capture_output=True, text=True, check=True,
    )
    assert "synthetic data: 9 images" in res.stdout
    assert Image.open(out / "images/eval_00000.png").size == (48, 48)
    for name in ("align.jsonl", "seed.jsonl", "unlabelled_images.jsonl", "unlabelled_questions.jsonl",
                 "unlabelled_answers.jsonl", "eval.jsonl", "scene_graphs.jsonl", "manifest.json"):
        assert (out / name).stat().st_size > 0, name


def test_preview_figure(tmp_path, data_dir):
    from megatron_sicog.synthetic.preview import save_preview

    out = tmp_path / "preview.png"
    assert save_preview(data_dir, out, n=4) == 4
    img = Image.open(out)
    assert img.size[0] > 300 and img.size[1] > 300


def test_vision_split_adds_full_captions_and_leaves_the_others(tmp_path):
    """The optional vision split (full captions, for pre-training a vision encoder apart) is sampled
    last: every other split is byte-identical with and without it, and no scene repeats."""
    from megatron_sicog.synthetic.splits import write_splits
    from megatron_sicog.synthetic.text import caption
    from megatron_sicog.synthetic.scene import Scene

    sizes = {"eval": 4, "align": 6, "seed": 3, "unlabelled": 5}
    a = write_splits(tmp_path / "a", sizes, seed=5, image_size=32)
    b = write_splits(tmp_path / "b", {**sizes, "vision": 7}, seed=5, image_size=32)
    assert "vision.jsonl" not in a["records"] and b["records"]["vision.jsonl"] == 7
    for name in a["records"]:
        if name != "scene_graphs.jsonl":
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    graphs = [json.loads(x) for x in (tmp_path / "b" / "scene_graphs.jsonl").read_text().splitlines()]
    keys = {g["id"]: g for g in graphs}
    assert len(keys) == 25 and sum(g["split"] == "vision" for g in graphs) == 7
    for line in (tmp_path / "b" / "vision.jsonl").read_text().splitlines():
        rec = json.loads(line)
        scene = Scene.from_dict(keys[rec["id"]]["scene_graph"])
        assert rec["conversations"][1]["value"] == caption(scene)
        assert (tmp_path / "b" / rec["image"]).exists()


def test_seed_colours_narrow_only_the_seed_split(tmp_path):
    """--seed-colours: seed scenes (objects and dot) use only those colours; the eval split is unchanged
    and the unlabelled pool keeps every colour; the default draws exactly as before."""
    import subprocess
    import sys

    sizes = {"eval": 40, "align": 30, "seed": 60, "unlabelled": 120}
    full, narrow = sample_splits(sizes, seed=11), sample_splits(sizes, seed=11, seed_colours=("red", "blue"))
    assert [scene_key(i.scene) for i in full["eval"]] == [scene_key(i.scene) for i in narrow["eval"]]
    used = lambda items: {o.colour for it in items for o in it.scene.objects} | {
        it.scene.marginal.colour for it in items if it.scene.marginal}
    assert used(narrow["seed"]) == {"red", "blue"}
    assert used(narrow["unlabelled"]) == set(vocab.COLOURS) == used(full["seed"])
    with pytest.raises(ValueError, match="subset"):
        SceneSampler(np.random.default_rng(0), colours=("red", "teal"))
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, str(root / "tools/make_synthetic_data.py"), "--output-dir",
                          str(tmp_path / "x"), "--seed-colours", "red,teal"], capture_output=True, text=True)
    assert res.returncode == 2 and "--seed-colours: teal not among" in res.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("seed", [1234, pytest.param(777, marks=pytest.mark.slow)])
def test_demo_world_holds_no_near_copy_of_a_held_out_image(seed):
    """The demo's world (LoopConfig's data arguments, the base's scenes excluded): the decontaminator's
    own rule (default thresholds, as tools/curate.py --exclude eval.jsonl applies it) finds no seed,
    unlabelled or align image a copy of a held-out one, so the demo's decontamination drops 0 by
    construction. At seed 1234 the draw without the check held 4 such unlabelled scenes and 3 align
    ones (one dark object on a dark background, one shape, texture or size away from a held-out
    scene): exactly those are redrawn."""
    from megatron_sicog.curation.decontaminate import ExclusionIndex
    from megatron_sicog.loop import LoopConfig
    from megatron_sicog.synthetic.splits import read_scene_keys

    c = LoopConfig()
    root = Path(__file__).resolve().parent.parent
    redrawn: dict = {}
    splits = sample_splits(
        {"eval": c.num_eval, "align": c.num_align, "seed": c.num_seed, "unlabelled": c.num_unlabelled}, seed,
        {"unlabelled": c.unlabelled_questions_per_image}, c.max_objects,
        exclude=read_scene_keys(root / c.base_model / "scene_keys.txt.gz"),
        seed_colours=c.seed_colours.split(","), image_size=c.image_size, redrawn=redrawn)
    index = ExclusionIndex()
    for it in splits["eval"]:
        index.add_image(np.asarray(render_scene(it.scene, c.image_size)), it.id)
    index.freeze()
    matches = [(it.id, index.image_match(np.asarray(render_scene(it.scene, c.image_size))))
               for split in ("seed", "unlabelled", "align") for it in splits[split]]
    assert [m for m in matches if m[1] is not None] == []
    if seed == 1234:
        assert redrawn == {"unlabelled": 4, "align": 3}
