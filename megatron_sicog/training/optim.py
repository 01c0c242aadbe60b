"""Model wrapping and optimisation: megatron-core DDP, optimizer, LR scheduler.

* `wrap_model`: megatron's `Float16Module` for --bf16/--fp16, then megatron's
  `DistributedDataParallel` (grad buffers reduced in fp32; the distributed
  optimizer shards state over DP ranks on NCCL).
* `build_optimizer`: `get_megatron_optimizer` (Adam, gradient clipping by
  total norm — runtime.py makes the clip step work on the CPU).
  ``--vision-lr`` puts the vision encoder's parameters in their own parameter
  group through megatron-core's ``config_overrides`` (name pattern
  ``*vision.*``), on top of its standard no-weight-decay group for biases.
* `build_scheduler`: megatron's `OptimizerParamScheduler`, stepped once per
  iteration (warmup / decay counted in iterations).
"""
from __future__ import annotations

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer, get_standard_config_overrides
from megatron.core.optimizer.optimizer_config import ParamKey
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer.module import Float16Module


def params_dtype(args) -> torch.dtype:
    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32


def wrap_model(model, args):
    config = model.config
    if args.bf16 or args.fp16:
        model = Float16Module(config, model)
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=args.use_distributed_optimizer,
        check_for_nan_in_grad=False,
    )
    return DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)


def build_optimizer(ddp_models, args):
    cfg = OptimizerConfig(
        optimizer="adam",
        lr=args.lr,
        min_lr=args.min_lr,
        weight_decay=args.weight_decay,
        adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2,
        adam_eps=args.adam_eps,
        clip_grad=args.clip_grad,
        bf16=args.bf16,
        fp16=args.fp16,
        params_dtype=params_dtype(args),
        use_distributed_optimizer=args.use_distributed_optimizer,
        initial_loss_scale=2 ** 16,  # fp16: dynamic loss scaling (loss_scale=None)
    )
    return get_megatron_optimizer(cfg, ddp_models, config_overrides=param_group_overrides(cfg, args))


# parameter names seen by the optimizer: "module.vision.decoder.layers.0...." (DDP-wrapped)
VISION_PARAMS = "*vision.*"


def param_group_overrides(cfg: OptimizerConfig, args):
    """megatron-core's standard overrides, plus --vision-lr for the vision encoder (None: no change)."""
    if args.vision_lr is None or args.vision_lr == args.lr:
        return None  # megatron-core's default param groups
    overrides = get_standard_config_overrides(config=cfg)
    ratio = args.min_lr / args.lr if args.lr else 0.0
    overrides[ParamKey(name=VISION_PARAMS)] = {"max_lr": args.vision_lr, "min_lr": args.vision_lr * ratio}
    return overrides


def build_scheduler(optimizer, args) -> OptimizerParamScheduler:
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if args.lr_warmup_iters else args.lr,
        max_lr=args.lr,
        min_lr=args.min_lr,
        lr_warmup_steps=args.lr_warmup_iters,
        lr_decay_steps=max(args.lr_decay_iters, args.lr_warmup_iters + 1),
        lr_decay_style=args.lr_decay_style,
        start_wd=args.weight_decay,
        end_wd=args.weight_decay,
        wd_incr_steps=args.train_iters,
        wd_incr_style="constant",
        wsd_decay_steps=max(1, args.lr_decay_iters // 10) if args.lr_decay_style == "WSD" else None,
        lr_wsd_decay_style="linear" if args.lr_decay_style == "WSD" else None,
        override_opt_param_scheduler=getattr(args, "override_opt_param_scheduler", False),
        use_checkpoint_opt_param_scheduler=not getattr(args, "override_opt_param_scheduler", False),
    )


# scheduler state -> the flags that set it
SCHEDULE_FLAGS = {"max_lr": "--lr", "min_lr": "--min-lr", "lr_warmup_steps": "--lr-warmup-iters",
                  "lr_decay_steps": "--train-iters/--lr-decay-iters", "lr_decay_style": "--lr-decay-style"}


def schedule_changes(scheduler: OptimizerParamScheduler, saved: dict) -> list[str]:
    """'--flag: checkpoint X, flags Y' for each schedule value the flags change against a checkpoint's."""
    now = scheduler.state_dict()
    return [f"{flag} ({key}): checkpoint {saved[key]}, flags {now[key]}"
            for key, flag in SCHEDULE_FLAGS.items() if key in saved and saved[key] != now[key]]
