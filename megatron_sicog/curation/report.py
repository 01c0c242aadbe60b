"""Curation report: counts, score histogram, kept-fraction-vs-threshold curve.

`CurationStats` accumulates while the pipeline runs; `write_report` turns it
into ``summary.json``, ``score_hist.png`` and ``kept_vs_threshold.png`` in the
report folder (all written atomically), and with an audit (`audit`) into
``audit.png``: label precision and kept fraction of the labelled items vs threshold. Scores are the best score of every
item that reached scoring (after input errors and candidate checks).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from megatron_sicog.curation.audit import audit_curve
from megatron_sicog.io import atomic_path, atomic_write_json

__all__ = ["CurationStats", "TaskStats", "kept_fraction_curve", "write_report"]

TASKS = ("caption", "reasoning")
CURVE_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)


@dataclass
class TaskStats:
    items: int = 0                        # valid records of this task
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    scores: list = field(default_factory=list)  # best score per scored item
    reference_total: int = 0              # reasoning items with a reference
    reference_correct: int = 0            # ... whose voted answer matches it
    reference_kept_total: int = 0         # the same, over kept items only
    reference_kept_correct: int = 0
    audit: list = field(default_factory=list)         # (best score, label precision) per audited item
    audit_kinds: Counter = field(default_factory=Counter)  # label field -> audited items


@dataclass
class CurationStats:
    records: int = 0                      # lines / list entries read
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)   # item-level, by reason
    candidates: Counter = field(default_factory=Counter)  # candidate-level counts
    errors: int = 0
    preference_pairs: int = 0
    preference_skipped: Counter = field(default_factory=Counter)
    tasks: dict = field(default_factory=lambda: {t: TaskStats() for t in TASKS})
    seconds: float = 0.0
    scoring_seconds: dict = field(default_factory=Counter)  # task -> seconds in the scorer


def kept_fraction_curve(scores, thresholds=CURVE_THRESHOLDS) -> list[float]:
    """Fraction of scored items with score >= t, for each threshold t."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.size == 0:
        return [0.0] * len(thresholds)
    # small tolerance so that a share of exactly 0.8 passes threshold 0.8
    below = np.searchsorted(s, np.asarray(thresholds) - 1e-9, side="left")
    return [float(x) for x in (s.size - below) / s.size]


def _histogram(scores, bins: int = 20) -> dict:
    counts, edges = np.histogram(np.asarray(scores, dtype=np.float64), bins=bins, range=(0.0, 1.0))
    return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}


def summary_dict(stats: CurationStats, meta: dict, thresholds: dict) -> dict:
    out = dict(meta)
    out.update(
        records=stats.records,
        kept=stats.kept,
        dropped=dict(sorted(stats.dropped.items())),
        errors=stats.errors,
        candidates=dict(sorted(stats.candidates.items())),
        preference_pairs=stats.preference_pairs,
        preference_skipped=dict(sorted(stats.preference_skipped.items())),
        thresholds=thresholds,
        seconds=round(stats.seconds, 3),
        items_per_s=round(stats.records / stats.seconds, 1) if stats.seconds > 0 else None,
        tasks={},
    )
    for task, ts in stats.tasks.items():
        if not ts.items:
            continue
        sc = np.asarray(ts.scores, dtype=np.float64)
        scoring_s = stats.scoring_seconds.get(task, 0.0)
        entry = {
            "items": ts.items,
            "scored": int(sc.size),
            "kept": ts.kept,
            "kept_fraction": round(ts.kept / sc.size, 4) if sc.size else None,  # of the scored items
            "threshold": thresholds.get(task),
            "dropped": dict(sorted(ts.dropped.items())),
            "score_mean": round(float(sc.mean()), 4) if sc.size else None,
            "score_quantiles": (
                {q: round(float(np.quantile(sc, float(q))), 4) for q in ("0.1", "0.25", "0.5", "0.75", "0.9")}
                if sc.size else {}
            ),
            "scoring_seconds": round(scoring_s, 3),
            "scoring_items_per_s": round(sc.size / scoring_s, 1) if scoring_s > 0 else None,
            "histogram": _histogram(sc),
            "kept_fraction_curve": {
                "thresholds": [float(t) for t in CURVE_THRESHOLDS],
                "kept_fraction": kept_fraction_curve(sc),
            },
        }
        if out.get("audit") is not None:
            entry["audit"] = audit_curve(ts.audit, CURVE_THRESHOLDS, thresholds.get(task), ts.audit_kinds)
        if ts.reference_total:
            entry["reference_accuracy"] = {
                "with_reference": ts.reference_total,
                "vote_correct": ts.reference_correct,
                "accuracy": round(ts.reference_correct / ts.reference_total, 4),
                "kept_with_reference": ts.reference_kept_total,
                "kept_accuracy": (round(ts.reference_kept_correct / ts.reference_kept_total, 4)
                                  if ts.reference_kept_total else None),
            }
        out["tasks"][task] = entry
    return out


