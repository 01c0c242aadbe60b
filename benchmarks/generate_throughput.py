"""Generation throughput: this project's KV-cache engine vs Hugging Face ``generate``.

Both sides get the same tiny model (preset ``tiny``: a Qwen2-style LM +
CLIP-style ViT, random weights; the HF side is ``LlavaForConditionalGeneration``
loaded from our checkpoint exported by ``megatron-to-hf``, so the weights are
identical), the same
prompts (one image each, different lengths, left-padded in one batch), the
same number of candidates N (HF: ``num_return_sequences=N``, KV cache on) and
exactly the same number of new tokens (``min_new_tokens == max_new_tokens``,
no EOS), sampling at temperature 0.7 / top-p 0.9. Each side runs once to warm up, then the two
sides alternate ``--repeats`` times (so a busy machine slows both alike).
tokens/s = prompts x N x new tokens / the median time of a side. Both wall and
CPU time are reported; the ratio uses CPU time: with one intra-op thread
(the default) CPU time is the time the process actually ran, while on the
crowded shared machine wall time mostly measures the scheduler (the wall
ratio is printed on the line before).

Prints one line per side and ends with exactly one line ``ratio: R``
(ours / Hugging Face, CPU tokens/s).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rss import peak_rss_line  # benchmarks/rss.py: the script's folder is on sys.path

import torch  # noqa: E402


def hf_copy(model, args, work_dir: Path):
    """transformers' LlavaForConditionalGeneration with `model`'s weights (checkpoint -> megatron-to-hf)."""
    from transformers import LlavaForConditionalGeneration

    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.model import sharding
    from megatron_sicog.training.checkpointing import write_from_canonical

    full = sharding.gather_full_state_dict(model, args.language.vocab_size)
    write_from_canonical(full, args, work_dir / "ckpt", tp=1, pp=1)
    export_hf(work_dir / "ckpt", work_dir / "hf", progress=False)
    return LlavaForConditionalGeneration.from_pretrained(str(work_dir / "hf")).eval()


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("--num-candidates", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for both sides (default 1: on a shared, busy 2-core machine two "
                        "threads make each small op wait on a descheduled thread and the ratio swings run to run)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from megatron_sicog import runtime
    from megatron_sicog.generation.engine import Engine, Prompt
    from megatron_sicog.generation.sampling import SamplingParams
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.model.presets import PRESETS

    runtime.init_distributed(1, 1, seed=a.seed)
    margs = PRESETS["tiny"]
    ours = build_model(margs).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf = hf_copy(ours, margs, Path(tmp))
    P = margs.vision.num_patches
    g = torch.Generator().manual_seed(a.seed)
    texts = [torch.randint(10, margs.language.vocab_size, (20 + 7 * i,), generator=g).tolist()
             for i in range(a.num_prompts)]
    images = torch.randn(a.num_prompts, 3, margs.vision.image_size, margs.vision.image_size, generator=g)
    prompts = [Prompt([t[0], margs.image_token_id] + t[1:], images[i:i + 1], key=str(i)) for i, t in enumerate(texts)]
    # HF: image tokens already expanded, left padding
    hf_rows = [[t[0]] + [margs.image_token_id] * P + t[1:] for t in texts]
    S = max(map(len, hf_rows))
    ids = torch.zeros(len(hf_rows), S, dtype=torch.long)
    att = torch.zeros(len(hf_rows), S, dtype=torch.long)
    for i, r in enumerate(hf_rows):
        ids[i, S - len(r):] = torch.tensor(r)
        att[i, S - len(r):] = 1
    N, T = a.num_candidates, a.max_new_tokens
    sp = SamplingParams(temperature=0.7, top_p=0.9, top_k=0)
    engine = Engine(ours)

    def run_ours():
        out = engine.generate(prompts, sp, num_candidates=N, max_new_tokens=T, min_new_tokens=T, seed=a.seed)
        assert out.num_generated == len(prompts) * N * T, out.num_generated
        return out.num_generated

    @torch.inference_mode()
    def run_hf():
        torch.manual_seed(a.seed)
        out = hf.generate(input_ids=ids, attention_mask=att, pixel_values=images, do_sample=True,
                          temperature=0.7, top_p=0.9, top_k=0, num_return_sequences=N, max_new_tokens=T,
                          min_new_tokens=T, pad_token_id=0, eos_token_id=None, use_cache=True)
        n = (out.shape[1] - S) * out.shape[0]
        assert n == len(prompts) * N * T, n
        return n

    sides = (("megatron-sicog engine", run_ours), ("hf generate", run_hf))
    wall = {name: [] for name, _ in sides}
    cpu = {name: [] for name, _ in sides}
    for _, fn in sides:
        fn()  # warm-up
    for _ in range(a.repeats):
        for name, fn in sides:
            t0, c0 = time.perf_counter(), time.process_time()
            n = fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    results, results_wall = {}, {}
    for name, _ in sides:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        results[name], results_wall[name] = n / c, n / w
        print(f"{name}: {n} tokens, median {w:.3f} s wall ({n / w:.0f} tokens/s), {c:.3f} s CPU "
              f"({n / c:.0f} tokens/CPU-s) over {a.repeats} runs")
    ratio = results["megatron-sicog engine"] / results["hf generate"]
    wall_ratio = results_wall["megatron-sicog engine"] / results_wall["hf generate"]
    print(f"prompts={a.num_prompts} N={N} new_tokens={T} threads={a.threads}; wall-time ratio {wall_ratio:.2f}")
    print(peak_rss_line())
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
