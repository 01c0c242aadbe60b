"""Paired bootstrap over eval items: is model B really ahead of model A?

Two models scored on the same eval split (``tools/evaluate.py`` metrics, whose
``items`` hold per-question correctness and per-caption F1) are compared item
by item: the difference of means, and a percentile 95% interval from
resampling the items with replacement (the same resample for both models, so
item difficulty cancels). With a few hundred items, differences of a few
points are within noise; the interval says so.

`pooled_paired_bootstrap` does the same over several runs (e.g. the loop at
different seeds, each with its own eval split): items are resampled within
each run (stratified), and the difference is the mean over all items. The
interval covers item sampling only; with a handful of seeds it cannot
measure seed-to-seed variance, so the per-run differences are returned too.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _per_item(metrics: dict, task: str) -> dict[str, float]:
    key = "correct" if task == "reasoning" else "f1"
    return {it["id"]: float(it[key]) for it in metrics.get("items", []) if it.get("task") == task}


def paired_bootstrap(a: dict, b: dict, task: str, samples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> Optional[dict]:
    """mean(b) - mean(a) over the items both scored, with a bootstrap interval.

    ``task`` is "reasoning" (answer correctness) or "caption" (F1). Returns
    None when the two share no items.
    """
    r = pooled_paired_bootstrap([(a, b)], task, samples, seed, confidence)
    if r is not None:
        del r["runs"], r["per_run"]
    return r


def _differences(a: dict, b: dict, task: str) -> np.ndarray:
    xa, xb = _per_item(a, task), _per_item(b, task)
    return np.array([xb[i] - xa[i] for i in sorted(set(xa) & set(xb))])


def pooled_paired_bootstrap(pairs: Sequence[tuple[dict, dict]], task: str, samples: int = 2000, seed: int = 0,
                            confidence: float = 0.95) -> Optional[dict]:
    """mean(b) - mean(a) over the shared items of every (a, b) pair, resampled within each pair.

    One pair is exactly `paired_bootstrap`. Pairs with no shared item are
    left out; None when no pair has one.
    """
    diffs = [d for d in (_differences(a, b, task) for a, b in pairs) if len(d)]
    if not diffs:
        return None
    rng = np.random.default_rng(seed)
    n = sum(len(d) for d in diffs)
    totals = np.zeros(samples)
    for d in diffs:
        totals += d[rng.integers(0, len(d), size=(samples, len(d)))].sum(axis=1)
    means = totals / n
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return {"n": n, "runs": len(diffs), "difference": float(np.concatenate(diffs).mean()),
            "ci_low": float(lo), "ci_high": float(hi), "p_not_ahead": float((means <= 0).mean()),
            "per_run": [float(d.mean()) for d in diffs]}
