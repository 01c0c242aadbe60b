"""CoD step consistency and the quality of self-generated candidates (evaluation/consistency.py)."""
import json

import numpy as np

from megatron_sicog import prompts
from megatron_sicog.evaluation.consistency import (answer_vote_quality, caption_candidate_quality,
                                                   mean_step_consistency, step_consistency)
from megatron_sicog.synthetic.scene import SceneSampler
from megatron_sicog.synthetic.text import caption, cod_paragraphs, cod_text


def _scene(seed=0, n=None):
    s = SceneSampler(np.random.default_rng(seed), max_objects=3)
    while True:
        sc = s.sample()
        if n is None or len(sc.objects) == n:
            return sc


def test_gold_cod_is_consistent():
    for k in range(20):
        r = step_consistency(cod_text(_scene(k)))
        assert r == {"jaccard": 1.0, "count_agrees": True}


def test_contradicting_steps_are_caught():
    sc = _scene(3, n=3)
    paras = cod_paragraphs(sc)
    shapes = [o.shape for o in sc.ordered()]
    # step 1 names one shape the description never mentions and drops one it does
    other = next(s for s in ("circle", "square", "triangle", "diamond") if s not in shapes)
    paras[0] = f"Three shapes: {shapes[0]}, {shapes[1]}, {other}."
    r = step_consistency(prompts.format_cod(paras))
    assert r["jaccard"] == 2 / 4
    assert r["count_agrees"] is True
    paras[0] = f"Two shapes: {shapes[0]}, {shapes[1]}, {shapes[2]}."
    r = step_consistency(prompts.format_cod(paras))
    assert r["jaccard"] == 1.0 and r["count_agrees"] is False


def test_a_step_one_without_a_number_counts_the_objects_it_names():
    sc = _scene(3, n=3)
    paras = cod_paragraphs(sc)
    assert step_consistency(prompts.format_cod(paras)) == {"jaccard": 1.0, "count_agrees": True}
    o = sc.ordered()
    paras[0] = f"A {o[0].size} {o[0].colour} {o[0].shape} and a {o[1].size} {o[1].colour} {o[1].shape}."
    r = step_consistency(prompts.format_cod(paras))
    assert r["count_agrees"] is False and r["jaccard"] < 1.0


def test_unparsable_counts_as_zero():
    m = mean_step_consistency([cod_text(_scene(1)), "no steps at all"])
    assert m["n"] == 2 and m["parsed"] == 0.5
    assert m["jaccard"] == 0.5 and m["count_agrees"] == 0.5
    assert mean_step_consistency([])["jaccard"] is None


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_caption_candidate_quality(tmp_path):
    a, b = _scene(1), _scene(2)
    graphs = _write(tmp_path / "g.jsonl", [{"id": "u0", "split": "unlabelled", "scene_graph": a.to_dict()},
                                          {"id": "u1", "split": "unlabelled", "scene_graph": b.to_dict()},
                                          {"id": "e0", "split": "eval", "scene_graph": a.to_dict()}])
    good_a, good_b, wrong = cod_text(a), cod_text(b), prompts.format_cod(["x"] * 4 + ["Nothing here."])
    cands = _write(tmp_path / "c.jsonl", [{"id": "u0", "candidates": [wrong, good_a]},
                                         {"id": "u1", "candidates": [good_b, good_b]}])
    curated = _write(tmp_path / "k.jsonl", [{"id": "u0", "task": "caption", "conversations": [
        {"from": "human", "value": "<image>"}, {"from": "gpt", "value": good_a}]}])
    q = caption_candidate_quality(cands, curated, graphs)
    assert q["images"] == 2
    assert q["one_sample_f1"] == 0.5  # 0 for u0's first, 1 for u1's
    assert q["best_of_n_f1"] == 1.0
    assert q["mean_of_n_f1"] == 0.75
    assert q["curated_images"] == 1 and q["curated_f1"] == 1.0
    assert q["curated_images_one_sample_f1"] == 0.0
    assert caption(a) in good_a


def test_answer_vote_quality(tmp_path):
    def cot(ans):
        return prompts.format_cot("obj", "vis", "reason", ans)

    answers = _write(tmp_path / "a.jsonl", [{"id": "q0", "answer": "red"}, {"id": "q1", "answer": "3"}])
    cands = _write(tmp_path / "c.jsonl", [
        {"id": "q0", "prompt": "What colour?", "candidates": [cot("blue"), cot("red"), cot("red")]},
        {"id": "q1", "prompt": "How many?", "candidates": [cot("three"), cot("2"), cot("2")]}])
    q = answer_vote_quality(cands, answers)
    assert q["questions"] == 2
    assert q["one_sample_accuracy"] == 0.5   # q0 wrong first, q1 right first
    assert q["vote_accuracy"] == 0.5         # q0 red wins, q1 "2" wins
    assert abs(q["mean_sample_accuracy"] - 0.5) < 1e-9
