"""Command line of pretrain_sicog.py: Megatron-LM flag names, checked before any work starts."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional, Sequence

from megatron_sicog.data.chat_template import TEMPLATES
from megatron_sicog.guards import UsageError, add_debug_flag
from megatron_sicog.model.presets import add_model_args
from megatron_sicog.training.checkpointing import add_allow_pickle_flag


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pretrain_sicog.py",
        description="Train the SICOG multimodal model: --stage pretrain | sft | dpo.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--stage", choices=["pretrain", "sft", "dpo"], default="sft")
    g = p.add_argument_group("parallelism")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1)
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    g.add_argument("--use-distributed-optimizer", action="store_true",
                   help="shard optimizer state over data-parallel ranks (NCCL/GPU only)")
    g = p.add_argument_group("batch")
    g.add_argument("--micro-batch-size", type=int, default=1)
    g.add_argument("--global-batch-size", type=int, default=None,
                   help="default: micro-batch-size x data-parallel size (no accumulation)")
    g.add_argument("--seq-length", type=int, default=256)
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--min-lr", type=float, default=0.0)
    g.add_argument("--lr-decay-style", choices=["constant", "linear", "cosine", "inverse-square-root", "WSD"],
                   default="cosine")
    g.add_argument("--lr-warmup-iters", type=int, default=0)
    g.add_argument("--vision-lr", type=float, default=None,
                   help="peak learning rate of the vision encoder (LLaVA's mm_vision_tower_lr); its min lr "
                        "keeps the --min-lr/--lr ratio. Default: --lr")
    g.add_argument("--lr-decay-iters", type=int, default=None, help="default: --train-iters")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--adam-beta1", type=float, default=0.9)
    g.add_argument("--adam-beta2", type=float, default=0.999)
    g.add_argument("--adam-eps", type=float, default=1e-8)
    g.add_argument("--clip-grad", type=float, default=1.0)
    g.add_argument("--train-iters", type=int, required=True)
    g.add_argument("--seed", type=int, default=1234)
    prec = g.add_mutually_exclusive_group()
    prec.add_argument("--bf16", action="store_true")
    prec.add_argument("--fp16", action="store_true")
    prec.add_argument("--bf16-autocast", action="store_true",
                      help="forward (and so backward) matmuls and attention in bf16 under torch.autocast; "
                           "fp32 weights, gradients and Adam (the CPU's fast path with AMX / AVX-512 BF16)")
    g.add_argument("--dpo-beta", type=float, default=0.1)
    g = p.add_argument_group("freezing")
    g.add_argument("--freeze-vision", "--freeze-ViT", dest="freeze_vision", action="store_true")
    g.add_argument("--freeze-projector", action="store_true")
    g.add_argument("--freeze-language-model", "--freeze-LM", dest="freeze_language_model", action="store_true")
    g = p.add_argument_group("checkpointing")
    g.add_argument("--save", default=None)
    g.add_argument("--load", default=None, help="resume from this directory when it holds a checkpoint")
    g.add_argument("--pretrained-checkpoint", default=None,
                   help="initial weights (any TP/PP) when --load holds no checkpoint (Megatron's --finetune)")
    g.add_argument("--pretrained-vision-checkpoint", default=None,
                   help="initial vision-encoder weights only, from a checkpoint of this project (any TP/PP): "
                        "a separately pretrained vision tower, as LLaVA starts from CLIP; projector and "
                        "language model keep --pretrained-checkpoint's or fresh weights")
    g.add_argument("--save-interval", type=int, default=None)
    g.add_argument("--keep-last-checkpoints", type=int, default=None)
    sched = g.add_mutually_exclusive_group()
    sched.add_argument("--override-opt_param-scheduler", "--override-opt-param-scheduler",
                       dest="override_opt_param_scheduler", action="store_true",
                       help="on resume, follow the LR schedule of these flags, not the checkpoint's")
    sched.add_argument("--use-checkpoint-opt_param-scheduler", "--use-checkpoint-opt-param-scheduler",
                       dest="use_checkpoint_opt_param_scheduler", action="store_true",
                       help="on resume, keep the checkpoint's LR schedule whatever these flags say")
    add_allow_pickle_flag(g)
    g = p.add_argument_group("data")
    g.add_argument("--data-path", nargs="*", default=None,
                   help="weighted blend of indexed datasets: '0.7 prefix_a 0.3 prefix_b' (dpo: prefixes of "
                        "tools/preprocess_data.py --preference output)")
    g.add_argument("--split", default="98,2")
    g.add_argument("--mock-data", action="store_true", help="seeded synthetic multimodal batches")
    g.add_argument("--tokenizer-type", default=None, choices=["SentencePieceTokenizer", "HuggingFaceTokenizer"])
    g.add_argument("--tokenizer-model", default=None)
    g.add_argument("--chat-template", default=None, choices=sorted(TEMPLATES),
                   help="the template the data was encoded with, recorded in the saved checkpoints; default: the "
                        "one the starting checkpoint (--load to resume, else --pretrained-checkpoint) records, "
                        "else qwen2")
    g.add_argument("--image-root", default=None,
                   help="ignored: every stage reads images from its indexed dataset (kept for old launch lines)")
    g.add_argument("--vocab-size", type=int, default=None, help="mock data without a tokenizer")
    g.add_argument("--pack-sequences", action="store_true")
    g.add_argument("--num-workers", type=int, default=0)
    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval-interval", type=int, default=None)
    g.add_argument("--eval-iters", type=int, default=0)
    g.add_argument("--log-interval", type=int, default=10)
    g.add_argument("--log-json", default=None, help="one JSON object per iteration")
    g.add_argument("--tensorboard-dir", default=None)
    g.add_argument("--loss-curve", default=None, help="PNG of the loss curve (default: next to --log-json)")
    g.add_argument("--exit-interval", type=int, default=None, help="stop (with a checkpoint) after this iteration")
    g.add_argument("--exit-signal-handler", action=argparse.BooleanOptionalAction, default=True,
                   help="SIGTERM/SIGUSR1: save a checkpoint at the next iteration boundary and exit 0 "
                        "(Megatron-LM's flag, on by default here; --no-exit-signal-handler: the signals "
                        "kill the run at once, no checkpoint)")
    add_model_args(p)
    add_debug_flag(p)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.lr_decay_iters is None:
        args.lr_decay_iters = args.train_iters
    return args


def validate_args(args: argparse.Namespace, world_size: int) -> int:
    """Raise UsageError naming the numbers for impossible configurations; return the DP size."""
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    errors = []
    dp = world_size // (tp * pp)  # runtime.init_distributed has checked that TP x PP divides it
    if args.global_batch_size is None:
        args.global_batch_size = args.micro_batch_size * dp
    if args.global_batch_size % (args.micro_batch_size * dp):
        errors.append(f"global batch size {args.global_batch_size} is not divisible by micro-batch-size "
                      f"{args.micro_batch_size} x data-parallel size {dp} "
                      f"({args.global_batch_size} % ({args.micro_batch_size} * {dp}) != 0)")
    from megatron_sicog import runtime

    if args.use_distributed_optimizer and not runtime.cuda_available():
        errors.append("--use-distributed-optimizer needs NCCL (a GPU): gloo has no reduce-scatter")
    if (args.bf16 or args.fp16) and not runtime.cuda_available():
        errors.append("--bf16/--fp16 need a GPU: megatron-core's mixed-precision optimizer accepts only "
                      "CUDA tensors (train in fp32 on the CPU)")
    if not args.mock_data:
        if not args.data_path:
            errors.append("give --data-path (or --mock-data)")
        else:
            errors += _blend_errors(args.data_path)
            missing = [p for p in _data_files(args) if not Path(p).exists()]
            if missing:
                errors.append("--data-path: data files not found: " + ", ".join(missing))
        if not (args.tokenizer_type and args.tokenizer_model):
            errors.append("--tokenizer-type and --tokenizer-model are required with --data-path")
        elif not Path(args.tokenizer_model).exists():
            errors.append(f"tokenizer model not found: {args.tokenizer_model}")
    if args.pretrained_checkpoint and not Path(args.pretrained_checkpoint).exists():
        errors.append(f"--pretrained-checkpoint {args.pretrained_checkpoint} does not exist")
    if args.pretrained_vision_checkpoint and not Path(args.pretrained_vision_checkpoint).exists():
        errors.append(f"--pretrained-vision-checkpoint {args.pretrained_vision_checkpoint} does not exist")
    if args.save_interval is not None and args.save_interval <= 0:
        errors.append(f"--save-interval must be positive, got {args.save_interval}")
    if args.eval_interval and args.eval_iters <= 0:
        errors.append("--eval-interval needs --eval-iters > 0")
    if errors:
        raise UsageError("invalid configuration: " + "; ".join(errors))
    return dp


def _weight(tok: str) -> Optional[float]:
    try:
        return float(tok)
    except ValueError:
        return None


def _blend_errors(data_path: list[str]) -> list[str]:
    """--data-path is 'P' or 'W1 P1 W2 P2 ...' with finite weights >= 0, not all 0."""
    weights = [_weight(t) for t in data_path]
    if all(w is None for w in weights):
        return []
    if len(data_path) % 2 or any(w is None for w in weights[::2]) or any(w is not None for w in weights[1::2]):
        return [f"--data-path {' '.join(data_path)}: expected 'prefix' or weight/prefix pairs 'W1 P1 W2 P2 ...'"]
    bad = [t for t, w in zip(data_path[::2], weights[::2]) if not (math.isfinite(w) and w >= 0)]
    if bad:
        return [f"--data-path weights must be finite and >= 0, got {', '.join(bad)}"]
    if not any(weights[::2]):
        return [f"--data-path weights are all 0 ({' '.join(data_path)}): nothing to sample"]
    return []


def _data_files(args) -> list[str]:
    """Files that --data-path names: prefix.bin/.idx of each indexed dataset."""
    return [tok + ext for tok in args.data_path if _weight(tok) is None for ext in (".bin", ".idx")]


def packing_problem(pack_sequences: bool, transformer_impl: str) -> Optional[str]:
    """Why --pack-sequences cannot run with this layer implementation, or None.

    Packing attends through a dense block-diagonal mask. The local spec applies
    it; Transformer Engine's attention (attn_mask_type=causal) ignores a dense
    mask, so packed samples would attend to each other. TE packs through
    megatron-core's PackedSeqParams (THD, cu_seqlens), not wired here yet.
    """
    if pack_sequences and transformer_impl == "transformer_engine":
        return ("--pack-sequences with Transformer Engine layers would let packed samples attend to each other "
                "(TE's causal attention ignores the block-diagonal mask); pass --transformer-impl local, or drop "
                "--pack-sequences")
    return None
