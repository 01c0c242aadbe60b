"""Benchmark formats and scoring on hand-made files (figures in tests/benchmark_fixtures.py)."""
import pytest

from megatron_sicog.evaluation import benchmarks as bm
from megatron_sicog.evaluation.benchmarks.mcq import match_option
from megatron_sicog.evaluation.benchmarks.vqa import relaxed_correct
from megatron_sicog.evaluation.benchmarks.yesno import read_yes_no
from megatron_sicog.io import write_jsonl_atomic
from megatron_sicog.prompts import build_prompt
from tests import benchmark_fixtures as fx

OPTS = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}


@pytest.mark.parametrize("text,letter", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("Answer: B", "B"), ("**B**", "B"),
    ("The answer is B because it is red", "B"), ("The correct answer is **C**, as shown.", "C"),
    ("it is blue", "B"), ("Step 3: Reasoning. A or B?\nStep 4: Conclusion. The answer is green.", "C"),
    ("A cat is sitting on a very large mat today", None),  # the article, not option A
    ("red and blue", None), ("I do not know", None), ("E", None),
])
def test_match_option(text, letter):
    assert match_option(text, OPTS) == letter


@pytest.mark.parametrize("reply,read", [
    ("Yes", "yes"), ("No.", "no"), ("NO", "no"), ("There is not a dog.", "no"), ("Yes, no doubt.", "no"),
    ("There is a dog. No cat.", "yes"), ("Step 4: Conclusion. The answer is no.", "no"),
])
def test_read_yes_no(reply, read):
    assert read_yes_no(reply) == read


def test_relaxed_accuracy():
    assert relaxed_correct("12", "12.5") and not relaxed_correct("12", "13")
    assert relaxed_correct("50%", "0.51") and relaxed_correct("Yes", "yes") and not relaxed_correct("0", "0.01")


def test_mcq_circular_vs_per_row(tmp_path):
    bench = bm.load_benchmark("MMBench_DEV_EN", fx.write_mcq(tmp_path / "mmb.tsv"))
    assert bench.circular and len(bench.items) == 6
    assert bm.check_images(bench) == 3  # row 1e6 shares row 0's image
    res, rows = bm.score(bench, fx.MCQ_PREDICTIONS)
    assert res["overall"] == pytest.approx(1 / 3) and res["n"] == 3
    assert res["per_row"] == pytest.approx(4 / 6) and res["n_rows"] == 6
    assert res["unmatched"] == 1
    assert res["categories"] == {"colour": 0.5, "count": 0.0}
    assert res["l2_categories"] == {"attribute": 0.5, "instance": 0.0}
    assert res["splits"] == {"dev": pytest.approx(1 / 3)}
    assert [r["hit"] for r in rows] == [True, True, True, False, True, False]
    # the same file as a non-circular benchmark: every row on its own
    plain, _ = bm.score(bm.load_benchmark("MMStar", tmp_path / "mmb.tsv"), fx.MCQ_PREDICTIONS)
    assert plain["overall"] == pytest.approx(4 / 6) and "per_row" not in plain
    assert plain["categories"] == {"colour": 0.75, "count": 0.5}


def test_mcq_prompt(tmp_path):
    bench = bm.load_benchmark("MMBench", fx.write_mcq(tmp_path / "mmb.tsv"))
    text = bm.request_text(bench, bench.items[2])
    assert text == ("<image>\nHint: Look at the round shape.\nQuestion: What colour is the circle?\nOptions:\n"
                    "A. red\nB. green\nC. blue\nD. yellow\nPlease select the correct answer from the options above.")
    assert bm.request_text(bench, bench.items[0], "cot").startswith("<image>\nQuestion: What colour is the square?")
    assert bm.request_text(bench, bench.items[0], "cot-open") == "<image>\n" + build_prompt(
        "cot", "What colour is the square?", with_image=False)
    assert bm.request_text(bench, bench.items[2], "cot-open").startswith("<image>\nHint: Look at the round shape.\n"
                                                                         "Question: What colour is the circle?\nAnswer")


def test_pope_figures(tmp_path):
    bench = bm.load_benchmark("POPE", fx.write_pope(tmp_path))
    assert bm.check_images(bench) == 8
    res, _ = bm.score(bench, fx.POPE_PREDICTIONS)
    assert res["accuracy"] == res["overall"] == 0.5
    assert res["precision"] == 0.5 and res["recall"] == 0.75
    assert res["f1"] == pytest.approx(0.6) and res["yes_ratio"] == 0.75
    r, a = res["categories"]["random"], res["categories"]["adversarial"]
    assert (r["accuracy"], r["precision"], r["recall"], r["f1"]) == (0.75, pytest.approx(2 / 3), 1.0, pytest.approx(0.8))
    assert (a["accuracy"], a["precision"], a["recall"], a["f1"]) == (0.25, pytest.approx(1 / 3), 0.5, pytest.approx(0.4))


