"""Chain-consistency scoring of CoD candidates (curation/scene_facts.py, `--scorer scene-facts`)."""
import json
import subprocess
import sys

import numpy as np

from megatron_sicog import prompts
from megatron_sicog.curation.scene_facts import SceneFactsScorer, chain_scores
from megatron_sicog.curation.scorers import make_scorer
from megatron_sicog.synthetic.scene import Marginal, Scene, SceneObject
from megatron_sicog.synthetic.text import cod_paragraphs, cod_text

SCENE = Scene(objects=[SceneObject("circle", "red", "large", "striped", 0, 0),
                       SceneObject("square", "blue", "small", "solid", 2, 2)],
              background="gray", marginal=Marginal("yellow", "top"))


def _with(step: int, text: str) -> str:
    paras = cod_paragraphs(SCENE)
    paras[step - 1] = text
    return prompts.format_cod(paras)


def test_consensus_and_f1_by_hand():
    good = cod_text(SCENE)
    # final description turns the square green: of its 5 step-1-kind facts (2 objects, 2 sizes, count 2,
    # 2 colours -> 7 facts) one colour differs from the consensus: F1 = 2*6/(7+7)
    recoloured = _with(5, "A large striped red circle at the top left and a small green square at the bottom "
                          "right, on a gray background.")
    # a minority step 1 (one of three) names a triangle: the consensus stays the true step 1
    odd_first = _with(1, "A large red circle and a small blue triangle on a gray background.")
    s = chain_scores([good, recoloured, odd_first])
    assert s[0] == 1.0
    assert abs(s[1] - 12 / 14) < 1e-12
    assert s[2] == 1.0  # its own final description still matches what most chains saw first
    # a candidate without the steps scores 0
    assert chain_scores([good, "A red circle."])[1] == 0.0


def test_a_group_of_one_is_held_to_its_own_step_one():
    assert chain_scores([cod_text(SCENE)]) == [1.0]
    bad = _with(1, "A small green triangle on a gray background.")
    assert chain_scores([bad])[0] < 0.5


def test_scorer_interface_and_factory():
    sc = make_scorer("scene-facts")
    assert isinstance(sc, SceneFactsScorer) and sc.reads_chain
    out = sc.score([[cod_text(SCENE)] * 2, [cod_text(SCENE)]])
    assert [o.tolist() for o in out] == [[1.0, 1.0], [1.0]]
    assert all(o.dtype == np.float64 for o in out)


