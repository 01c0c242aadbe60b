"""Paired bootstrap over eval items: is model B really ahead of model A?

Two models scored on the same eval split (``tools/evaluate.py`` metrics, whose
``items`` hold per-question correctness and per-caption F1) are compared item
by item: the difference of means, and a percentile 95% interval from
resampling the items with replacement (the same resample for both models, so
item difficulty cancels). With a few hundred items, differences of a few
points are within noise; the interval says so.
"""
from __future__ import annotations

from typing import Optional

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
    xa, xb = _per_item(a, task), _per_item(b, task)
    ids = sorted(set(xa) & set(xb))
    if not ids:
        return None
    diff = np.array([xb[i] - xa[i] for i in ids])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return {"n": len(ids), "difference": float(diff.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "p_not_ahead": float((means <= 0).mean())}
