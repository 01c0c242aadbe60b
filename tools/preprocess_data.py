#!/usr/bin/env python
"""Convert curated LLaVA records to a Megatron multimodal indexed dataset (.bin/.idx).

    python tools/preprocess_data.py --input curated.jsonl --image-root images/ \\
        --tokenizer-type SentencePieceTokenizer --tokenizer-model tok.model \\
        --chat-template qwen2 --output-prefix data/sicog_gen1 --workers 8 --seq-length 2048

Writes ``<prefix>.bin/.idx`` (one document per sample: tokens, loss spans, one
item per image; layout in `megatron_sicog/data/indexed.py`; megatron-core's
``IndexedDataset(prefix, multimodal=True)`` opens it) and
``<prefix>.errors.jsonl`` (one line per skipped record: file, line, id, reason).

Images: by default the source file's encoded bytes are stored as they are —
lossless with respect to the source, about 10x smaller than raw pixels for
JPEGs, and the resolution stays a training-time choice (the vision encoder's
input size may change between SICOG generations). ``--image-processor
CKPT|clip|siglip [--image-size S]`` stores instead the S x S uint8 view that
processor makes (CKPT: the checkpoint the data will train, with its recorded
processor and aspect ratio; clip / siglip: the family's at S), as raw RGB (PPM),
after its pad / resize / crop and before rescale and normalisation: more disk, no
decode/resize in the data loader, and the trainer's processor leaves those pixels
unchanged, so a non-square image trains on exactly what the HF processor makes of
its source (`data.preprocess.stored_processing`). Data stored for one processor
is for models with that processor. Every image is fully decoded once here, so a broken file is a
skipped record now rather than a crash in training.

Errors: ``--on-error skip`` (default) skips and lists bad records;
``--on-error fail`` stops at the first with ``file:line: reason``. Over-long
samples (``--seq-length``, counting ``--image-seq-length`` tokens per image) are
cut (``--overlong truncate``, default) or skipped (``drop``). Outputs appear only
when complete; an interrupted run (Ctrl-C, SIGTERM) leaves no partial files
(and temp files of killed runs are removed by the next run). An existing
``<prefix>.bin/.idx`` is replaced only with ``--overwrite``; an input that
yields no sample is an error, not an empty dataset. Image paths must stay
inside ``--image-root`` (``..`` and symlinks resolved) unless
``--allow-outside-image-root``.

Preference pairs for DPO (``tools/curate.py --preference-output``): with
``--preference`` every record must be ``{"conversations": [prompt turns], "chosen",
"rejected", "image"?}``; each becomes two documents, prompt + chosen then
prompt + rejected, written or skipped together (``--stage dpo --data-path
<prefix>`` reads them back as pairs).

Sharding for SLURM arrays: ``--shard-index $SLURM_ARRAY_TASK_ID --num-shards N``
converts a contiguous slice of the input; ``tools/merge_datasets.py`` joins the
shards in order.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import multiprocessing
import os
import signal
import sys
import time

from megatron_sicog.data.chat_template import TEMPLATES
from megatron_sicog.data.preprocess import (
    ConvertConfig,
    checkpoint_tiling,
    convert_chunk,
    init_pool_worker,
    init_worker,
    input_chunks,
    prepare,
    shard_input_bytes,
    stored_processing,
)
from megatron_sicog.data.tokenizer import TOKENIZER_TYPES
from megatron_sicog.guards import (add_debug_flag, add_image_root_flags, add_overwrite_flag,
                                   check_outputs, cli)
from megatron_sicog.io import atomic_path, dumps


class PreprocessError(RuntimeError):
    """A bad record under --on-error fail."""


def get_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("input data")
    g.add_argument("--input", nargs="+", required=True, help="JSONL or JSON-list files of records")
    add_image_root_flags(g)
    g = ap.add_argument_group("tokenizer")
    g.add_argument("--tokenizer-type", required=True, choices=TOKENIZER_TYPES)
    g.add_argument("--tokenizer-model", required=True)
    g.add_argument("--chat-template", default="qwen2", choices=sorted(TEMPLATES))
    g.add_argument("--system", default=None, help="system prompt added to every conversation")
    g = ap.add_argument_group("samples")
    g.add_argument("--seq-length", type=int, default=None, help="longest sample (tokens, images expanded)")
    g.add_argument("--image-seq-length", type=int, default=1,
                   help="tokens one image occupies after the trainer expands it (for --seq-length)")
    g.add_argument("--tiling-checkpoint", default=None,
                   help="a checkpoint whose model tiles its images (LLaVA-NeXT): each image counts the tokens its "
                        "tiling expands it to, by its size, instead of --image-seq-length")
    g.add_argument("--overlong", choices=["truncate", "drop"], default="truncate")
    g.add_argument("--preference", action="store_true",
                   help="records are DPO preference pairs (chosen / rejected): two documents each")
    g.add_argument("--image-processor", default=None,
                   help="store the S x S pixels this processor makes instead of the source bytes: a checkpoint "
                        "directory (its model's processor) or clip / siglip (the family's at --image-size)")
    g.add_argument("--image-size", type=int, default=None,
                   help="with --image-processor: the side S (with a checkpoint, checked against its processor)")
    g = ap.add_argument_group("output data")
    g.add_argument("--output-prefix", required=True, help="writes <prefix>.bin/.idx/.errors.jsonl")
    add_overwrite_flag(g)
    g = ap.add_argument_group("runtime")
    g.add_argument("--workers", type=int, default=1, help="worker processes (0: convert in this process)")
    g.add_argument("--chunk-size", type=int, default=512, help="records per task sent to a worker")
    g.add_argument("--log-interval", type=int, default=100000, help="print a progress line every N records")
    g.add_argument("--on-error", choices=["skip", "fail"], default="skip")
    g.add_argument("--shard-index", type=int, default=0)
    g.add_argument("--num-shards", type=int, default=1)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    for p in args.input:
        if not os.path.isfile(p):
            ap.error(f"--input {p}: no such file")
    if args.image_root is not None and not os.path.isdir(args.image_root):
        ap.error(f"--image-root {args.image_root} is not a directory")
    if not os.path.basename(args.output_prefix) or os.path.isdir(args.output_prefix):
        ap.error(f"--output-prefix {args.output_prefix} names a directory; give DIR/NAME "
                 "(writes DIR/NAME.bin and DIR/NAME.idx)")
    if not 0 <= args.shard_index < args.num_shards:
        ap.error(f"--shard-index {args.shard_index} must be in [0, --num-shards {args.num_shards})")
    if args.workers < 0 or args.chunk_size < 1:
        ap.error("--workers must be >= 0 and --chunk-size >= 1")
    if args.image_size is not None and args.image_processor is None:
        ap.error("--image-size stores the pixels of one image processor: name it with --image-processor "
                 "(the checkpoint to train, or clip / siglip); without both, the source bytes are stored")
    return args


def _ordered_results(tasks, workers: int, cfg: ConvertConfig):
    """Results of convert_chunk in task order; at most 2 tasks per worker in flight."""
    if workers == 0:
        init_worker(cfg)
        for t in tasks:
            yield convert_chunk(t)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=init_pool_worker, initargs=(cfg,)) as pool:
        pending: collections.deque = collections.deque()
        for t in tasks:
            pending.append(pool.apply_async(convert_chunk, (t,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. a SLURM time limit), handled like Ctrl-C: clean up, write nothing."""


