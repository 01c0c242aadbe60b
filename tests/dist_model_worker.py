"""torchrun worker for the TP/PP equivalence tests (tests/test_model_parallel.py).

Each process first builds the model at TP=1, PP=1 (world of 2 = data parallel
2, same data on both), runs megatron-core's forward-backward schedule over the
micro-batches, and records loss and full gradients. Then it rebuilds the model
at the requested TP/PP from the *same full weights*, runs the same schedule
(1F1B at PP>1), gathers loss and gradients, and rank 0 writes both to a file.
``--tiled``: the model tiles its images (LLaVA-NeXT grids of 64 px tiles) and the
micro-batches hold images of several aspect ratios, so rows and micro-batches carry
different numbers of views and image tokens.
"""
import argparse
import sys

import torch
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_sicog import runtime
from megatron_sicog.model import sharding
from megatron_sicog.model.batch import collate
from megatron_sicog.model.llava import build_model
from megatron_sicog.model.presets import PRESETS
from megatron_sicog.training.lm_step import forward_step


def make_microbatches(args, n_mb, mbs, seq):
    g = torch.Generator().manual_seed(7)
    P = args.vision.num_patches
    out = []
    for _ in range(n_mb):
        samples = []
        for j in range(mbs):
            n_text = int(torch.randint(20, seq - P - 4, (1,), generator=g))
            toks = torch.randint(10, args.language.vocab_size, (n_text,), generator=g)
            has_img = j % 2 == 0
            if has_img:
                toks = torch.cat([toks[:3], torch.tensor([args.image_token_id]), toks[3:]])
            mask = (torch.arange(len(toks)) > len(toks) // 2).to(torch.uint8)
            imgs = [torch.randn(3, args.vision.image_size, args.vision.image_size, generator=g)] if has_img else []
            samples.append({"tokens": toks.numpy(), "loss_mask": mask.numpy(), "images": imgs})
        out.append(collate(samples, seq, args.image_token_id, P, pad_id=0,
                           image_transform=lambda ims: torch.stack(ims)))
    return out


def make_tiled_microbatches(args, n_mb, mbs, seq):
    """Micro-batches whose images (uint8, several aspect ratios) tile into different grids and token counts."""
    import numpy as np

    from megatron_sicog.data.tiling import tiling_for

    tiling = tiling_for(args.vision)
    rng = np.random.default_rng(7)
    shapes = [(50, 140), (150, 60), (100, 110), (30, 70), (90, 40)]
    out, k = [], 0
    for _ in range(n_mb):
        samples = []
        for j in range(mbs):
            h, w = shapes[k % len(shapes)]
            k += 1
            budget = seq - tiling.num_tokens(h, w) - 2
            toks = rng.integers(10, args.language.vocab_size, int(rng.integers(10, budget)))
            toks = np.concatenate([toks[:3], [args.image_token_id], toks[3:]]).astype(np.int64)
            mask = (np.arange(len(toks)) > 3).astype(np.uint8)
            samples.append({"tokens": toks, "loss_mask": mask,
                            "images": [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)]})
        out.append(collate(samples, seq, args.image_token_id, args.vision.num_image_tokens, pad_id=0,
                           tiling=tiling))
    return out


def run(args, tp, pp, batches, full_sd, seq, mbs):
    parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    runtime.set_seed(1234)
    model = build_model(args)
    if full_sd is None:  # the reference: its own weights, through the canonical form like the others
        full_sd = sharding.gather_full_state_dict(model, args.language.vocab_size)
    sharding.load_full_state_dict(model, full_sd, args.language.vocab_size)
    model.zero_grad(set_to_none=True)
    fb = get_forward_backward_func()
    losses = fb(forward_step_func=forward_step, data_iterator=iter(batches), model=[model],
                num_microbatches=len(batches), seq_length=seq, micro_batch_size=mbs, forward_only=False)
    # loss lives on the last stage; share it with every rank
    loss = torch.tensor(sum(float(d["lm_loss"]) for d in losses) / len(batches) if losses else 0.0,
                        dtype=torch.float64)
    if pp > 1:
        torch.distributed.all_reduce(loss, group=parallel_state.get_pipeline_model_parallel_group())
    full = sharding.gather_full_state_dict(model, args.language.vocab_size)
    grads = sharding.gather_full_grads(model, args.language.vocab_size)
    return float(loss), full, grads


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--micro-batches", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("--tiled", action="store_true")
    a = p.parse_args()
    runtime.init_distributed(1, 1, seed=1234)
    args = PRESETS["tiny"].replace()
    args.language.vocab_size = 1000  # not a multiple of 64*tp: exercises vocab padding
    seq, mbs = 64, 2
    if a.tiled:
        s = args.vision.image_size
        args.vision.image_grid_pinpoints = [[s, 2 * s], [2 * s, s], [2 * s, 2 * s], [s, s]]
        seq = 128
        batches = make_tiled_microbatches(args, a.micro_batches, mbs, seq)
    else:
        batches = make_microbatches(args, a.micro_batches, mbs, seq)
    ref_loss, ref_sd, ref_grads = run(args, 1, 1, batches, None, seq, mbs)
    loss, sd, grads = run(args, a.tp, a.pp, batches, ref_sd, seq, mbs)
    if torch.distributed.get_rank() == 0:
        torch.save({"ref_loss": ref_loss, "loss": loss, "ref_grads": ref_grads, "grads": grads,
                    "ref_sd": ref_sd, "sd": sd}, a.out)
    runtime.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