def _save_png(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _plot_audit(plt, audited: dict, thresholds: dict, colors: dict, path: Path) -> None:
    """One panel per task: precision of the kept labels and kept fraction vs threshold."""
    fig, axes = plt.subplots(1, len(audited), figsize=(5.2 * len(audited), 4.0), squeeze=False)
    for ax, (task, a) in zip(axes[0], audited.items()):
        x = np.asarray(a["thresholds"])
        prec = np.asarray([np.nan if p is None else p for p in a["precision"]], dtype=np.float64)
        ax.plot(x, prec, color=colors.get(task), label="precision of kept labels")
        ax.plot(x, a["kept_fraction"], color=colors.get(task), linestyle="--", label="kept fraction")
        t = thresholds.get(task)
        if t is not None and np.isfinite(t):
            ax.axvline(t, color="gray", linewidth=1)
            at = a["at_threshold"]
            if at["precision"] is not None:
                ax.annotate(f"{at['precision']:.2f} / {at['kept_fraction']:.0%} at {t:g}", (t, at["precision"]),
                            textcoords="offset points", xytext=(5, -12))
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_xlabel("threshold")
        ax.set_title(f"{task}: {a['labelled']} labelled items")
        ax.legend(loc="lower left")
    axes[0][0].set_ylabel("precision / kept fraction (labelled items)")
    fig.suptitle("Label-quality audit")
    _save_png(fig, path)
    plt.close(fig)


def write_report(report_dir: Union[str, Path], summary: dict, thresholds: dict) -> dict[str, str]:
    """Write summary.json and the two PNGs; returns their paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": str(report_dir / "summary.json"),
        "score_hist": str(report_dir / "score_hist.png"),
        "kept_vs_threshold": str(report_dir / "kept_vs_threshold.png"),
    }
    tasks = summary.get("tasks", {})
    colors = {"caption": "tab:blue", "reasoning": "tab:orange"}

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for task, entry in tasks.items():
        h = entry["histogram"]
        edges = np.asarray(h["edges"])
        ax.stairs(h["counts"], edges, fill=True, alpha=0.45, color=colors.get(task),
                  label=f"{task} (n={entry['scored']})")
        t = thresholds.get(task)
        if t:
            ax.axvline(t, color=colors.get(task), linestyle="--", linewidth=1)
    reasoning_score = "mean cosine" if summary.get("reasoning_scorer") == "mbr" else "winning share"
    ax.set_xlabel(f"best candidate score (caption: mean cosine; reasoning: {reasoning_score})")
    ax.set_ylabel("items")
    ax.set_title(f"Self-consistency scores (caption scorer: {summary.get('scorer', '')})")
    if tasks:
        ax.legend()
    _save_png(fig, Path(paths["score_hist"]))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for task, entry in tasks.items():
        c = entry["kept_fraction_curve"]
        ax.plot(c["thresholds"], c["kept_fraction"], color=colors.get(task), label=task)
        t = thresholds.get(task)
        if t:
            frac = entry["kept"] / entry["scored"] if entry["scored"] else 0.0
            ax.plot([t], [frac], "o", color=colors.get(task))
            ax.annotate(f"{frac:.0%} at {t:g}", (t, frac), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("threshold")
    ax.set_ylabel("fraction of scored items kept")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title("Kept fraction vs threshold")
    if tasks:
        ax.legend()
    _save_png(fig, Path(paths["kept_vs_threshold"]))
    plt.close(fig)

    audited = {task: e["audit"] for task, e in tasks.items() if (e.get("audit") or {}).get("labelled")}
    if audited:
        paths["audit"] = str(report_dir / "audit.png")
        _plot_audit(plt, audited, thresholds, colors, Path(paths["audit"]))

    atomic_write_json(paths["summary"], summary)
    return paths
