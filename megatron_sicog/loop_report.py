"""The tiny demo's analysis and report: comparisons, curation counts, self-generated quality, tables, plots.

Everything here reads files a finished run left (tools/evaluate.py metrics, candidate and curated
records, the synthetic world's hidden answers and scene graphs); nothing here runs a stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from megatron_sicog.io import iter_records


def comparisons(metrics: Callable[[str], dict], pairs: list[tuple[str, str]], seed: int) -> dict:
    """Paired bootstrap (items resampled) of B - A for answer accuracy and caption F1; ``metrics(name)`` is
    tools/evaluate.py's output for one model."""
    from megatron_sicog.evaluation.significance import paired_bootstrap

    out = {}
    for a, b in pairs:
        ma, mb = metrics(a), metrics(b)
        out[f"{b}-{a}"] = {"accuracy": paired_bootstrap(ma, mb, "reasoning", seed=seed),
                           "caption_score": paired_bootstrap(ma, mb, "caption", seed=seed)}
    return out


def self_generated_quality(gen: Path, data: Path, curated: Path, tag: str = "") -> dict:
    """(Analysis only, after training) the candidates and the curated set against the hidden truth."""
    from megatron_sicog.evaluation.consistency import answer_vote_quality, caption_candidate_quality

    return {"caption": caption_candidate_quality(gen / f"cod{tag}.jsonl", curated, data / "scene_graphs.jsonl"),
            "answers": answer_vote_quality(gen / f"cot{tag}.jsonl", data / "unlabelled_answers.jsonl")}


def step_consistency(gen: Path, name: str) -> dict:
    """Step 1 vs step 5 of the model's greedy held-out CoD descriptions."""
    from megatron_sicog.evaluation.consistency import mean_step_consistency

    rows = iter_records(gen / f"eval_{name}_cod.jsonl")
    return mean_step_consistency((r.get("candidates") or [""])[0] for _, r in rows if isinstance(r, dict))


def decontamination(report_dir: Path) -> dict | None:
    """What the curation's decontamination (``--exclude``, the held-out split) dropped, from its report's
    ``summary.json``: excluded images, drops per reason and in all; None without a report or exclusion."""
    from megatron_sicog.io import loads

    path = report_dir / "summary.json"
    d = loads(path.read_bytes()).get("decontamination") if path.is_file() else None
    if not d:
        return None
    return {"excluded_images": d.get("excluded_images"), "dropped": d.get("dropped"),
            "dropped_total": d.get("dropped_total")}


def curation_counts(gen: Path, data: Path, curated: Path, tag: str = "") -> dict:
    """Curated / candidate counts (the candidates of the same generation, ``gen/cod{tag}.jsonl``),
    the decontamination counts of its report (``curation{tag}/``), and (analysis only) pseudo-label
    accuracy vs the hidden answers."""
    from megatron_sicog.curation.answers import normalize_answer, same_answer

    n_curated = n_reasoning = n_correct = 0
    candidates = 0
    for name in ("cod", "cot"):
        for _, rec in iter_records(gen / f"{name}{tag}.jsonl"):
            if isinstance(rec, dict):
                candidates += len(rec.get("candidates") or [])
    answers = {r["id"]: r.get("answer") for _, r in iter_records(data / "unlabelled_answers.jsonl")
               if isinstance(r, dict)}
    for _, rec in iter_records(curated):
        if not isinstance(rec, dict):
            continue
        n_curated += 1
        if rec.get("task") == "reasoning" or "answer" in rec:
            n_reasoning += 1
            truth = answers.get(rec["id"])
            key = rec.get("answer_key") or normalize_answer(str(rec.get("answer") or ""))
            n_correct += truth is not None and same_answer(normalize_answer(str(truth)), key)
    return {"curated_samples": n_curated, "candidates": candidates,
            "decontamination": decontamination(gen.parent / f"curation{tag}"),
            "curated_reasoning_samples": n_reasoning,
            "curated_reasoning_pseudo_label_accuracy": (n_correct / n_reasoning) if n_reasoning else None}


def _model_rows(results: dict) -> list[str]:
    """Evaluated models in table order: base, stage 1 (+DPO), baseline, sicog, then later rounds."""
    rows = [k for k in ("base", "stage1", "stage1_dpo", "baseline", "sicog") if k in results]
    for r in results.get("rounds") or []:
        rows += [k for k in (f"baseline_r{r['round']}", f"sicog_r{r['round']}") if k in results]
    return rows


def format_table(results: dict) -> str:
    rows = _model_rows(results)
    lines = [f"{'model':<12} {'accuracy':>9} {'caption':>9}", "-" * 32]
    for k in rows:
        lines.append(f"{k:<12} {results[k]['accuracy']:>9.3f} {results[k]['caption_score']:>9.3f}")
    return "\n".join(lines)


def benchmark_rows(results: dict) -> list[str]:
    """The rows of the benchmark-format table: every model of the main table (later rounds included), then
    any other model with benchmark results (the scaling curve's ``sicog_25pct``, ...), in their order."""
    bench = results.get("benchmarks") or {}
    rows = _model_rows(results)
    return rows + [k for k in bench if k not in rows]


