#!/usr/bin/env python
"""Merge converted shards (``<prefix>.bin/.idx``) into one dataset, in the order given.

    python tools/merge_datasets.py --input out/shard_0 out/shard_1 --output-prefix out/all
    python tools/merge_datasets.py --input-dir out/ --output-prefix out/all   # all prefixes, sorted

Uses megatron-core's ``IndexedDatasetBuilder.add_index``; all shards must share
the dtype (same tokenizer). ``<shard>.errors.jsonl`` files are concatenated
into ``<output>.errors.jsonl``. Outputs appear only when complete; an
existing output is replaced only with ``--overwrite`` (and ``--input-dir``
never takes the output itself as a shard).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from megatron_sicog.data.indexed import SampleReader, SampleWriter, open_dtype
from megatron_sicog.guards import add_debug_flag, add_overwrite_flag, check_outputs, cli, debug_requested
from megatron_sicog.io import atomic_path


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def find_prefixes(input_dir: str) -> list[str]:
    names = sorted({p.name[:-4] for p in Path(input_dir).glob("*.idx")}, key=_natural_key)
    return [os.path.join(input_dir, n) for n in names]


def merge(prefixes: list[str], output_prefix: str, show_progress: bool = True) -> dict:
    from tqdm import tqdm

    if not prefixes:
        raise ValueError("nothing to merge")
    dtypes = {}
    for p in prefixes:
        SampleReader.check_exists(p)
        dtypes[p] = open_dtype(p)
    if len(set(dtypes.values())) != 1:
        raise ValueError(f"shards have different dtypes (different tokenizers?): "
                         f"{ {p: getattr(d, '__name__', d) for p, d in dtypes.items()} }")
    out_abs = os.path.abspath(output_prefix)
    if any(os.path.abspath(p) == out_abs for p in prefixes):
        raise ValueError(f"--output-prefix {output_prefix} is also an input")
    n_errors = 0
    with SampleWriter(output_prefix, dtypes[prefixes[0]]) as writer, \
            atomic_path(output_prefix + ".errors.jsonl") as err_tmp, open(err_tmp, "w") as err:
        for p in tqdm(prefixes, desc="merge", unit="shard", disable=not show_progress):
            writer.add_index(p)
            if os.path.isfile(p + ".errors.jsonl"):
                with open(p + ".errors.jsonl") as f:
                    for line in f:
                        err.write(line)
                        n_errors += 1
    docs = len(SampleReader(output_prefix))
    return {"shards": len(prefixes), "samples": docs, "errors": n_errors,
            "bytes": os.path.getsize(output_prefix + ".bin")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", help="shard prefixes, merged in this order")
    src.add_argument("--input-dir", help="merge every <prefix>.idx in this folder (natural sort)")
    ap.add_argument("--output-prefix", required=True)
    ap.add_argument("--no-progress", action="store_true")
    add_overwrite_flag(ap)
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    out_abs = os.path.abspath(args.output_prefix)
    prefixes = args.input or [p for p in find_prefixes(args.input_dir) if os.path.abspath(p) != out_abs]
    for ext in (".bin", ".idx"):
        check_outputs({"--input": [p + ext for p in prefixes]}, {"--output-prefix": args.output_prefix + ext},
                      overwrite=args.overwrite)
    t0 = time.time()
    try:
        s = merge(prefixes, args.output_prefix, not args.no_progress)
    except (ValueError, FileNotFoundError) as e:
        if debug_requested(argv):
            raise
        print(f"merge_datasets: error: {e}", file=sys.stderr)
        return 2
    print(f"merge_datasets: {s['shards']} shards -> {args.output_prefix}: {s['samples']} samples, "
          f"{s['bytes'] / 1e6:.1f} MB, {s['errors']} error entries, {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli("merge_datasets", main))
