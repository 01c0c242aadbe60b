#!/usr/bin/env python
"""Pool several SICOG loop runs (e.g. seeds) and compare their models on all held-out items.

    python tools/compare_runs.py runs/tiny runs/tiny_s4321 runs/tiny_s2024 \
        --pairs stage1:sicog baseline:sicog stage1:baseline --output runs/seeds.json

Each run directory holds ``eval/<model>.metrics.json`` (written by the loop
through ``tools/evaluate.py``). For every pair A:B it prints the mean of
B - A over the held-out items of all runs (answer accuracy and caption F1),
a 95% interval from a bootstrap that resamples items within each run, and
the difference in each run. The interval is over items only: a few seeds do
not measure seed-to-seed variance, which is why the per-run differences are
shown beside it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from megatron_sicog.evaluation.significance import pooled_paired_bootstrap
from megatron_sicog.io import atomic_write_json

TASKS = {"accuracy": "reasoning", "caption_score": "caption"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="loop output directories (each with eval/*.metrics.json)")
    p.add_argument("--pairs", nargs="+", default=["stage1:sicog", "baseline:sicog", "stage1:baseline"],
                   metavar="A:B", help="model pairs; the difference is B - A")
    p.add_argument("--samples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="JSON to write (atomically)")
    return p.parse_args(argv)


def _metrics(run: Path, model: str) -> dict:
    path = run / "eval" / f"{model}.metrics.json"
    if not path.is_file():
        raise SystemExit(f"compare_runs: {path} not found (has {run} evaluated {model!r}?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"compare_runs: {path}:{e.lineno}: not valid JSON ({e.msg})") from None


def compare(runs: list[Path], pairs: list[tuple[str, str]], samples: int = 2000, seed: int = 0) -> dict:
    models = {m for pair in pairs for m in pair}
    metrics = {(r, m): _metrics(r, m) for r in runs for m in sorted(models)}  # each file read once
    out = {"runs": [str(r) for r in runs], "comparisons": {}}
    for a, b in pairs:
        loaded = [(metrics[r, a], metrics[r, b]) for r in runs]
        out["comparisons"][f"{b}-{a}"] = {
            key: pooled_paired_bootstrap(loaded, task, samples=samples, seed=seed) for key, task in TASKS.items()}
    return out


def format_report(result: dict) -> str:
    lines = [f"{len(result['runs'])} runs; B - A over all held-out items, 95% interval (items resampled per run):"]
    for name, cmp in result["comparisons"].items():
        for key, r in cmp.items():
            if r is None:
                lines.append(f"{name:<18} {key:<13} no shared items")
                continue
            per_run = ", ".join(f"{d:+.3f}" for d in r["per_run"])
            lines.append(f"{name:<18} {key:<13} {r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                         f"  n={r['n']}  per run: {per_run}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    pairs = []
    for spec in args.pairs:
        a, sep, b = spec.partition(":")
        if not sep or not a or not b:
            raise SystemExit(f"compare_runs: --pairs expects A:B (e.g. stage1:sicog), got {spec!r}")
        pairs.append((a, b))
    result = compare([Path(r) for r in args.runs], pairs, args.samples, args.seed)
    print(format_report(result))
    if args.output:
        atomic_write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
