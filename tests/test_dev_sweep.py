"""examples/tiny/dev/sweep.py: a loop summary becomes one results line, and the table reads it."""
import importlib.util
import json

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location("sweep", REPO / "examples" / "tiny" / "dev" / "sweep.py")
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)


def test_record_and_table(tmp_path):
    ci = {"difference": 0.0312345, "ci_low": 0.01, "ci_high": 0.05, "n": 600}
    summary = {"stage1": {"accuracy": 0.7, "caption_score": 0.4, "step_consistency": {"jaccard": 0.9}},
               "baseline": {"accuracy": 0.71, "caption_score": 0.41},
               "sicog": {"accuracy": 0.74, "caption_score": 0.45},
               "comparisons": {"sicog-baseline": {"accuracy": ci, "caption_score": None}},
               "curated_samples": 10, "seconds": 12.5, "config": {"seed": 5}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    rec = sweep.record("v", "v.json", 5, "--rounds 2", tmp_path, "here")
    assert set(rec["models"]) == {"stage1", "baseline", "sicog"}
    assert rec["comparisons"]["sicog-baseline"] == {"accuracy": {"difference": 0.0312, "ci_low": 0.01,
                                                                 "ci_high": 0.05}}
    assert rec["step_consistency"]["stage1"] == 0.9 and rec["step_consistency"]["sicog"] is None
    line = sweep.table([rec]).splitlines()[-1].split()
    assert line[:4] == ["v", "(--rounds", "2)", "5"] and "0.740/0.450" in line and "+0.031" in line
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(rec) + "\n\n")
    assert sweep.load_results(path) == [rec]
