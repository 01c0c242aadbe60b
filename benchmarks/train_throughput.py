#!/usr/bin/env python
"""Training throughput: this project's trainer vs a Hugging Face training loop, same model, same batches.

Both sides train the preset ``tiny`` shape (Qwen2-style LM + CLIP-style ViT +
GELU MLP projector, fp32) on the same micro-batches from the same weights:

* ours: `megatron_sicog.training.trainer.Trainer` built from the real CLI
  flags (``--mock-data --stage sft --model-preset tiny --micro-batch-size B
  --global-batch-size B --seq-length S --lr 1e-4 --clip-grad 1.0``); one timed
  unit is ``trainer.train_step()``: megatron-core's forward-backward schedule,
  megatron DDP grad-buffer sync, megatron Adam with clipping by total norm,
  LR scheduler step.
* Hugging Face: ``LlavaForConditionalGeneration`` from the ``LlavaConfig`` the
  project's converter writes for the same ModelArgs
  (`conversion.hf_mapping.llava_config_from_model_args`), attention ``sdpa``
  (HF's default) and, with ``--eager``, ``eager``; the usual loop:
  ``loss = model(input_ids, pixel_values, attention_mask, labels).loss``,
  ``backward``, ``clip_grad_norm_(1.0)``, ``torch.optim.AdamW``, a cosine LR
  scheduler step (the trainer's default decay style, same length).

Same batches: the micro-batches come from the trainer's own mock-data loader
(image tokens already expanded to 16 per image, as HF's processor does; every
4th mock sample is text-only, so B=8 has 6 images [6,3,64,64]). They are
collated once, before timing, and both sides consume the same list, so data
loading is timed on neither side (its cost per batch is printed separately).
HF labels are the input ids with -100 on prompt, image and padding positions
(HF shifts them itself); the attention mask is HF's padding mask. The HF model
starts from the trainer's initial weights (converted with the project's
`hf_mapping.rules`), so first-step losses must agree, and the script checks it:
a wrong label alignment or weight mapping would show there.

One process, interleaved: the machine is shared (2 cores, other jobs), so the
sides run in the same process and alternate step by step (ours, HF, HF eager,
then the next round in rotated order), with the same ``torch.set_num_threads
(--threads)``; a load burst then hits both sides alike instead of whichever
ran during it. The trainer installs the CPU emulation of CUDA calls
(`runtime.py`, a process-wide ``TorchFunctionMode``); HF steps run under
``torch._C.DisableTorchFunction()`` so they do not pay for it. ``--mode-overhead``
adds an HF sdpa side that runs *with* the mode active, which measures what the
emulation costs per step.

Timing: ``--warmup`` steps per side excluded, then ``--iters`` timed steps;
median step time per side. Tokens per step = B x S on both sides (padding
included, the same count for both). The ``cpu ms`` column is the process CPU
time (all threads) per step, median. On a machine loaded beyond its cores, the
median wall time of ``--threads 2`` is mostly OpenMP threads waiting for each
other's time slices (medians and even the best-step ratio, fastest step of
each side, then swing by 2x from run to run); ``--threads 1`` is then the
steadier figure. ``--profile`` prints a cProfile summary
of ``--profile-steps`` extra steps per side (not in the timing) to stderr.

Prints a table (side, median step ms, tokens/s) and ends with exactly one line
``ratio: R`` = ours tokens/s / HF (sdpa) tokens/s.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import logging
import pstats
import statistics
import sys
import time

from rss import peak_rss_line  # benchmarks/rss.py: the script's folder is on sys.path

import torch  # noqa: E402

SIDE_NAMES = {"ours": "ours (Trainer.train_step)", "hf-sdpa": "HF loop (sdpa)", "hf-eager": "HF loop (eager)",
              "hf-sdpa+mode": "HF sdpa + emulation mode", "ours-bf16": "ours --bf16-autocast",
              "hf-sdpa-bf16": "HF loop (sdpa) bf16 autocast"}


def trainer_argv(a) -> list[str]:
    return ["--mock-data", "--stage", "sft", "--model-preset", "tiny",
            "--micro-batch-size", str(a.batch_size), "--global-batch-size", str(a.batch_size),
            "--seq-length", str(a.seq_length), "--train-iters", str(total_steps(a)),
            "--lr", "1e-4", "--clip-grad", "1.0", "--seed", str(a.seed), "--log-interval", "1000000"]


def total_steps(a) -> int:
    return a.warmup + a.iters + (a.profile_steps if a.profile else 0)


# ---------------------------------------------------------------------------
# Hugging Face side
# ---------------------------------------------------------------------------
HF_PREFIXES = (("vision_tower.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector."),
               ("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."))


def hf_in_memory_key(name: str) -> str:
    """save_pretrained layout (what hf_mapping speaks) -> transformers 5.x module names."""
    for old, new in HF_PREFIXES:
        if name.startswith(old):
            return new + name[len(old):]
    raise KeyError(name)


def build_hf(model_args, ours_state: dict, attn: str):
    """LlavaForConditionalGeneration with the shapes of `model_args` and our weights."""
    from transformers import LlavaForConditionalGeneration

    from megatron_sicog.conversion import hf_mapping as hm

    cfg = hm.llava_config_from_model_args(model_args)
    model = LlavaForConditionalGeneration._from_config(cfg, attn_implementation=attn)
    if model.config._attn_implementation != attn:
        raise RuntimeError(f"asked for attention {attn!r}, got {model.config._attn_implementation!r}")
    sd = {}
    for rule in hm.rules(model_args):
        for name, t in zip(rule.hf, hm.to_hf(rule, ours_state[rule.canonical])):
            sd[hf_in_memory_key(name)] = t.detach().clone()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    left = [k for k in missing if "post_layernorm" not in k]  # unused by LLaVA, no megatron counterpart
    if left or unexpected:
        raise RuntimeError(f"weight mapping: missing {left}, unexpected {unexpected}")
    return model.float().train()


def hf_batch(b) -> dict:
    """Our collated Batch -> HF kwargs: unshifted labels with -100 off-target, padding mask."""
    ids = b.input_ids
    real = ~b.attention_mask[:, 0, :, 0]  # a real token sees position 0 (one sample per row, no packing)
    labels = torch.full_like(ids, -100)
    # our loss_mask[t] says labels[t] == ids[t+1] is a target; HF's labels[t+1] = ids[t+1] says the same
    tgt = b.loss_mask[:, :-1] > 0
    labels[:, 1:] = torch.where(tgt, ids[:, 1:], labels[:, 1:])
    return {"input_ids": ids, "pixel_values": b.images, "attention_mask": real.long(), "labels": labels}


def hf_step_fn(model, batches: list[dict], steps: int, with_mode: bool, bf16: bool = False):
    """The usual HF loop step; without the emulation TorchFunctionMode unless `with_mode`."""
    from transformers import get_cosine_schedule_with_warmup

    # megatron's scheduler with --train-iters T: cosine from lr to min-lr 0 over T steps, no warm-up
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=steps)
    it = iter(batches)

    def step() -> float:
        with contextlib.nullcontext() if with_mode else torch._C.DisableTorchFunction():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**next(it)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            return float(loss.detach())

    return step


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------
def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-length", type=int, default=256)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--eager", action="store_true", help="also time HF with attn_implementation='eager'")
    p.add_argument("--mode-overhead", action="store_true",
                   help="also time HF sdpa with the CPU emulation's TorchFunctionMode active")
    p.add_argument("--bf16-autocast", action="store_true",
                   help="also time both sides under bf16 autocast (ours: --bf16-autocast; HF: torch.autocast)")
    p.add_argument("--profile", action="store_true", help="cProfile --profile-steps extra steps per side (stderr)")
    p.add_argument("--profile-steps", type=int, default=3)
    return p.parse_args(argv)


def main(argv=None) -> float:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING)
    from megatron_sicog import runtime
    from megatron_sicog.training.arguments import parse_args
    from megatron_sicog.training.trainer import Trainer, unwrap

    trainer = Trainer(parse_args(trainer_argv(a)))
    n = total_steps(a)
    t0 = time.perf_counter()
    batches = [next(trainer.train_data) for _ in range(n)]
    load_ms = (time.perf_counter() - t0) * 1000.0 / n
    trainer.train_data = iter(batches)
    state = unwrap(trainer.model[0]).state_dict()

    def ours_step() -> float:
        out = trainer.train_step()
        runtime.synchronize()
        return out["lm_loss"]

    steps = {"ours": ours_step}
    if a.bf16_autocast:
        trainer16 = Trainer(parse_args(trainer_argv(a) + ["--bf16-autocast"]))
        trainer16.train_data = iter(batches)

        def ours16_step() -> float:
            return trainer16.train_step()["lm_loss"]

        steps["ours-bf16"] = ours16_step
    with torch._C.DisableTorchFunction():
        hf_batches = [hf_batch(b) for b in batches]
        variants = [("hf-sdpa", "sdpa", False)] + ([("hf-eager", "eager", False)] if a.eager else []) + \
            ([("hf-sdpa+mode", "sdpa", True)] if a.mode_overhead else [])
        for side, attn, with_mode in variants:
            model = build_hf(trainer.model_args, state, attn)
            steps[side] = hf_step_fn(model, hf_batches, n, with_mode)
        if a.bf16_autocast:
            steps["hf-sdpa-bf16"] = hf_step_fn(build_hf(trainer.model_args, state, "sdpa"), hf_batches, n, False, True)
    sides = list(steps)

    times = {s: [] for s in sides}
    cpu = {s: [] for s in sides}
    losses = {s: [] for s in sides}
    for i in range(a.warmup + a.iters):
        k = i % len(sides)
        for s in sides[k:] + sides[:k]:  # rotate the order: no side always runs right after another
            c0, t0 = time.process_time(), time.perf_counter()
            losses[s].append(steps[s]())
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if i >= a.warmup:
                times[s].append(dt)
                cpu[s].append(dc)
    if a.profile:
        for s in sides:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(a.profile_steps):
                steps[s]()
            prof.disable()
            out = io.StringIO()
            for key in ("tottime", "cumulative"):
                out.write(f"==== cProfile: {SIDE_NAMES[s]}, {a.profile_steps} steps, by {key} ====\n")
                pstats.Stats(prof, stream=out).sort_stats(key).print_stats(25)
            print(out.getvalue(), file=sys.stderr)

    tokens = a.batch_size * a.seq_length
    print(f"batch {a.batch_size} x seq {a.seq_length} = {tokens} tokens/step, threads {a.threads}, "
          f"{a.warmup} warm-up + {a.iters} timed steps per side, interleaved; "
          f"data loading (not timed): {load_ms:.1f} ms/batch")
    print(f"{'side':<27}{'median ms':>10}{'min ms':>9}{'max ms':>9}{'tokens/s':>10}{'cpu ms':>9}"
          f"{'loss@1':>9}{'loss@last':>10}")
    tps, cps = {}, {}
    last = a.warmup + a.iters - 1
    for s in sides:
        med, cmed = statistics.median(times[s]), statistics.median(cpu[s])
        tps[s], cps[s] = tokens / med, tokens / cmed
        print(f"{SIDE_NAMES[s]:<27}{med * 1e3:>10.1f}{min(times[s]) * 1e3:>9.1f}{max(times[s]) * 1e3:>9.1f}"
              f"{tps[s]:>10.0f}{cmed * 1e3:>9.1f}{losses[s][0]:>9.4f}{losses[s][last]:>10.4f}")
    l0 = losses["ours"][0]
    for s in sides[1:]:
        if abs(losses[s][0] - l0) > 1e-3 * max(1.0, abs(l0)):
            print(f"WARNING: first-step loss differs ({s} {losses[s][0]:.6f} vs ours {l0:.6f}): "
                  "the two sides do not compute the same thing")
    print(f"cpu-time ratio (ours / HF sdpa): {cps['ours'] / cps['hf-sdpa']:.3f}")
    # on a crowded machine (load above the core count, --threads > 1) most steps include scheduler
    # stalls and the medians drift; the fastest steps are what each side costs when it gets the cores
    print(f"best-step ratio (ours / HF sdpa, min ms): {min(times['hf-sdpa']) / min(times['ours']):.3f}")
    if a.eager:
        print(f"ours / HF eager: {tps['ours'] / tps['hf-eager']:.3f}")
    if a.mode_overhead:
        med = {s: statistics.median(times[s]) for s in ("hf-sdpa", "hf-sdpa+mode")}
        print(f"emulation TorchFunctionMode on the HF step: {(med['hf-sdpa+mode'] - med['hf-sdpa']) * 1e3:+.1f} ms "
              f"({med['hf-sdpa+mode'] / med['hf-sdpa']:.3f}x)")
    ratio = tps["ours"] / tps["hf-sdpa"]
    if a.bf16_autocast:
        print(f"ours --bf16-autocast / ours fp32: {tps['ours-bf16'] / tps['ours']:.3f}; "
              f"/ HF bf16 autocast: {tps['ours-bf16'] / tps['hf-sdpa-bf16']:.3f}; "
              f"cpu-time ratio / HF sdpa fp32: {cps['ours-bf16'] / cps['hf-sdpa']:.3f}")
        worst = max(abs(x - y) / abs(y) for x, y in zip(losses["ours-bf16"], losses["ours"]))
        print(f"loss of ours --bf16-autocast vs ours fp32, every step: at most {worst:.2e} relative")
        ratio = tps["ours-bf16"] / tps["hf-sdpa"]
        print("ratio below: ours --bf16-autocast / HF loop (sdpa) fp32 (the HF loop as users run it by default)")
    print(peak_rss_line())
    print(f"ratio: {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