def test_curate_tool_keeps_the_chain_consistent_candidate(tmp_path):
    good = cod_text(SCENE)
    drift = _with(5, "A large striped red circle at the top left and a small blue triangle at the bottom right, "
                     "on a gray background.")
    rows = [{"id": "u0", "image": "x.png", "task": "caption", "prompt": "<image>\nDescribe.",
             "candidates": [drift, good, drift.replace("red circle at", "red circle at")]}]
    src = tmp_path / "cod.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cur.jsonl"
    r = subprocess.run([sys.executable, "tools/curate.py", "--input", str(src), "--output", str(out),
                        "--scorer", "scene-facts", "--caption-threshold", "1.0", "--no-progress",
                        "--report-dir", str(tmp_path / "rep")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    kept = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(kept) == 1 and kept[0]["kept_index"] == 1 and kept[0]["score"] == 1.0
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert "chain" in json.dumps(summary)
    r = subprocess.run([sys.executable, "tools/curate.py", "--input", str(src), "--output", str(tmp_path / "o2"),
                        "--scorer", "scene-facts", "--reasoning-scorer", "mbr"], capture_output=True, text=True)
    assert r.returncode == 2 and "scene-facts" in r.stderr


def test_perceived_answers_of_the_worlds_questions():
    from megatron_sicog.curation.scene_facts import consensus, perceived_answer
    facts = consensus([cod_text(SCENE)] * 3)
    assert perceived_answer("<image>\nHow many shapes are there?\nAnswer step by step", facts) == "2"
    assert perceived_answer("What colour is the square?", facts) == "blue"
    assert perceived_answer("Which is larger, the blue square or the red circle?", facts) == "circle"
    assert perceived_answer("Is the red circle above the blue square?", facts) is None  # positions: not step 1
    assert perceived_answer("What colour is the triangle?", facts) is None
    twins = Scene(objects=[SceneObject("circle", "red", "large", "solid", 0, 0),
                           SceneObject("circle", "blue", "small", "solid", 1, 1)], background="gray")
    assert perceived_answer("What colour is the circle?", consensus([cod_text(twins)])) is None


def test_curate_checks_answers_against_the_images_perception(tmp_path):
    prompt = "<image>\nWhat colour is the square?\nAnswer step by step."
    cot = lambda ans: prompts.format_cot("Find the colour of the square.", f"The square is {ans}.",
                                         f"The square is {ans}.", ans)
    rows = [{"id": "u0", "image": "u0.png", "task": "caption", "prompt": "<image>\nDescribe.",
             "candidates": [cod_text(SCENE)] * 3},
            # a 2-of-3 majority for the wrong colour, one candidate agreeing with the perceived blue
            {"id": "u0_q0", "image": "u0.png", "task": "reasoning", "prompt": prompt,
             "candidates": [cot("green"), cot("blue"), cot("green")]},
            # every candidate contradicts the perception: dropped
            {"id": "u0_q1", "image": "u0.png", "task": "reasoning", "prompt": prompt,
             "candidates": [cot("red")] * 3},
            # perception does not settle positions: the unanimous vote decides as before
            {"id": "u0_q2", "image": "u0.png", "task": "reasoning",
             "prompt": "<image>\nIs the red circle above the blue square?\nAnswer step by step.",
             "candidates": [prompts.format_cot("Check.", "x", "y", "yes")] * 3}]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cur.jsonl"
    r = subprocess.run([sys.executable, "tools/curate.py", "--input", str(src), "--output", str(out),
                        "--scorer", "scene-facts", "--caption-threshold", "0.9", "--reasoning-threshold", "1.0",
                        "--no-progress", "--report-dir", str(tmp_path / "rep")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    kept = {json.loads(l)["id"]: json.loads(l) for l in out.read_text().splitlines()}
    assert set(kept) == {"u0", "u0_q0", "u0_q2"}
    assert kept["u0_q0"]["answer_key"] == "blue" and kept["u0_q0"]["kept_index"] == 1
    assert kept["u0_q0"]["perceived_answer"] == "blue" and kept["u0_q0"]["agreeing_candidates"] == 1
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert "contradicts_perception" in json.dumps(summary)


def test_perception_holds_whatever_the_order_of_files_and_chunks(tmp_path):
    """Questions in a file before their image's caption item, one item per chunk: the same decisions."""
    from megatron_sicog.curation.pipeline import curate
    prompt = "<image>\nWhat colour is the square?\nAnswer step by step."
    cot = lambda ans: prompts.format_cot("Find the colour of the square.", f"The square is {ans}.",
                                         f"The square is {ans}.", ans)
    cap = {"id": "u0", "image": "u0.png", "task": "caption", "prompt": "<image>\nDescribe.",
           "candidates": [cod_text(SCENE)] * 3}
    qs = [{"id": "u0_q0", "image": "u0.png", "task": "reasoning", "prompt": prompt,
           "candidates": [cot("green"), cot("blue"), cot("green")]},
          {"id": "u0_q1", "image": "u0.png", "task": "reasoning", "prompt": prompt, "candidates": [cot("red")] * 3}]
    cot_file, cod_file = tmp_path / "cot.jsonl", tmp_path / "cod.jsonl"
    cot_file.write_text("".join(json.dumps(r) + "\n" for r in qs))
    cod_file.write_text(json.dumps(cap) + "\n")
    res = curate([cot_file, cod_file], tmp_path / "cur.jsonl", scorer="scene-facts", caption_threshold=0.9,
                 reasoning_threshold=1.0, chunk_items=1, progress=False)
    kept = {json.loads(l)["id"]: json.loads(l) for l in (tmp_path / "cur.jsonl").read_text().splitlines()}
    assert set(kept) == {"u0", "u0_q0"}
    assert kept["u0_q0"]["perceived_answer"] == "blue" and kept["u0_q0"]["kept_index"] == 1
    assert res.summary["tasks"]["reasoning"]["dropped"]["contradicts_perception"] == 1


def test_a_plain_scorer_object_is_adapted():
    """Any object with `score(groups)` curates; it perceives nothing, so questions go to the vote."""
    from megatron_sicog.curation.pipeline import Curator, CurationConfig, Item

    class Ones:
        name = "ones"

        def score(self, groups):
            return [np.ones(len(g)) for g in groups]

    cur = Curator(CurationConfig(), Ones())
    assert cur.scorer.name == "ones" and not cur.scorer.perceives and cur.scorer.answer_for("x", "q") is None
    out = cur.process([Item("c", "caption", "<image>\nDescribe.", [cod_text(SCENE), "A red circle."])])[0]
    assert out.score == 1.0 and out.record["kept_index"] == 0
