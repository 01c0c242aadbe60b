"""Tests of the evaluation metrics: fact parsing, caption fidelity, answer accuracy, scoring CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from megatron_sicog.evaluation.facts import graph_facts, text_facts
from megatron_sicog.evaluation.metrics import aggregate_fidelity, answer_correct, caption_fidelity
from megatron_sicog.evaluation.scoring import eval_requests, score_predictions
from megatron_sicog.io import write_jsonl_atomic
from megatron_sicog.synthetic.scene import Marginal, Scene, SceneObject, SceneSampler
from megatron_sicog.synthetic.splits import write_splits
from megatron_sicog.synthetic.text import caption, cod_text

ROOT = Path(__file__).resolve().parent.parent

SCENE = Scene(
    "gray",
    (SceneObject("circle", "red", "large", "striped", 0, 0), SceneObject("square", "blue", "small", "solid", 2, 2)),
    Marginal("yellow", "top"),
)
GRAPH = SCENE.to_dict()


def test_ground_truth_texts_score_one():
    rng = np.random.default_rng(4)
    sampler = SceneSampler(rng)
    for _ in range(300):
        scene = sampler.sample()
        graph = scene.to_dict()
        for text in (caption(scene), cod_text(scene)):
            fid = caption_fidelity(text, graph)
            assert (fid.precision, fid.recall, fid.f1) == (1.0, 1.0, 1.0), (text, fid.as_dict())


def test_wrong_colour_scores_lower():
    good = caption(SCENE)
    bad = good.replace("red circle", "green circle")
    fid = caption_fidelity(bad, GRAPH)
    assert fid.f1 < 1.0 and fid.precision < 1.0 and fid.recall < 1.0
    assert fid.hallucinated == [("colour", "circle", "green")]
    assert fid.missing == [("colour", "circle", "red")]


def test_hallucinated_object_lowers_precision_only_for_its_facts():
    text = caption(SCENE).replace(" and a small blue square", ", a small blue square and a large green triangle at the center")
    fid = caption_fidelity(text, GRAPH)
    claimed_wrong = {f[0] for f in fid.hallucinated}
    assert {"object", "colour", "size", "position", "texture", "count"} <= claimed_wrong
    assert fid.precision < 1.0 and fid.recall < 1.0  # the count is wrong too
    assert ("position", "triangle", "middle center") in fid.hallucinated


def test_missing_content_lowers_recall_not_precision():
    text = "A large striped red circle at the top left and a small blue square at the bottom right."
    fid = caption_fidelity(text, GRAPH)
    assert fid.precision == 1.0
    assert set(fid.missing) == {("background", "gray"), ("dot", "yellow"), ("dot_side", "top")}
    assert caption_fidelity("", GRAPH).f1 == 0.0
    assert caption_fidelity("I do not know.", GRAPH).f1 == 0.0


def test_parser_reads_variant_phrasings():
    text = ("There are two shapes. The circle is red, big and striped. It is at the top left. "
            "The square is blue and small, in the bottom right. The background is grey, "
            "with a yellow dot near the top edge.")
    fid = caption_fidelity(text, GRAPH)
    assert fid.f1 == 1.0, fid.as_dict()
    facts = text_facts("A tiny orange diamond at the centre, on a black background. The diamond is left of the circle.")
    assert ("position", "diamond", "middle center") in facts
    assert ("size", "diamond", "small") in facts
    assert ("background", "black") in facts
    assert not any(f[0] == "position" and f[1] == "circle" for f in facts)  # 'left of' is a relation
    assert ("count", 2) in text_facts("Two shapes: square, diamond.")
    assert ("count", 3) in text_facts("3 shapes.")
    assert text_facts("A red background.") == {("background", "red")}
    assert ("colour", "circle", "white") in text_facts("A white circle.")
    assert ("colour", "circle", "black") in text_facts("The circle is black.")


def test_graph_facts_count():
    facts = graph_facts(GRAPH)
    assert len(facts) == 2 * 5 + 1 + 1 + 2
    no_dot = Scene("black", SCENE.objects).to_dict()
    assert not any(f[0].startswith("dot") for f in graph_facts(no_dot))
    fid = caption_fidelity(caption(SCENE), no_dot)
    assert set(fid.hallucinated) == {("dot", "yellow"), ("dot_side", "top"), ("background", "gray")}


@pytest.mark.parametrize("prediction,answer,ok", [
    ("Step 1: Task objective. Count.\nStep 2: Crucial visual information. x.\nStep 3: Reasoning. y.\n"
     "Step 4: Conclusion. The answer is 3.", "3", True),
    ("The answer is three.", "3", True),
    ("3 shapes", "3", True),
    ("The answer is 2.", "3", False),
    ("Yes, it is.", "yes", True),
    ("The answer is No.", "yes", False),
    ("The answer is red.", "red", True),
    ("The answer is the circle.", "circle", True),
    ("The answer is blue.", "red", False),
    ("", "red", False),
    ("I cannot tell from the image.", "no", False),
])
def test_answer_accuracy_phrasings(prediction, answer, ok):
    assert answer_correct(prediction, answer) is ok


def test_aggregate_by_kind():
    fids = [caption_fidelity(caption(SCENE), GRAPH), caption_fidelity(caption(SCENE).replace("red", "green"), GRAPH)]
    agg = aggregate_fidelity(fids)
    assert agg["n"] == 2 and agg["exact"] == 0.5
    assert agg["recall_by_kind"]["colour"] == 0.75 and agg["recall_by_kind"]["size"] == 1.0
    assert agg["hallucinated_by_kind"] == {"colour": 1}


@pytest.fixture(scope="module")
def eval_path(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("evalgt")
    write_splits(d, {"eval": 6, "align": 0, "seed": 0, "unlabelled": 0}, seed=3, questions_per_image={"eval": 2})
    return d / "eval.jsonl"


def test_score_predictions_counts(tmp_path, eval_path):
    recs = [json.loads(line) for line in eval_path.read_text().splitlines()]
    questions = [q for r in recs for q in r["questions"]]
    assert len(questions) >= 8
    preds = [{"id": recs[0]["id"], "task": "caption", "prediction": recs[0]["cod"]},
             {"id": recs[1]["id"], "task": "caption", "prediction": "A large red circle at the top left."},
             {"id": recs[0]["id"], "task": "caption", "prediction": "duplicate, ignored"},
             {"id": "eval_99999", "task": "caption", "prediction": "x"}]
    wrong = {"yes": "no", "no": "yes"}
    for i, q in enumerate(questions[:8]):
        ans = q["answer"] if i < 6 else wrong.get(q["answer"], "zebra")
        preds.append({"id": q["id"], "task": "reasoning", "prediction": f"Step 4: Conclusion. The answer is {ans}."})
    path = tmp_path / "preds.jsonl"
    write_jsonl_atomic(path, preds)
    with open(path, "a") as f:
        f.write("{not json\n")
    m = score_predictions(path, eval_path)
    assert m["reasoning"]["n"] == 8 and m["reasoning"]["accuracy"] == 0.75
    assert sum(v["n"] for v in m["reasoning"]["by_type"].values()) == 8
    assert m["caption"]["n"] == 2 and m["caption"]["f1"] < 1.0
    assert m["caption"]["format_rate"] == 0.5  # the CoD follows the format, the plain caption does not
    assert m["reasoning"]["format_rate"] == 0.0 and m["reasoning"]["answered_rate"] == 1.0
    assert [it["f1"] for it in m["items"] if it["task"] == "caption"][0] == 1.0
    assert m["duplicates"] == [recs[0]["id"]] and m["unknown_ids"] == ["eval_99999"]
    assert len(m["malformed"]) == 1 and ":" in m["malformed"][0]
    assert len(m["missing"]["caption"]) == 4
    assert len(m["missing"]["reasoning"]) == len(questions) - 8


def test_requests_and_cli(tmp_path, eval_path):
    reqs = list(eval_requests(eval_path))
    assert sum(r["task"] == "caption" for r in reqs) == 6
    preds = tmp_path / "p.jsonl"
    write_jsonl_atomic(preds, ({"id": r["id"], "task": r["task"], "prediction": "The answer is yes."} for r in reqs))
    out = tmp_path / "metrics.json"
    res = subprocess.run([sys.executable, str(ROOT / "tools/evaluate.py"), "--predictions", str(preds),
                          "--ground-truth", str(eval_path), "--output", str(out)],
                         capture_output=True, text=True, check=True)
    m = json.loads(out.read_text())
    assert "reasoning accuracy" in res.stdout
    assert m["caption"]["f1"] == 0.0 and m["caption"]["n"] == 6
    yes = sum(r["answer"] == "yes" for r in
              (q for line in eval_path.read_text().splitlines() for q in json.loads(line)["questions"]))
    assert m["reasoning"]["accuracy"] == pytest.approx(yes / m["reasoning"]["n"])
