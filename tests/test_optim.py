"""Optimizer parameter groups: --vision-lr gives the vision encoder its own learning rate."""
import argparse

import pytest
import torch

from megatron_sicog.model.presets import PRESETS


def _args(**kw):
    base = dict(lr=1e-3, min_lr=1e-4, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8,
                clip_grad=1.0, bf16=False, fp16=False, use_distributed_optimizer=False,
                lr_warmup_iters=2, lr_decay_iters=10, lr_decay_style="cosine", train_iters=10, vision_lr=None)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture(scope="module")
def wrapped(mcore):
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.training.optim import wrap_model

    mcore.set_seed(3)
    return wrap_model(build_model(PRESETS["tiny"]), _args())


def _lr_by_param(optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


def _stepped(wrapped, args, steps):
    from megatron_sicog.training.optim import build_optimizer, build_scheduler

    opt = build_optimizer([wrapped], args)
    sched = build_scheduler(opt, args)
    for _ in range(steps):
        sched.step(1)
    return opt


@pytest.mark.parametrize("steps, factor", [(2, 1.0), (10, 0.1)])  # end of warmup: peak; end of decay: min
def test_vision_lr_applies_to_the_vision_encoder_only(wrapped, steps, factor):
    opt = _stepped(wrapped, _args(vision_lr=2e-4), steps)
    lrs = _lr_by_param(opt)
    vision = {id(p) for p in wrapped.module.vision.parameters()}
    assert vision and vision <= set(lrs)
    for name, p in wrapped.module.named_parameters():
        lr, wd = lrs[id(p)]
        want = (2e-4 if id(p) in vision else 1e-3) * factor
        assert lr == pytest.approx(want, rel=1e-6), name
        # megatron-core's standard group is kept: no weight decay on biases and norms
        assert wd == (0.0 if p.dim() == 1 else 0.1), name


def test_without_vision_lr_every_group_follows_lr(wrapped):
    lrs = _lr_by_param(_stepped(wrapped, _args(), 2))
    assert all(lr == pytest.approx(1e-3) for lr, _ in lrs.values())
    assert len(lrs) == sum(1 for _ in wrapped.module.parameters())
