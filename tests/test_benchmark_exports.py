"""Benchmark-format exports of the synthetic held-out split, read back and scored by the benchmark code."""
import pytest

from megatron_sicog.evaluation import benchmarks as bm
from megatron_sicog.io import iter_records
from megatron_sicog.synthetic.benchmarks import export_benchmarks
from megatron_sicog.synthetic.splits import write_splits


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    write_splits(d, {"eval": 6, "align": 4, "seed": 4, "unlabelled": 4}, seed=3, image_size=64)
    paths = export_benchmarks(d / "eval.jsonl", d, d / "benchmarks", num_images=5, seed=0)
    graphs = [r["scene_graph"] for _, r in iter_records(d / "eval.jsonl")][:5]
    return d, paths, graphs


def test_mcq_export_rotations_and_answers(exported):
    d, paths, graphs = exported
    bench = bm.load_benchmark("MMBench_tiny", paths["MMBench_tiny"])
    assert bench.circular and len(bench.items) == 5 * 2 * 4
    assert bm.check_images(bench) == 5  # one copy per image, the other rows reference it
    groups = {}
    for it in bench.items:
        groups.setdefault(it["group"], []).append(it)
    assert len(groups) == 10 and all(len(g) == 4 for g in groups.values())
    for g in groups.values():  # every rotation's answer letter names the same option text
        assert len({it["options"][it["answer"]] for it in g}) == 1
        assert len({it["answer"] for it in g}) == 4
    counts = [it for it in bench.items if it["category"] == "count"]
    assert {it["options"][it["answer"]] for it in counts} <= {"1", "2", "3"}
    # right on every rotation but one: CircularEval loses that question, per-row accuracy one row
    truth = {it["id"]: f"The answer is {it['options'][it['answer']]}." for it in bench.items}
    wrong = bench.items[-1]
    truth[wrong["id"]] = f"The answer is {next(v for k, v in wrong['options'].items() if k != wrong['answer'])}."
    res, _ = bm.score(bench, truth)
    assert res["overall"] == pytest.approx(9 / 10) and res["per_row"] == pytest.approx(39 / 40)


def test_pope_export_labels_follow_the_scene_graphs(exported):
    d, paths, graphs = exported
    bench = bm.load_benchmark("POPE_tiny", paths["POPE_tiny"], image_root=d)
    assert len(bench.items) == 5 * 3 * 2 and bm.check_images(bench) == 5
    by_image = {}
    for _, r in iter_records(paths["POPE_tiny"]):
        by_image.setdefault(r["image"], []).append(r)
    for rows, graph in zip(by_image.values(), graphs):
        present = {o["shape"] for o in graph["objects"]}
        for r in rows:
            shape = r["text"].removeprefix("Is there a ").removesuffix(" in the image?")
            assert (shape in present) == (r["label"] == "yes")
        assert sorted(r["category"] for r in rows) == sorted(["random", "popular", "adversarial"] * 2)
    res, _ = bm.score(bench, {it["id"]: it["answer"] for it in bench.items})
    assert res["accuracy"] == 1.0 and res["yes_ratio"] == 0.5
