"""Paired bootstrap of two models' per-item eval results."""
from megatron_sicog.evaluation.significance import paired_bootstrap


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
