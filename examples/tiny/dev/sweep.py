#!/usr/bin/env python
"""Run loop variants x seeds unattended and tabulate them (development only, never reported seeds).

    python examples/tiny/dev/sweep.py --variants examples/tiny/dev/vit_sft.json examples/tiny/config.json \
        --seeds 777 778 --runs-dir runs/dev [--extra-args "--rounds 2"] [--table-only]

Each (variant, seed) runs `examples/tiny/run_sicog_loop.py --config V --seed S --output-dir
RUNS/<variant>_s<seed>` (the loop resumes an interrupted run at its first unfinished stage), then one
line is appended to `examples/tiny/dev/results.jsonl` (variant, config, seed, machine, seconds, each
model's metrics, the comparisons with their intervals, the self-generated data's quality) and the
table of every recorded line is printed. A run already recorded (same variant, seed and extra
arguments) is not run again. Choose settings here, on development seeds; report other seeds.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
RESULTS = HERE / "results.jsonl"


def record(variant: str, config: str, seed: int, extra: str, out: Path, machine: str) -> dict:
    s = json.loads((out / "summary.json").read_text())
    models = {k: {"accuracy": v["accuracy"], "caption_score": v["caption_score"]}
              for k, v in s.items() if isinstance(v, dict) and "accuracy" in v and "caption_score" in v}
    cmp = {k: {m: {x: round(r[x], 4) for x in ("difference", "ci_low", "ci_high")}
               for m, r in v.items() if r} for k, v in s.get("comparisons", {}).items()}
    return {"variant": variant, "config": config, "seed": seed, "extra_args": extra, "machine": machine,
            "seconds": s.get("seconds"), "models": models, "comparisons": cmp,
            "curated_samples": s.get("curated_samples"),
            "curated_answer_accuracy": s.get("curated_reasoning_pseudo_label_accuracy"),
            "quality": s.get("self_generated_quality"),
            "step_consistency": {k: (s[k].get("step_consistency") or {}).get("jaccard") for k in models}}


def load_results(path: Path = RESULTS) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(rows: list[dict]) -> str:
    head = f"{'variant':<22} {'seed':>5} {'stage1':>13} {'baseline':>13} {'sicog':>13} {'sicog-baseline acc':>24} " \
           f"{'sicog-baseline cap':>24}"
    lines = [head, "-" * len(head)]
    for r in rows:
        m, c = r["models"], r["comparisons"].get("sicog-baseline", {})

        def pair(k):
            return f"{m[k]['accuracy']:.3f}/{m[k]['caption_score']:.3f}" if k in m else "-"

        def diff(key):
            d = c.get(key)
            return f"{d['difference']:+.3f} [{d['ci_low']:+.3f},{d['ci_high']:+.3f}]" if d else "-"

        name = r["variant"] + (f" ({r['extra_args']})" if r.get("extra_args") else "")
        lines.append(f"{name:<22} {r['seed']:>5} {pair('stage1'):>13} {pair('baseline'):>13} {pair('sicog'):>13} "
                     f"{diff('accuracy'):>24} {diff('caption_score'):>24}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="*", default=[], help="loop config files (the variant is the file stem)")
    p.add_argument("--seeds", nargs="*", type=int, default=[777])
    p.add_argument("--runs-dir", default="runs/dev")
    p.add_argument("--extra-args", default="", help="more loop arguments, e.g. '--rounds 2'")
    p.add_argument("--machine", default=f"{platform.node()} ({platform.processor() or platform.machine()})",
                   help="recorded with each line (say how loaded it was)")
    p.add_argument("--table-only", action="store_true")
    a = p.parse_args(argv)
    done = {(r["variant"], r["seed"], r.get("extra_args", "")) for r in load_results()}
    for cfg in ([] if a.table_only else a.variants):
        variant = Path(cfg).stem
        for seed in a.seeds:
            if (variant, seed, a.extra_args) in done:
                print(f"[recorded] {variant} seed {seed}")
                continue
            out = Path(a.runs_dir) / f"{variant}_s{seed}"
            cmd = [sys.executable, str(REPO / "examples" / "tiny" / "run_sicog_loop.py"), "--config", cfg,
                   "--seed", str(seed), "--output-dir", str(out), *shlex.split(a.extra_args)]
            print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
            if subprocess.run(cmd, cwd=REPO).returncode != 0:
                print(f"sweep: {variant} seed {seed} failed; see {out}/logs", file=sys.stderr)
                continue
            rec = record(variant, cfg, seed, a.extra_args, out, a.machine)
            with open(RESULTS, "a") as f:
                f.write(json.dumps(rec) + "\n")
    print(table(load_results()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
