#!/usr/bin/env python
"""Train a SentencePiece BPE tokenizer whose specials (``<image>``, chat-template
markers) are single tokens. Command line of `megatron_sicog.data.tokenizer.train_sentencepiece`.

Input: text files (one sentence per line), or JSONL/JSON records whose
``text`` or ``conversations[*].value`` fields are used.

    python tools/train_tokenizer.py --input data.jsonl --output-prefix tok/sp --vocab-size 8000
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from megatron_sicog.data.tokenizer import train_sentencepiece
from megatron_sicog.io import RecordError, iter_records


def _texts(paths: list[str], stats: dict):
    for p in paths:
        if Path(p).suffix not in (".json", ".jsonl"):
            with open(p, encoding="utf-8") as f:
                for line in f:
                    stats["texts"] += 1
                    yield line.rstrip("\n")
            continue
        for lineno, rec in iter_records(p):
            if isinstance(rec, RecordError):
                print(f"warning: skipped {rec}", file=sys.stderr)
                stats["skipped"] += 1
                continue
            if isinstance(rec.get("text"), str):
                stats["texts"] += 1
                yield rec["text"]
            for turn in rec.get("conversations") or ():
                if isinstance(turn, dict) and isinstance(turn.get("value"), str):
                    stats["texts"] += 1
                    yield turn["value"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", required=True, help="text / JSONL / JSON files")
    ap.add_argument("--output-prefix", required=True, help="writes <prefix>.model and <prefix>.vocab")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--model-type", default="bpe", choices=["bpe", "unigram"])
    ap.add_argument("--user-defined-symbols", nargs="*", default=[], help="extra single-token strings")
    ap.add_argument("--input-sentence-size", type=int, default=0, help="sample this many sentences (0: all)")
    ap.add_argument("--workers", type=int, default=1, help="trainer threads")
    args = ap.parse_args(argv)
    for p in args.input:
        if not Path(p).is_file():
            ap.error(f"--input {p}: no such file")
    stats = {"texts": 0, "skipped": 0}
    t0 = time.time()
    model = train_sentencepiece(_texts(args.input, stats), args.output_prefix, args.vocab_size,
                                model_type=args.model_type, user_defined_symbols=args.user_defined_symbols,
                                input_sentence_size=args.input_sentence_size, num_threads=args.workers)
    print(f"trained {model}: vocab {args.vocab_size}, {stats['texts']} texts read, "
          f"{stats['skipped']} records skipped, {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