def _raise_on_term(signum, frame):
    raise Terminated(f"signal {signum}")


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    import megatron.core.datasets.indexed_dataset  # noqa: F401 - import (seconds) before the clock starts

    from megatron_sicog.data.indexed import SampleWriter

    t0 = time.time()
    for ext in (".bin", ".idx"):
        check_outputs({"--input": args.input}, {"--output-prefix": args.output_prefix + ext},
                      overwrite=args.overwrite)
    cfg = prepare(ConvertConfig(
        tokenizer_type=args.tokenizer_type, tokenizer_model=args.tokenizer_model,
        chat_template=args.chat_template, system=args.system, image_root=args.image_root,
        allow_outside_image_root=args.allow_outside_image_root,
        image_processing=(stored_processing(args.image_processor, args.image_size)
                          if args.image_processor else None),
        seq_length=args.seq_length, overlong=args.overlong,
        image_seq_length=args.image_seq_length, preference=args.preference,
        tiling=checkpoint_tiling(args.tiling_checkpoint) if args.tiling_checkpoint else None))
    tasks = (t for p in args.input
             for t in input_chunks(p, args.chunk_size, args.shard_index, args.num_shards))
    total_bytes = shard_input_bytes(args.input, args.shard_index, args.num_shards)
    stats = collections.Counter()
    old_term = signal.signal(signal.SIGTERM, _raise_on_term)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="preprocess", disable=args.no_progress,
               dynamic_ncols=True, mininterval=1.0)
    next_log = args.log_interval
    try:
        with SampleWriter(args.output_prefix, cfg.dtype) as writer, \
                atomic_path(args.output_prefix + ".errors.jsonl") as err_tmp, \
                open(err_tmp, "w") as err_file:
            first_error = None
            for res in _ordered_results(tasks, args.workers, cfg):
                if res.errors and args.on_error == "fail":
                    e = res.errors[0]
                    raise PreprocessError(f"{e['file']}:{e['line']}: {e['reason']} (--on-error fail)")
                for e in res.errors:
                    err_file.write(dumps(e) + "\n")
                first_error = first_error or (res.errors[0] if res.errors else None)
                if len(res.items_per_doc):
                    writer.add_documents(res.flat, res.item_lengths, res.item_modes, res.items_per_doc)
                stats.update(read=res.records, written=len(res.items_per_doc), skipped=len(res.errors),
                             tokens=res.tokens, images=res.images, truncated=res.truncated,
                             bytes_in=res.nbytes_in)
                bar.update(res.nbytes_in)
                dt = max(time.time() - t0, 1e-9)
                bar.set_postfix_str(f"{stats['read'] / dt:,.0f} docs/s, {stats['skipped']} skipped", refresh=False)
                if args.log_interval and stats["read"] >= next_log:
                    next_log += args.log_interval
                    bar.write(f"processed {stats['read']} records ({stats['read'] / dt:,.0f} docs/s, "
                              f"{stats['bytes_in'] / dt / 1e6:.1f} MB/s), {stats['skipped']} skipped")
            if stats["written"] == 0 and args.num_shards == 1:
                why = (f"{stats['read']} read, all skipped; the first: {first_error['file']}:{first_error['line']}: "
                       f"{first_error['reason']}") if first_error else "no records in it"
                raise PreprocessError(f"--input {' '.join(args.input)}: no sample to write ({why})")
            err_file.flush()
            stats["bytes_out"] = writer.nbytes
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, old_term)
    stats["seconds"] = time.time() - t0
    return dict(stats)


def summary_line(s: dict, prefix: str) -> str:
    dt = max(s.get("seconds", 0.0), 1e-9)
    return (f"preprocess_data: read {s.get('read', 0)}, written {s.get('written', 0)}, "
            f"skipped {s.get('skipped', 0)} (see {prefix}.errors.jsonl), truncated {s.get('truncated', 0)}, "
            f"tokens {s.get('tokens', 0)}, images {s.get('images', 0)}, "
            f"{s.get('bytes_out', 0) / 1e6:.1f} MB written, {dt:.1f} s "
            f"({s.get('read', 0) / dt:,.0f} docs/s, {s.get('tokens', 0) / dt:,.0f} tokens/s, "
            f"{s.get('bytes_in', 0) / dt / 1e6:.1f} MB/s in)")


def main(argv=None) -> int:
    args = get_args(argv)
    try:
        stats = run(args)
    except PreprocessError as e:
        print(f"preprocess_data: error: {e}; no output written", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("terminated" if isinstance(e, Terminated) else "interrupted", "; no output written", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    print(summary_line(stats, args.output_prefix))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(cli("preprocess_data", main))
