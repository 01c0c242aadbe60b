"""Decontamination: exact / perceptual image copies and normalised questions of excluded files are
dropped from curation, counted by reason; distinct images and other questions are kept."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from megatron_sicog.curation import curate
from megatron_sicog.curation.decontaminate import (ExclusionIndex, dhash, hamming, normalize_question, phash,
                                                   question_of_prompt)
from megatron_sicog.evaluation.benchmarks.export import image_base64, write_tsv
from megatron_sicog.io import iter_records, write_jsonl_atomic
from megatron_sicog.prompts import build_prompt, format_cot
from tests.helpers import load_tool


def scene(seed: int, size: int = 64) -> np.ndarray:
    """A smooth random picture (an 6x6 colour grid upsampled): structure a perceptual hash can see."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def jpeg(a: np.ndarray, quality: int = 70) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def resize(a: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR))


def index_of(*images, **limits):
    idx = ExclusionIndex.build([], **limits)
    for k, im in enumerate(images):
        idx.add_image(im, f"x:{k}")
    return idx.freeze()


def test_hashes_match_reencoded_and_resized_copies_not_other_images():
    a, b = scene(1), scene(2)
    idx = index_of(a)
    assert idx.image_match(a.copy()) == ("exact_image", "x:0")
    for copy in (jpeg(a), jpeg(a, 40), resize(a, 48), resize(a, 160), jpeg(resize(a, 96))):
        assert hamming(dhash(a), dhash(copy)) <= 6 and hamming(phash(a), phash(copy)) <= 6
        assert idx.image_match(copy) == ("near_image", "x:0")
    others = [scene(s) for s in range(2, 40)]
    assert all(idx.image_match(o) is None for o in others)
    assert min(hamming(dhash(a), dhash(o)) for o in others) > 6
    # grey structure alone is not enough: the same layout in other colours is another picture
    recoloured = np.ascontiguousarray(255 - a)
    assert idx.image_match(recoloured) is None and idx.image_match(b) is None


def _obj(size, colour, texture, shape, row, col):
    return {"shape": shape, "colour": colour, "size": size, "texture": texture, "row": row, "col": col}


def _dot(colour, side, offset):
    return {"colour": colour, "side": side, "offset": offset}


# pairs of the tiny demo's world (seed 1234: an unlabelled scene and the held-out scene whose 8x8 hashes and
# 4x4 colour thumbnail it matched): distinct scenes that the 16x16 check tells apart
DEMO_PAIRS = [
    (("gray", [_obj("small", "green", "dotted", "square", 0, 2)], None),
     ("gray", [_obj("small", "red", "striped", "triangle", 0, 2)], None)),
    (("gray", [_obj("small", "red", "solid", "triangle", 1, 0)], None),
     ("gray", [_obj("large", "purple", "dotted", "diamond", 1, 0)], None)),
    (("white", [_obj("large", "green", "solid", "circle", 0, 2)], None),
     ("white", [_obj("large", "purple", "striped", "circle", 0, 2)], None)),
    (("black", [_obj("large", "blue", "solid", "triangle", 0, 0), _obj("small", "red", "striped", "square", 2, 1)], None),
     ("black", [_obj("large", "yellow", "solid", "triangle", 0, 0), _obj("small", "purple", "solid", "diamond", 2, 1)],
      None)),
    (("white", [_obj("small", "red", "solid", "square", 0, 1)], _dot("orange", "bottom", 0.279)),
     ("white", [_obj("small", "blue", "solid", "triangle", 0, 1)], _dot("orange", "bottom", 0.267))),
]


def render(background, objects, marginal):
    from megatron_sicog.synthetic.render import render_scene
    from megatron_sicog.synthetic.scene import Scene

    return np.asarray(render_scene(Scene.from_dict({"background": background, "objects": objects,
                                                    "marginal": marginal}), 64))


