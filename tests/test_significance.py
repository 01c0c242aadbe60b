"""Paired bootstrap of two models' per-item eval results."""
import json

import pytest

from megatron_sicog.evaluation.significance import paired_bootstrap, pooled_paired_bootstrap
from tests.helpers import load_tool


def _metrics(correct, f1):
    items = [{"id": f"q{i}", "task": "reasoning", "correct": c} for i, c in enumerate(correct)]
    items += [{"id": f"c{i}", "task": "caption", "f1": f} for i, f in enumerate(f1)]
    return {"items": items}


def test_clear_gain_has_interval_above_zero():
    a = _metrics([False] * 150 + [True] * 50, [0.2] * 50)
    b = _metrics([True] * 150 + [True] * 50, [0.6] * 50)
    r = paired_bootstrap(a, b, "reasoning")
    assert r["n"] == 200 and abs(r["difference"] - 0.75) < 1e-9
    assert 0.65 < r["ci_low"] <= r["difference"] <= r["ci_high"] < 0.85
    assert r["p_not_ahead"] == 0.0
    c = paired_bootstrap(a, b, "caption")
    assert abs(c["difference"] - 0.4) < 1e-9 and c["ci_low"] == c["ci_high"]


def test_noise_sized_difference_straddles_zero():
    # b fixes 6 items and breaks 4 of 200: +1 point, well within noise
    base = [i % 2 == 0 for i in range(200)]
    better = list(base)
    for i in (1, 3, 5, 7, 9, 11):
        better[i] = True
    for i in (0, 2, 4, 6):
        better[i] = False
    r = paired_bootstrap(_metrics(base, []), _metrics(better, []), "reasoning")
    assert abs(r["difference"] - 0.01) < 1e-9
    assert r["ci_low"] < 0 < r["ci_high"] and 0.05 < r["p_not_ahead"] < 0.95


def test_only_shared_items_count_and_disjoint_gives_none():
    a = _metrics([True, False], [])
    b = {"items": [{"id": "q1", "task": "reasoning", "correct": True},
                   {"id": "other", "task": "reasoning", "correct": False}]}
    assert paired_bootstrap(a, b, "reasoning")["n"] == 1
    assert paired_bootstrap(a, {"items": []}, "reasoning") is None


def test_pooled_over_one_run_is_the_paired_bootstrap():
    a = _metrics([i % 3 == 0 for i in range(120)], [0.1 * (i % 7) for i in range(40)])
    b = _metrics([i % 2 == 0 for i in range(120)], [0.1 * (i % 5) for i in range(40)])
    for task in ("reasoning", "caption"):
        one, pooled = paired_bootstrap(a, b, task, seed=3), pooled_paired_bootstrap([(a, b)], task, seed=3)
        assert {k: pooled[k] for k in one} == one and pooled["runs"] == 1


def test_pooled_resamples_within_each_run():
    # run 1: B fixes every item; run 2: no change. Pooled over all items the
    # difference is exactly 0.5 in every stratified resample (an unstratified
    # one would mix the runs and spread the interval).
    run1 = (_metrics([False] * 100, []), _metrics([True] * 100, []))
    run2 = (_metrics([True] * 50, []), _metrics([True] * 50, []))
    r = pooled_paired_bootstrap([run1, run2], "reasoning")
    assert r["n"] == 150 and r["runs"] == 2 and r["per_run"] == [1.0, 0.0]
    assert abs(r["difference"] - 100 / 150) < 1e-12 and r["ci_low"] == r["ci_high"] == r["difference"]
    assert pooled_paired_bootstrap([run1, (_metrics([], []), _metrics([], []))], "reasoning")["runs"] == 1
    assert pooled_paired_bootstrap([], "caption") is None


def test_compare_runs_tool_pools_run_directories(tmp_path, capsys):
    tool = load_tool("compare_runs")
    runs = []
    for k, (gain, n) in enumerate([(1.0, 40), (0.0, 60)]):
        run = tmp_path / f"run{k}"
        (run / "eval").mkdir(parents=True)
        (run / "eval" / "stage1.metrics.json").write_text(json.dumps(_metrics([False] * n, [0.2] * n)))
        (run / "eval" / "sicog.metrics.json").write_text(json.dumps(_metrics([gain > 0] * n, [0.2 + gain] * n)))
        runs.append(str(run))
    out = tmp_path / "pooled.json"
    result = tool.main([*runs, "--pairs", "stage1:sicog", "--output", str(out)])
    acc = result["comparisons"]["sicog-stage1"]["accuracy"]
    assert acc["n"] == 100 and abs(acc["difference"] - 0.4) < 1e-12 and acc["per_run"] == [1.0, 0.0]
    assert json.loads(out.read_text()) == result
    assert "sicog-stage1" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="run0/eval/baseline.metrics.json not found"):
        tool.main([runs[0], "--pairs", "baseline:sicog"])
    with pytest.raises(SystemExit, match="expects A:B"):
        tool.main([runs[0], "--pairs", "sicog"])
