#!/usr/bin/env python
"""Benchmark-format files of the synthetic held-out split, for tools/evaluate_benchmarks.py.

    python tools/make_benchmark_exports.py --eval runs/tiny/data/eval.jsonl \\
        --image-root runs/tiny/data --output-dir runs/tiny/data/benchmarks --num-images 40

Writes ``MMBench_tiny.tsv`` (VLMEvalKit multiple-choice TSV, four CircularEval
rotations per question) and ``POPE_tiny.jsonl`` (POPE yes/no rows, random /
popular / adversarial), made from the first ``--num-images`` scene graphs
(`megatron_sicog.synthetic.benchmarks`). Score a model on them with

    python tools/evaluate_benchmarks.py --load CKPT --benchmark MMBench_tiny=.../MMBench_tiny.tsv \\
        --benchmark POPE_tiny=.../POPE_tiny.jsonl --image-root runs/tiny/data --output-dir OUT
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from megatron_sicog.guards import UsageError, cli


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval", required=True, help="eval.jsonl of tools/make_synthetic_data.py")
    p.add_argument("--image-root", required=True, help="the folder its image paths are relative to")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--num-images", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.num_images < 1:
        raise UsageError(f"--num-images must be >= 1, got {a.num_images}")
    if not Path(a.eval).is_file():
        raise UsageError(f"--eval {a.eval}: no such file")
    from megatron_sicog.synthetic.benchmarks import export_benchmarks

    try:
        paths = export_benchmarks(a.eval, a.image_root, a.output_dir, a.num_images, a.seed)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli("make_benchmark_exports", main))