def test_distinct_demo_scenes_are_not_copies_but_their_reencodes_are():
    for held, other in DEMO_PAIRS:
        a, b = render(*held), render(*other)
        # the hashes and the 4x4 colour thumbnail alone (no 16x16 check) call them copies
        assert index_of(a, max_cell=255).image_match(b) == ("near_image", "x:0")
        idx = index_of(a)
        assert idx.image_match(b) is None
        for copy in (jpeg(a, 75), jpeg(a, 90), resize(a, 32), resize(a, 48), resize(a, 160),
                     jpeg(resize(a, 224), 80)):
            assert idx.image_match(copy) == ("near_image", "x:0")
    # the known limit: a texture is all that differs (dots of 4-pixel period on a large square)
    solid = render("white", [_obj("large", "purple", "solid", "square", 2, 1)], None)
    dotted = render("white", [_obj("large", "purple", "dotted", "square", 2, 1)], None)
    assert index_of(solid).image_match(dotted) == ("near_image", "x:0")


def test_questions_normalise_and_come_out_of_prompts():
    assert normalize_question("<image>\n What colour is the  Circle?") == normalize_question("what colour is the circle")
    assert normalize_question("What colour is the circle?") != normalize_question("What colour is the square?")
    assert question_of_prompt(build_prompt("cot", "How many shapes are there?")) == "How many shapes are there?"
    assert question_of_prompt(build_prompt("answer", "Is it red?")) == "Is it red?"
    assert question_of_prompt(build_prompt("cod")) is None


def _cot(ans):
    return format_cot("Find it.", "I see it.", "So it is.", ans)


@pytest.fixture
def world(tmp_path):
    """Candidates over 6 images; excluded: a LLaVA held-out file, an MMBench TSV and a POPE file."""
    img = tmp_path / "img"
    (img / "held").mkdir(parents=True)
    pics = {k: scene(10 + k) for k in range(7)}
    for k, a in pics.items():
        Image.fromarray(a).save(img / f"u{k}.png")
    Image.fromarray(pics[0]).save(img / "held" / "h0.png")              # u0: exact copy (PNG again)
    Image.fromarray(jpeg(resize(pics[1], 96))).save(img / "held" / "h1.jpg")  # u1: re-encoded, resized
    Image.fromarray(scene(99)).save(img / "held" / "h2.png")
    write_jsonl_atomic(tmp_path / "held.jsonl", [
        {"id": "h0", "image": "img/held/h0.png", "question": "What is in the picture?"},
        {"id": "h1", "image": "img/held/h1.jpg",
         "conversations": [{"from": "human", "value": "<image>\nWhere is the big red circle?"}]},
        {"id": "h2", "image": "img/held/h2.png", "question": "How many stripes does the flag have?"}])
    write_tsv(tmp_path / "mmb.tsv", [
        {"index": 0, "question": "Which shape is largest?", "A": "a", "B": "b", "answer": "A",
         "image": image_base64(jpeg(pics[2], 60))},                  # u2: a benchmark's re-encoded copy
        {"index": 1, "question": "Which colour is the TRIANGLE?", "A": "a", "B": "b", "answer": "B",
         "image": image_base64(scene(98))}])
    Image.fromarray(scene(97)).save(tmp_path / "p0.png")
    write_jsonl_atomic(tmp_path / "pope.jsonl", [
        {"question_id": 1, "image": "p0.png", "text": "Is there a dog in the image?", "label": "yes"}])
    cands = [
        {"id": "c0", "image": "u0.png", "task": "caption", "prompt": build_prompt("cod"), "candidates": ["a", "a"]},
        {"id": "c1", "image": "u1.png", "task": "caption", "prompt": build_prompt("cod"), "candidates": ["b", "b"]},
        {"id": "q2", "image": "u2.png", "task": "reasoning", "prompt": build_prompt("cot", "Is it red?"),
         "candidates": [_cot("yes")] * 2},
        {"id": "q3", "image": "u3.png", "task": "reasoning",  # the TSV's question, another image
         "prompt": build_prompt("cot", "which colour is the triangle"), "candidates": [_cot("red")] * 2},
        {"id": "q4", "image": "u4.png", "task": "reasoning",  # the POPE question
         "prompt": build_prompt("cot", "Is there a dog in the image"), "candidates": [_cot("no")] * 2},
        {"id": "q5", "image": "u5.png", "task": "reasoning",
         "prompt": build_prompt("cot", "How many shapes are there?"), "candidates": [_cot("2")] * 2},
        {"id": "c6", "image": "u6.png", "task": "caption", "prompt": build_prompt("cod"), "candidates": ["c", "c"]},
    ]
    write_jsonl_atomic(tmp_path / "cands.jsonl", cands)
    return tmp_path


