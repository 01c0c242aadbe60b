#!/usr/bin/env python
"""Sample CoD / CoT candidates at scale (SICOG stage 2: inference-time data generation).

    # 6 CoD candidates per unlabelled image, from a checkpoint of any TP size
    python tools/generate_candidates.py --load ckpt/ --image-root images/ --mode cod \\
        --tokenizer-type SentencePieceTokenizer --tokenizer-model tok.model --chat-template qwen2 \\
        --num-candidates 6 --temperature 0.7 --top-p 0.9 --max-new-tokens 512 --output cands.jsonl

    # structured CoT on image-question records, shard 3 of 8 (e.g. a SLURM array task), resumable
    python tools/generate_candidates.py --load ckpt/ --input qa.jsonl --image-root images/ --mode cot \\
        --shard-index 3 --num-shards 8 --resume --output cands.03.jsonl ...

    # a Hugging Face LLaVA directory (converted in process; tokenizer from that directory)
    python tools/generate_candidates.py --hf-path llava-hf/ --input qa.jsonl --mode answer --output out.jsonl

Input: LLaVA records (``--input``: JSONL or JSON list; ``image`` relative to
``--image-root``) or, without ``--input``, every image file under
``--image-root`` (id = relative path). Output: one candidate record per input
(``{"id", "image", "task", "prompt", "candidates", "reference"?, "provenance"}``:
the checkpoint's path, iteration and meta.json hash, mode, prompt template,
sampling settings, seed; see ``megatron_sicog/records.py``), appended
and flushed batch by batch; bad input goes to ``<output>.errors.jsonl`` with
``file:line`` and the reason, and the run continues. An existing ``--output``
is continued with ``--resume`` (ids already there are skipped; damaged lines,
such as a truncated last line from a kill, are removed first, atomically) or
replaced with ``--overwrite``; otherwise the run refuses to start. Flags,
files and the checkpoint are checked before the model is loaded: a mistake is
one line naming the flag or file, exit status 2.

Splitting: record i goes to shard ``i % S`` with S = ``--num-shards`` x
data-parallel size (world / TP); each data-parallel rank of a multi-process
run writes ``<output stem>.dp<rank><suffix>``. Shards merge by concatenation.
Pipeline parallelism is not supported for generation (use TP).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from megatron_sicog.guards import (UsageError, add_debug_flag, add_image_root_flags,
                                   add_overwrite_flag, check_outputs, cli)
from megatron_sicog.generation.inputs import done_ids, iter_inputs, shard
from megatron_sicog.io import dumps
from megatron_sicog.training.checkpointing import add_allow_pickle_flag


def parse_args(argv=None) -> argparse.Namespace:
    from megatron_sicog.data.chat_template import TEMPLATES
    from megatron_sicog.data.tokenizer import TOKENIZER_TYPES
    from megatron_sicog.model.presets import add_model_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--load", default=None, help="checkpoint directory of this project (any TP)")
    g.add_argument("--hf-path", default=None, help="Hugging Face LlavaForConditionalGeneration directory")
    g.add_argument("--iteration", type=int, default=None, help="checkpoint iteration (default: latest)")
    g.add_argument("--random-init", action="store_true",
                   help="no checkpoint: random weights of --model-preset (smoke tests, benchmarks)")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1)
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    add_allow_pickle_flag(g)
    add_model_args(p)
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer-type", default=None, choices=TOKENIZER_TYPES,
                   help="default: the checkpoint's (or HuggingFaceTokenizer for --hf-path)")
    g.add_argument("--tokenizer-model", default=None)
    g.add_argument("--chat-template", default=None, choices=sorted(TEMPLATES),
                   help="default: the checkpoint's, else qwen2")
    g = p.add_argument_group("data")
    g.add_argument("--input", nargs="*", default=None, help="LLaVA record files; omit to use every image")
    add_image_root_flags(g)
    g.add_argument("--output", required=True, help="candidate records (JSONL)")
    g.add_argument("--resume", action="store_true", help="append, skipping ids already in --output")
    add_overwrite_flag(g)
    g.add_argument("--shard-index", type=int, default=None, help="default: $SLURM_ARRAY_TASK_ID or 0")
    g.add_argument("--num-shards", type=int, default=None, help="default: $SLURM_ARRAY_TASK_COUNT or 1")
    g.add_argument("--limit", type=int, default=None, help="stop after this many input records (per shard)")
    g = p.add_argument_group("generation")
    g.add_argument("--mode", choices=["cod", "caption", "cot", "answer"], required=True)
    g.add_argument("--num-candidates", type=int, default=6)
    g.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=0.9)
    g.add_argument("--top-k", type=int, default=0, help="0 = off")
    g.add_argument("--max-new-tokens", type=int, default=512)
    g.add_argument("--micro-batch-size", type=int, default=8, help="prompts per batch")
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--no-progress", action="store_true")
    add_debug_flag(p)
    a = p.parse_args(argv)
    sources = sum(bool(x) for x in (a.load, a.hf_path, a.random_init))
    if sources != 1:
        p.error("give exactly one of --load, --hf-path, --random-init")
    if a.pipeline_model_parallel_size != 1:
        p.error(f"generation runs each model whole: --pipeline-model-parallel-size must be 1, got "
                f"{a.pipeline_model_parallel_size} (use --tensor-model-parallel-size; checkpoints of any "
                "TP/PP load into it)")
    if not a.input and not a.image_root:
        p.error("give --input record files, or --image-root to caption every image in it")
    if a.shard_index is None:
        a.shard_index = int(os.environ.get("SLURM_ARRAY_TASK_ID", 0)) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
    if a.num_shards is None:
        a.num_shards = int(os.environ.get("SLURM_ARRAY_TASK_COUNT", 1))
    if not 0 <= a.shard_index < a.num_shards:
        p.error(f"--shard-index {a.shard_index} outside [0, --num-shards {a.num_shards})")
    if a.resume and a.overwrite:
        p.error("--resume continues --output, --overwrite replaces it: give one")
    return a


def check_args(a) -> None:
    """Flags, files and checkpoint, before any model is loaded (UsageError naming the flag or file)."""
    for flag, low in (("num_candidates", 1), ("max_new_tokens", 1), ("micro_batch_size", 1), ("top_k", 0)):
        if getattr(a, flag) < low:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= {low}, got {getattr(a, flag)}")
    if a.limit is not None and a.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {a.limit}")
    if not (math.isfinite(a.temperature) and a.temperature >= 0):
        raise UsageError(f"--temperature must be a finite number >= 0 (0 = greedy), got {a.temperature}")
    if not (math.isfinite(a.top_p) and 0 < a.top_p <= 1):
        raise UsageError(f"--top-p must be in (0, 1], got {a.top_p}")
    for path in a.input or []:
        if not Path(path).is_file():
            raise UsageError(f"--input {path}: no such file")
    if a.image_root is not None and not Path(a.image_root).is_dir():
        raise UsageError(f"--image-root {a.image_root} is not a directory")
    if a.hf_path is not None and not Path(a.hf_path).is_dir():
        raise UsageError(f"--hf-path {a.hf_path} is not a directory")
    if a.tokenizer_model is not None and not Path(a.tokenizer_model).exists():
        raise UsageError(f"--tokenizer-model {a.tokenizer_model}: no such file or directory")
    if a.load:
        from megatron_sicog.training import checkpointing as ckpt

        ckpt.read_meta(a.load, a.iteration)  # CheckpointError: not a checkpoint / missing iteration
    check_outputs({"--input": a.input or []}, {"--output": a.output}, overwrite=a.overwrite, resume=a.resume)



def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    a = parse_args(argv)
    check_args(a)
    from megatron_sicog.training.checkpointing import allow_pickle

    allow_pickle(a.allow_pickle)
    from megatron.core import parallel_state
    from tqdm import tqdm

    from megatron_sicog import runtime
    from megatron_sicog.generation.candidates import CandidateOptions, generate_candidates
    from megatron_sicog.generation.loading import load_model_and_tokenizer
    from megatron_sicog.generation.sampling import SamplingParams
    from megatron_sicog.records import checkpoint_provenance

    import torch.distributed as dist

    owns_dist = not dist.is_initialized()  # in-process callers (tests, the SICOG loop) keep theirs
    runtime.init_distributed(a.tensor_model_parallel_size, 1, seed=a.seed)
    dp_rank = parallel_state.get_data_parallel_rank()
    dp_size = parallel_state.get_data_parallel_world_size()
    writer = parallel_state.get_tensor_model_parallel_rank() == 0
    output = Path(a.output)
    if dp_size > 1:
        output = output.with_name(f"{output.stem}.dp{dp_rank:03d}{output.suffix}")
    errors_path = output.with_name(output.name + ".errors.jsonl")
    tmp_dir = Path(tempfile.mkdtemp(prefix=".gen-", dir=output.parent if output.parent.exists() else None))
    try:
        model, tokenizer, template = load_model_and_tokenizer(a, tmp_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    options = CandidateOptions(
        mode=a.mode, num_candidates=a.num_candidates,
        sampling=SamplingParams(temperature=a.temperature, top_p=a.top_p if a.temperature > 0 else 1.0,
                                top_k=a.top_k if a.temperature > 0 else 0),
        max_new_tokens=a.max_new_tokens, seed=a.seed, chat_template=template, image_root=a.image_root,
        allow_outside_image_root=a.allow_outside_image_root, micro_batch_size=a.micro_batch_size,
        checkpoint=checkpoint_provenance(load=a.load, iteration=a.iteration, hf_path=a.hf_path,
                                         random_init=a.model_preset if a.random_init else None))

    output.parent.mkdir(parents=True, exist_ok=True)
    skip = done_ids(output) if a.resume else set()
    mode = "a" if a.resume else "w"
    out_f = open(output, mode) if writer else None
    err_f = open(errors_path, mode) if writer else None
    n_err = 0

    def on_error(e: dict) -> None:
        nonlocal n_err
        n_err += 1
        if err_f is not None:
            err_f.write(dumps(e) + "\n")
            err_f.flush()

    total_shards = a.num_shards * dp_size
    stream = shard(iter_inputs(a.input, a.image_root), a.shard_index * dp_size + dp_rank, total_shards, a.limit)
    n_skipped = 0

    def pending():
        nonlocal n_skipped
        for where, rec in stream:
            if skip and isinstance(rec, dict) and str(rec.get("id")) in skip:
                n_skipped += 1
                continue
            yield where, rec

    bar = tqdm(desc=f"{a.mode} x{a.num_candidates}", unit="item", disable=a.no_progress or not writer,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    n_items = n_tokens = 0
    try:
        for res in generate_candidates(model, tokenizer, pending(), options, on_error):
            if out_f is not None:
                out_f.write("".join(dumps(r) + "\n" for r in res.records))
                out_f.flush()
                os.fsync(out_f.fileno())
            n_items += len(res.records)
            n_tokens += res.num_tokens
            bar.update(len(res.records))
            dt = max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str(f"{n_tokens / dt:.0f} tokens/s, {n_err} errors")
    finally:
        bar.close()
        for f in (out_f, err_f):
            if f is not None:
                f.close()
    dt = time.perf_counter() - t0
    if writer:
        print(f"generate_candidates: {n_items} records x {a.num_candidates} candidates, {n_tokens} tokens in "
              f"{dt:.1f} s ({n_items / dt:.2f} items/s, {n_tokens / dt:.0f} tokens/s); {n_skipped} already done, "
              f"{n_err} skipped with errors ({errors_path}); output {output}", flush=True)
    if owns_dist:
        runtime.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(cli("generate_candidates", main))
