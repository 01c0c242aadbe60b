#!/usr/bin/env python
"""Score predictions on the synthetic eval split (caption fidelity, answer accuracy).

    python tools/evaluate.py --predictions preds.jsonl --ground-truth data/eval.jsonl \
        --output metrics.json

Predictions: JSONL ``{"id", "task": "caption"|"reasoning", "prediction"}`` (a
caption's id is the image id, a reasoning item's id the question id). The
output holds aggregates, per-item results and the ids that were missing or
unknown; one summary line goes to stdout. ``--list-requests FILE`` instead
writes what a model must answer (id, task, image, prompt) for the runner.
"""
from __future__ import annotations

import argparse

from megatron_sicog.evaluation.scoring import eval_requests, score_predictions, summary_line
from megatron_sicog.io import atomic_write_json, write_jsonl_atomic


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ground-truth", required=True, help="eval.jsonl of make_synthetic_data.py")
    p.add_argument("--predictions", help="predictions JSONL to score")
    p.add_argument("--output", help="metrics JSON to write (atomically)")
    p.add_argument("--list-requests", metavar="FILE", help="write the eval requests JSONL and exit")
    args = p.parse_args(argv)
    if not args.list_requests and not (args.predictions and args.output):
        p.error("--predictions and --output are required unless --list-requests is given")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.list_requests:
        n = write_jsonl_atomic(args.list_requests, eval_requests(args.ground_truth))
        print(f"eval requests: {n} -> {args.list_requests}")
        return {"requests": n}
    metrics = score_predictions(args.predictions, args.ground_truth)
    atomic_write_json(args.output, metrics)
    print(summary_line(metrics) + f" -> {args.output}")
    return metrics


if __name__ == "__main__":
    main()