def test_chartqa_relaxed(tmp_path):
    bench = bm.load_benchmark("ChartQA_TEST", fx.write_chart(tmp_path))
    res, rows = bm.score(bench, fx.CHART_PREDICTIONS)
    assert res["overall"] == 0.5 and res["categories"] == {"augmented": 0.5, "human": 0.5}
    assert [r["hit"] for r in rows] == [True, False, True, False]


def test_predictions_file_round_trip(tmp_path):
    bench = bm.load_benchmark("POPE_adv", fx.write_pope(tmp_path))
    preds = bm.read_predictions(fx.write_predictions(tmp_path / "p.jsonl", "question_id", fx.POPE_PREDICTIONS),
                                bench)
    assert preds == fx.POPE_PREDICTIONS


def test_bad_predictions_name_file_and_row(tmp_path):
    bench = bm.load_benchmark("POPE", fx.write_pope(tmp_path))
    p = tmp_path / "p.jsonl"
    write_jsonl_atomic(p, [{"question_id": 1, "prediction": "yes"}, {"question_id": 99, "prediction": "no"}])
    with pytest.raises(bm.BenchmarkError, match=r"p\.jsonl:line 2: question_id 99 is not a row of POPE"):
        bm.read_predictions(p, bench)
    write_jsonl_atomic(p, [{"question_id": 1, "prediction": "yes"}])
    with pytest.raises(bm.BenchmarkError, match=r"no prediction for 7 of 8 rows of POPE \(first: question_id 2"):
        bm.read_predictions(p, bench)
    write_jsonl_atomic(p, [{"question_id": 1, "prediction": "yes"}, {"question_id": 1, "prediction": "no"}])
    with pytest.raises(bm.BenchmarkError, match="line 2: second prediction for question_id 1"):
        bm.read_predictions(p, bench)


def test_bad_benchmark_files(tmp_path):
    with pytest.raises(bm.BenchmarkError, match="unknown benchmark 'MMMU'"):
        bm.resolve("MMMU")
    rows = fx.mcq_rows()
    del rows[3]["answer"]
    with pytest.raises(bm.BenchmarkError, match=r"mmb\.tsv:row 4: missing column\(s\) 'answer'"):
        bm.load_benchmark("MMBench", fx.write_mcq(tmp_path / "mmb.tsv", rows))
    rows = [{k: v for k, v in r.items() if k != "question"} for r in fx.mcq_rows()]
    with pytest.raises(bm.BenchmarkError, match=r"row 1: missing column\(s\) 'question'"):
        bm.load_benchmark("MMBench", fx.write_mcq(tmp_path / "mmb.tsv", rows))
    rows = fx.mcq_rows()
    rows[4]["image"] = "bm90IGFuIGltYWdl" * 8  # base64 of text, not of an image
    bench = bm.load_benchmark("MMBench", fx.write_mcq(tmp_path / "mmb.tsv", rows))
    with pytest.raises(bm.BenchmarkError, match=r"mmb\.tsv:row 5: image does not decode"):
        bm.check_images(bench)
    rows = fx.mcq_rows()
    rows[2]["answer"] = "E"
    with pytest.raises(bm.BenchmarkError, match="row 3: answer 'E' is not one of the options"):
        bm.load_benchmark("AI2D_TEST", fx.write_mcq(tmp_path / "mmb.tsv", rows))
    rows = fx.mcq_rows()
    rows[1]["image"] = "77"
    with pytest.raises(bm.BenchmarkError, match="row 2: image '77' is neither base64 data nor the index"):
        bm.load_benchmark("MMBench", fx.write_mcq(tmp_path / "mmb.tsv", rows))
    pope = fx.write_pope(tmp_path)
    (tmp_path / "images" / "3.png").write_bytes(b"broken")
    with pytest.raises(bm.BenchmarkError, match=r"pope\.jsonl:row 3: image does not decode"):
        bm.check_images(bm.load_benchmark("POPE", pope))
    write_jsonl_atomic(tmp_path / "bad.jsonl", [{"question_id": 1, "image": "a.png", "text": "q", "label": "maybe"}])
    with pytest.raises(bm.BenchmarkError, match="row 1: label must be yes or no"):
        bm.load_benchmark("POPE", tmp_path / "bad.jsonl")


def test_stated_answer_matched_first():
    counts = {"A": "1", "B": "2", "C": "3", "D": "4"}
    assert match_option("Step 3: Reasoning. I count them.\nStep 4: Conclusion. The answer is 2.", counts) == "B"
    assert match_option("The answer is (C).", counts) == "C"