EXCLUDE = ["held.jsonl", "mmbench_dev=mmb.tsv", "pope=pope.jsonl"]


def _spec(root, s):
    name, sep, path = s.partition("=")
    return f"{name}={root / path}" if sep else str(root / s)


def test_curate_drops_copies_and_questions_by_reason(world):
    res = curate(world / "cands.jsonl", world / "out.jsonl", scorer="lexical", progress=False,
                 exclude=[_spec(world, s) for s in EXCLUDE], image_root=world / "img",
                 exclude_image_root=world, report_dir=world / "rep")
    kept = sorted(r["id"] for _, r in iter_records(world / "out.jsonl"))
    assert kept == ["c6", "q5"]
    d = res.summary["decontamination"]
    assert d["dropped"] == {"exact_image": 1, "near_image": 2, "question": 2, "unverifiable_image": 0}
    assert d["dropped_total"] == 5 and d["question_matches"] == 2
    assert [f["format"] for f in d["files"]] == ["llava", "mmbench_dev", "pope"]
    assert [f["items"] for f in d["files"]] == [3, 2, 1] and d["excluded_images"] == 6
    why = {e["id"]: (e["reason"], e["matches"]) for e in d["examples"]}
    assert why["c0"] == ("exact_image", f"{world / 'held.jsonl'}:1")
    assert why["c1"][0] == "near_image" and why["q2"][0] == "near_image"
    assert why["q3"][0] == "question" and why["q4"][0] == "question"
    assert res.summary["dropped"]["excluded_near_image"] == 2
    assert json.loads((world / "rep" / "summary.json").read_text())["decontamination"]["dropped_total"] == 5
    from megatron_sicog.loop_report import decontamination  # what the tiny demo's summary and report show
    assert decontamination(world / "rep") == {"excluded_images": 6, "dropped_total": 5, "dropped": d["dropped"]}
    assert decontamination(world / "nowhere") is None

    # images only: the question matches are counted, not dropped
    res = curate(world / "cands.jsonl", world / "out2.jsonl", scorer="lexical", progress=False,
                 exclude=[_spec(world, s) for s in EXCLUDE], image_root=world / "img",
                 exclude_image_root=world, exclude_match=("image",))
    d = res.summary["decontamination"]
    assert d["dropped_total"] == 3 and d["question_matches"] == 2 and res.summary["kept"] == 4


def test_cli_decontamination_and_its_mistakes(world, capsys):
    tool = load_tool("curate")
    base = ["--input", str(world / "cands.jsonl"), "--scorer", "lexical", "--no-progress", "--overwrite",
            "--image-root", str(world / "img"), "--exclude-image-root", str(world)]
    assert tool.main([*base, "--output", str(world / "o.jsonl"), "--exclude",
                      *[_spec(world, s) for s in EXCLUDE]]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["excluded"]["near_image"] == 2 and line["kept"] == 2
    from megatron_sicog.guards import UsageError
    with pytest.raises(UsageError, match="nope.jsonl: no such file"):
        tool.main([*base, "--output", str(world / "o.jsonl"), "--exclude", str(world / "nope.jsonl")])
    with pytest.raises(UsageError, match="unknown benchmark 'mmbnch'"):
        tool.main([*base, "--output", str(world / "o.jsonl"), "--exclude", f"mmbnch={world / 'mmb.tsv'}"])
    write_tsv(world / "bad.tsv", [{"index": 0, "question": "q", "A": "a", "B": "b", "answer": "A", "image": "@@"}])
    assert tool.main([*base, "--output", str(world / "o.jsonl"), "--exclude", f"mmbench={world / 'bad.tsv'}"]) == 2
    assert "bad.tsv" in capsys.readouterr().err


def test_held_out_split_of_other_images_is_a_noop(world):
    write_jsonl_atomic(world / "other.jsonl", [{"id": "h2", "image": "img/held/h2.png", "question": "Count them."}])
    res = curate(world / "cands.jsonl", world / "out.jsonl", scorer="lexical", progress=False,
                 exclude=[str(world / "other.jsonl")], image_root=world / "img", exclude_image_root=world)
    assert res.summary["decontamination"]["dropped_total"] == 0 and res.summary["kept"] == 7