def format_benchmarks(results: dict) -> str:
    """The benchmark-format exports: MMBench-style CircularEval (and per-row) accuracy, POPE accuracy / F1; a
    model of the main table without benchmark results gets a row that says so."""
    bench = results.get("benchmarks") or {}
    if not bench:
        return ""
    lines = [f"{'model':<12} {'MMB circ.':>9} {'MMB rows':>9} {'unmatched':>9} {'POPE acc':>9} {'POPE F1':>9} "
             f"{'yes ratio':>9}", "-" * 72]
    for k in benchmark_rows(results):
        if k not in bench:
            lines.append(f"{k:<12} {'(no benchmark results)':>29}")
            continue
        m, p = bench[k]["MMBench_tiny"], bench[k]["POPE_tiny"]
        lines.append(f"{k:<12} {m['overall']:>9.3f} {m['per_row']:>9.3f} {m['unmatched_rate']:>9.3f} "
                     f"{p['accuracy']:>9.3f} {p['f1']:>9.3f} {p['yes_ratio']:>9.3f}")
    return "\n".join(lines)


def format_comparisons(results: dict) -> str:
    lines = []
    for name, cmp in results.get("comparisons", {}).items():
        parts = []
        for key in ("accuracy", "caption_score"):
            r = cmp.get(key)
            if r:
                parts.append(f"{key} {r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]")
        lines.append(f"{name:<18} " + "; ".join(parts))
    return "paired bootstrap, 95% interval over eval items:\n" + "\n".join(lines) if lines else ""


def save_plots(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    rows = _model_rows(results)
    fig, axes = plt.subplots(1, 2, figsize=(9 + 1.2 * max(0, len(rows) - 5), 3.6))
    for ax, key, title in zip(axes, ("accuracy", "caption_score"), ("answer accuracy", "caption fidelity (F1)")):
        vals = [results[k][key] for k in rows]
        colours = {"base": "#999", "stage1": "#6a9fd4", "stage1_dpo": "#8cc", "baseline": "#c9a", "sicog": "#d4663a"}
        bars = ax.bar(rows, vals, color=[colours[k.split("_r")[0]] for k in rows])
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
        ax.set_title(title)
        ax.set_ylim(0, max(1.0, max(vals) * 1.15))
    fig.suptitle(f"SICOG tiny loop: {results.get('curated_samples')} curated samples from "
                 f"{results.get('candidates')} candidates")
    fig.tight_layout()
    p = out_dir / "metrics_per_stage.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    if results.get("scaling"):
        pts = results["scaling"]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        xs = [pt["curated_samples"] for pt in pts]
        ax.plot(xs, [pt["accuracy"] for pt in pts], "o-", label="answer accuracy")
        ax.plot(xs, [pt["caption_score"] for pt in pts], "s-", label="caption fidelity")
        ax.set_xlabel("self-generated pre-training samples")
        ax.set_ylabel("held-out metric")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        p = out_dir / "scaling.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def print_report(results: dict, out: Path, commands: Path) -> None:
    """The end of a demo run: plots written, the tables and the analysis printed."""
    plots = save_plots(results, out)
    print("\n" + format_table(results))
    if results.get("benchmarks"):
        print("\nbenchmark-format exports of the held-out split (tools/evaluate_benchmarks.py):\n"
              + format_benchmarks(results))
    print(format_comparisons(results))
    print(f"\n{results['curated_samples']} curated samples from {results['candidates']} candidates; "
          f"curated-answer accuracy vs hidden answers (analysis only): "
          f"{results['curated_reasoning_pseudo_label_accuracy']}")
    d = results.get("decontamination")
    if d:
        why = ", ".join(f"{k} {v}" for k, v in (d.get("dropped") or {}).items())
        print(f"decontamination (unlabelled items vs the {d['excluded_images']} held-out images): "
              f"{d['dropped_total']} dropped ({why}); label-quality audit: {out / 'curation_audit' / 'audit.png'}")
    q = results.get("self_generated_quality") or {}
    cap, ans = q.get("caption") or {}, q.get("answers") or {}

    def _f(v):
        return "n/a" if v is None else f"{v:.3f}"

    print(f"self-generated captions (fact F1 vs hidden scene graphs): one sample {_f(cap.get('one_sample_f1'))}, "
          f"curated {_f(cap.get('curated_f1'))}, best of N {_f(cap.get('best_of_n_f1'))}; answers: one sample "
          f"{_f(ans.get('one_sample_accuracy'))}, majority vote {_f(ans.get('vote_accuracy'))}")
    cons = (results.get("stage1") or {}).get("step_consistency") or {}
    print(f"stage-1 CoD step 1 vs step 5 (held-out): shape Jaccard {_f(cons.get('jaccard'))}, "
          f"count agrees {_f(cons.get('count_agrees'))}")
    print(f"summary: {out / 'summary.json'}; plots: {', '.join(str(p) for p in plots)}; "
          f"commands: {commands}; {results['seconds']:.0f}s")
