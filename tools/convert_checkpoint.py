#!/usr/bin/env python
"""Convert checkpoints between this project (any TP/PP) and Hugging Face LLaVA.

    # a LlavaForConditionalGeneration directory (CLIP + Llama/Qwen2) -> TP=2, PP=2
    python tools/convert_checkpoint.py hf-to-megatron --hf-path llava-hf/ --save ckpt/ \
        --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2

    # CLIP vision model + causal LM + a fresh projector (LLaVA stage-1 start)
    python tools/convert_checkpoint.py hf-to-megatron --vision-path clip/ --language-path qwen2/ \
        --save ckpt/ --tensor-model-parallel-size 4 [--image-token-id N]

    # any TP/PP checkpoint -> a directory LlavaForConditionalGeneration.from_pretrained reads
    python tools/convert_checkpoint.py megatron-to-hf --load ckpt/ --save llava-out/ --max-shard-size 5GB

    # after every conversion: do both compute the same? (max |logit diff|, greedy tokens, pixels)
    python tools/convert_checkpoint.py verify --load ckpt/ --hf-path llava-out/ [--tolerance 1e-4]

Nothing is downloaded: paths are local directories. Output directories must
not exist (or be empty); they appear only when the conversion has finished.
Errors name what is missing, unexpected or impossible (exit status 2); verify
exits 1 when the two models differ by more than the tolerance.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from megatron_sicog.guards import UsageError, add_debug_flag, debug_requested
from megatron_sicog.training.checkpointing import add_allow_pickle_flag, allow_pickle


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("hf-to-megatron", help="Hugging Face -> this project's checkpoint")
    a.add_argument("--hf-path", help="LlavaForConditionalGeneration directory")
    a.add_argument("--vision-path", help="CLIP (vision) model directory, with --language-path")
    a.add_argument("--language-path", help="Llama/Qwen2 causal LM directory, with --vision-path")
    a.add_argument("--save", required=True, help="checkpoint directory to create")
    a.add_argument("--tensor-model-parallel-size", type=int, default=1)
    a.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    a.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    a.add_argument("--image-token-id", type=int, default=None,
                   help="with --language-path: id of <image> (default: from its tokenizer.json)")
    a.add_argument("--vision-feature-layer", type=int, default=-2,
                   help="with --vision-path: HF hidden_states index fed to the projector (LLaVA: -2)")
    a.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="default: as stored")
    a.add_argument("--seed", type=int, default=1234, help="fresh projector initialisation")
    a.add_argument("--image-aspect-ratio", choices=["pad", "resize", "square"], default=None,
                   help="LLaVA's image_aspect_ratio the model is trained / run with: pad (expand to a square with "
                        "the processor's mean colour, LLaVA-1.5), resize (squash), square (the processor alone); "
                        "default: the HF config.json's, else square")
    b = sub.add_parser("megatron-to-hf", help="this project's checkpoint (any TP/PP) -> Hugging Face LLaVA")
    b.add_argument("--load", required=True, help="checkpoint directory (latest iteration unless --iteration)")
    b.add_argument("--save", required=True, help="Hugging Face directory to create")
    b.add_argument("--iteration", type=int, default=None)
    b.add_argument("--max-shard-size", default="5GB", help="e.g. 5GB, 500MB, 2GiB (default 5GB)")
    b.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="default: as stored")
    b.add_argument("--tokenizer-path", default=None, help="default: the checkpoint's tokenizer/ directory")
    b.add_argument("--chat-template", default=None,
                   help="chat template written with a SentencePiece tokenizer (default: the checkpoint's)")
    add_allow_pickle_flag(b)
    v = sub.add_parser("verify", help="run a checkpoint and a Hugging Face LLaVA directory on the same inputs")
    v.add_argument("--load", required=True, help="checkpoint directory (any TP/PP; latest iteration)")
    v.add_argument("--hf-path", required=True, help="LlavaForConditionalGeneration directory")
    v.add_argument("--iteration", type=int, default=None)
    v.add_argument("--image", nargs="+", default=None,
                   help="image files (default: seeded random images of three aspect ratios)")
    v.add_argument("--prompt", action="append", default=None, help="prompt text (repeatable; one per image)")
    v.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest allowed |logit diff| and |pixel diff| in fp32 (default 1e-4)")
    v.add_argument("--max-new-tokens", type=int, default=8, help="greedy tokens compared per input")
    v.add_argument("--seed", type=int, default=0)
    add_allow_pickle_flag(v)
    for q in (a, b, v):
        q.add_argument("--no-progress", action="store_true", help="no progress bar")
        add_debug_flag(q)
    args = p.parse_args(argv)
    if args.command == "hf-to-megatron" and not args.hf_path and not (args.vision_path and args.language_path):
        a.error("give --hf-path, or both --vision-path and --language-path")
    if args.command == "hf-to-megatron" and args.hf_path and (args.vision_path or args.language_path):
        a.error("--hf-path excludes --vision-path/--language-path")
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    from megatron_sicog.conversion.hf_mapping import ConversionError

    t0 = time.time()
    allow_pickle(getattr(args, "allow_pickle", False))
    try:
        if args.command == "verify":
            return _verify(args)
        if args.command == "hf-to-megatron":
            from megatron_sicog.conversion.hf_import import import_hf

            out = import_hf(args.save, args.tensor_model_parallel_size, args.pipeline_model_parallel_size,
                            hf_path=args.hf_path, vision_path=args.vision_path, language_path=args.language_path,
                            image_token_id=args.image_token_id, vision_feature_layer=args.vision_feature_layer,
                            make_vocab_size_divisible_by=args.make_vocab_size_divisible_by, dtype=args.dtype,
                            seed=args.seed, progress=not args.no_progress,
                            image_aspect_ratio=args.image_aspect_ratio)
        else:
            from megatron_sicog.conversion.hf_export import export_hf

            out = export_hf(args.load, args.save, max_shard_size=args.max_shard_size, dtype=args.dtype,
                            tokenizer_path=args.tokenizer_path, iteration=args.iteration,
                            progress=not args.no_progress, chat_template=args.chat_template)
    except (ConversionError, FileNotFoundError, FileExistsError, UsageError) as e:
        if debug_requested(argv):
            raise
        print(f"convert_checkpoint {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{args.command}: wrote {out} in {time.time() - t0:.1f}s")
    return out


def _verify(args):
    from megatron_sicog import runtime
    from megatron_sicog.conversion.verify import verify

    runtime.init_distributed(1, 1, seed=args.seed)
    report = verify(args.load, args.hf_path, images=args.image, prompts=args.prompt,
                    max_new_tokens=args.max_new_tokens, iteration=args.iteration, seed=args.seed)
    for line in report.lines(args.tolerance):
        print(line)
    if not report.ok(args.tolerance):
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
