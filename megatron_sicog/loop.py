"""The tiny demo's SICOG loop: its stage graph, run by the local runner, and the results read back.

``Loop.graph()`` is the whole demo as data (megatron_sicog/recipe: every stage one command-line tool, its
inputs and outputs); ``LocalRunner`` runs it (each command printed and collected in
``<output>/commands.sh``, a marker per finished stage, so an interrupted loop resumes at the first
unfinished stage); ``Loop.results()`` reads the scores back.

    data        tools/make_synthetic_data.py   align / seed / unlabelled / eval splits
    tokenizer   tools/train_tokenizer.py       SentencePiece on align + seed text only
    preprocess  tools/preprocess_data.py       align (plain), seed (qwen2) -> mmap .bin/.idx
    base        pretrain_sicog.py --stage pretrain   alignment pre-training on align captions
    stage1      pretrain_sicog.py --stage sft        post-training enhancement on the seed (CoD + CoT)
    [stage1_dpo pretrain_sicog.py --stage dpo        the DPO variant, with --dpo: the pairs through
                preprocess_data.py --preference first]
    generate    tools/generate_candidates.py   N CoD / CoT candidates on unlabelled images / questions
    curate      tools/curate.py                self-consistency voting -> pseudo-labels + report
    preprocess  tools/preprocess_data.py       curated -> mmap
    sicog       pretrain on align + curated, then a short SFT on the seed   (the SICOG model)
    baseline    pretrain on align only (same iterations), the same SFT     (the paper's comparison)

Where stage 3 starts is a setting (``repretrain_from``): "base" is the paper's
recipe (re-pretrain the base model, then the full seed fine-tuning); "stage1"
starts from the stage-1 weights and pays the long seed fine-tuning once. Either
way sicog and baseline differ only in the self-generated data.
    eval        greedy CoD captions + CoT answers on the held-out split, tools/evaluate.py
    [round r>=2 with --rounds N: generate + curate with round r-1's SICOG model, sicog_pretrain_r<r> from it
                on align + curated_r<r>, sicog_r<r>; baseline_r<r> continues the baseline chain on align]

What never happens: eval data in any training command, and the unlabelled
split's answers (``unlabelled_answers.jsonl``) or scene graphs in any command before the last
evaluation; after it, the ``curate_audit`` stage re-runs round 1's curation with ``--audit`` on
them (its own report in ``curation_audit/``: the precision of the kept labels at every threshold
beside the kept fraction, ``audit.png``), and the summary reports how accurate the curated
pseudo-labels were.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from megatron_sicog import loop_report as report
from megatron_sicog.io import atomic_write_json, iter_records, write_jsonl_atomic
from megatron_sicog.recipe import stages
from megatron_sicog.recipe.graph import Member, Stage, Step
from megatron_sicog.recipe.local import LocalRunner, StageFailed  # noqa: F401  (StageFailed: the loop's error)
from megatron_sicog.recipe.settings import RoundSettings, with_defaults
from megatron_sicog.recipe.stages import TrainPhase, blend

REPO = Path(__file__).resolve().parent.parent


@dataclass
class LoopConfig(with_defaults(
        RoundSettings,  # the round's settings (recipe/settings.py), at the demo's scale:
        output_dir="runs/tiny", seq_length=256, pack_sequences=True, repretrain_from="stage1",
        repretrain_curated_mix=0.5,  # half curated data, half alignment captions
        repretrain=TrainPhase(iters=150, lr=3e-4, warmup=15),
        max_new_tokens_cod=170, max_new_tokens_cot=100, generation_micro_batch=16,
        # the synthetic world's chain-consistency score and perception check (curation/scene_facts.py);
        # MiniLM MBR kept captions no better than one sample here. Real data: "embedding" (the reference's)
        scorer="scene-facts", caption_threshold=0.9)):
    nproc: int = 1  # training processes (data parallel) per stage
    # data
    num_align: int = 2000
    num_seed: int = 300
    num_unlabelled: int = 1000
    num_eval: int = 300
    unlabelled_questions_per_image: int = 1
    image_size: int = 64
    max_objects: int = 3
    # object colours of the annotated seed split ("" = all six); the unlabelled pool and the held-out
    # set always span all of them, so the seed covers less than what SICOG labels itself and is scored on
    seed_colours: str = "red,green,blue,yellow"
    tokenizer_vocab: int = 1000
    # the alignment captions' format: "plain" (LLaVA pre-training: <image> caption) or the chat template
    # (the default: "Describe the image in detail." turns, so the captions blended into the seed SFT
    # keep the base's perception, every colour included, in the chat context the CoD is asked in)
    align_template: str = "qwen2"
    # the pretrained MLLM SICOG starts from: a directory made by `make base-model` (checkpoint, tokenizer.model,
    # scene_keys.txt.gz; megatron_sicog/demo_base.py), relative to the repository; "" trains a base in the
    # loop from scratch with the `base` phase below (run_sicog_loop.py --train-base)
    base_model: str = "examples/tiny/base"
    # training
    # the ViT learns from scratch in (re-)pre-training and is frozen in fine-tuning (LLaVA)
    base: TrainPhase = field(default_factory=lambda: TrainPhase(iters=800, lr=5e-4, warmup=20))
    sft: TrainPhase = field(default_factory=lambda: TrainPhase(iters=300, lr=5e-4, warmup=30,
                                                               freeze_vision=True))  # stage 1
    final_sft: TrainPhase = field(default_factory=lambda: TrainPhase(iters=150, lr=3e-4, warmup=15,
                                                                     freeze_vision=True))
    dpo: TrainPhase = field(default_factory=lambda: TrainPhase(iters=30, lr=5e-5, global_batch_size=8,
                                                               micro_batch_size=8, warmup=3))
    # share of alignment captions blended into every seed fine-tuning (stage 1 and the final SFT of sicog
    # and baseline alike), as LLaVA's SFT mixes tasks: keeps the base's perception in stage 1 (dev seed 777:
    # CoD step-1 fact F1 0.86 -> 0.94, the colours the seed lacks 0.00 / 0.47 -> 0.86 / 0.85)
    sft_align_mix: float = 0.25
    # eval
    eval_micro_batch: int = 32
    # benchmark-format exports of the first N held-out images (MMBench-style TSV, POPE-style), scored with
    # tools/evaluate_benchmarks.py next to the demo's own metrics; 0 = none
    benchmark_images: int = 40
    scaling_fractions: tuple = (0.25, 0.5, 1.0)

    @classmethod
    def from_json(cls, path: Optional[str], **overrides) -> "LoopConfig":
        raw = json.loads(Path(path).read_text()) if path else {}
        raw.update({k: v for k, v in overrides.items() if v is not None})
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                continue
            v = raw.pop(f.name)
            kw[f.name] = TrainPhase(**v) if isinstance(v, dict) else v
        if raw:
            raise ValueError(f"{path}: unknown settings {sorted(raw)}")
        if "scaling_fractions" in kw:
            kw["scaling_fractions"] = tuple(kw["scaling_fractions"])
        try:
            return cls(**kw)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def __post_init__(self) -> None:
        self.check_values()


class Loop:
    def __init__(self, cfg: LoopConfig, dpo: bool = False, scaling: bool = False, fresh: bool = False,
                 rounds: int = 1):
        if int(rounds) != rounds or rounds < 1:
            raise ValueError(f"rounds must be a whole number >= 1, not {rounds!r}")
        self.cfg, self.dpo, self.scaling, self.rounds = cfg, dpo, scaling, int(rounds)
        self.out = Path(cfg.output_dir).resolve()
        if fresh and self.out.exists():
            import shutil

            shutil.rmtree(self.out)
        for sub in ("logs", ".done", "ckpt", "idx", "gen", "eval"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.data = self.out / "data"
        self.base_model = (REPO / cfg.base_model).resolve() if cfg.base_model else None
        if self.base_model is not None:
            missing = [f for f in ("tokenizer.model", "scene_keys.txt.gz", "latest_checkpointed_iteration.txt")
                       if not (self.base_model / f).is_file()]
            if missing:
                raise FileNotFoundError(f"base_model {self.base_model}: {', '.join(missing)} missing (make base-model "
                                        "writes it; --train-base trains a base in the loop instead)")
        self.tok = (self.base_model / "tokenizer.model") if self.base_model else self.out / "tokenizer" / "sp.model"
        self.runner = LocalRunner(self.out)
        self.commands = self.runner.commands
        self.tools = cfg.tools(self.out, str(self.data), str(self.tok), nproc=cfg.nproc)
        # decontamination: no held-out image may enter the curated data (images only: the tiny
        # world's questions are templates shared by every split); the report counts the drops
        self.curation = cfg.curation(exclude=[self.data / "eval.jsonl"], exclude_match=("image",))

    @property
    def timings(self) -> dict[str, float]:
        return self.runner.timings

    # -- the graph ----------------------------------------------------------------------
    def graph(self) -> list[Member]:
        """Every stage of the demo, in the order the local runner runs them."""
        return _Recipe(self).build()

    def execute(self) -> dict:
        t0 = time.perf_counter()
        self.runner.run_all(self.graph())
        return self.results(t0)

    # -- reading the results back -----------------------------------------------------------
    def models(self) -> list[str]:
        """The evaluated models of round 1 (the table's rows before later rounds)."""
        return ["base", "stage1", "sicog", "baseline"] + (["stage1_dpo"] if self.dpo else [])

    def metrics(self, name: str) -> dict:
        """tools/evaluate.py's output for one evaluated model."""
        return json.loads((self.out / "eval" / f"{name}.metrics.json").read_text())

    def scores(self, name: str) -> dict:
        m = self.metrics(name)
        return {"accuracy": m["reasoning"]["accuracy"], "caption_score": m["caption"]["f1"]}

    def benchmark_results(self, name: str) -> dict:
        return json.loads((self.out / "eval" / f"benchmarks_{name}" / "results.json").read_text())

    def results(self, t0: float) -> dict:
        c = self.cfg
        results: dict = {name: self.scores(name) for name in self.models()}
        results["comparisons"] = self._comparisons([("stage1", "sicog"), ("baseline", "sicog"),
                                                   ("stage1", "baseline")])
        gen_tag = "_dpo" if self.dpo else ""
        curated = self.out / "gen" / f"curated{gen_tag}.jsonl"
        if self.scaling:
            results["scaling"] = [{"fraction": 0.0, "curated_samples": 0, **results["baseline"]}] + [
                {"fraction": frac, "curated_samples": _count_records(
                    self.out / "gen" / f"curated{tag}.jsonl" if tag else curated), **self.scores(f"sicog{tag}")}
                for frac, tag in _scaling_tags(c.scaling_fractions)]
        results.update(report.curation_counts(self.out / "gen", self.data, curated, gen_tag))
        results["self_generated_quality"] = report.self_generated_quality(self.out / "gen", self.data, curated, gen_tag)
        names = list(self.models())
        if self.rounds > 1:
            rounds = []
            for r in range(2, self.rounds + 1):
                tag, prev = f"_r{r}", ("sicog" if r == 2 else f"sicog_r{r - 1}")
                for name in (f"sicog{tag}", f"baseline{tag}"):
                    results[name] = self.scores(name)
                cmp = self._comparisons([(f"baseline{tag}", f"sicog{tag}"), (prev, f"sicog{tag}")])
                results["comparisons"].update(cmp)
                cur = self.out / "gen" / f"curated{tag}.jsonl"
                rounds.append({"round": r, "generator": prev, **report.curation_counts(self.out / "gen", self.data, cur, tag),
                               "self_generated_quality": report.self_generated_quality(self.out / "gen", self.data, cur, tag),
                               "sicog": results[f"sicog{tag}"], "baseline": results[f"baseline{tag}"],
                               "comparisons": cmp})
                names += [f"sicog{tag}", f"baseline{tag}"]
            results["rounds"] = rounds
        for name in names:
            results[name]["step_consistency"] = report.step_consistency(self.out / "gen", name)
        if c.benchmark_images:  # every evaluated model: round 1, later rounds, then the scaling points
            scaled = [f"sicog{tag}" for _, tag in _scaling_tags(c.scaling_fractions) if tag] if self.scaling else []
            results["benchmarks"] = {name: self.benchmark_results(name) for name in names + scaled}
        results["seconds"] = round(time.perf_counter() - t0, 1)
        results["stage_seconds"] = {k: round(v, 1) for k, v in self.timings.items()}
        results["config"] = dataclasses.asdict(c)
        return results

    def _comparisons(self, pairs: list[tuple[str, str]]) -> dict:
        return report.comparisons(self.metrics, pairs, seed=self.cfg.seed)


def _scaling_tags(fractions) -> list[tuple[float, str]]:
    """(fraction, tag) of each scaling point: ``_25pct`` for 25 %, "" (the sicog model itself) for 100 %."""
    return [(f, "" if f >= 1.0 else f"_{int(f * 100)}pct") for f in fractions]


def _count_records(path: Path) -> int:
    return sum(1 for _ in iter_records(path))


class _Recipe:
    """Builds the demo's graph: the members in run order, each stage named once."""

    def __init__(self, loop: Loop):
        self.loop, self.cfg, self.t, self.g = loop, loop.cfg, loop.tools, []
        self.names: set[str] = set()

    def add(self, m: Member) -> Member:
        if m.name not in self.names:  # the scaling curve's 100 % point is the sicog model itself
            self.names.add(m.name)
            self.g.append(m)
        return m

    def ckpt(self, s: Stage) -> str:
        return s.outputs[0]

    def build(self) -> list[Member]:
        c, t, loop, data = self.cfg, self.t, self.loop, self.loop.data
        self.data_and_tokenizer()
        align = self.add(stages.preprocess(t, "align", [str(data / "align.jsonl")], c.align_template)).outputs[0]
        seed = self.add(stages.preprocess(t, "seed", [str(data / "seed.jsonl")], c.chat_template)).outputs[0]
        if loop.base_model is not None:  # the shipped pretrained base (make base-model)
            base = str(loop.base_model)
        else:
            base = self.ckpt(self.add(stages.train(t, "base", "pretrain", c.base, [align], None)))
        seed_blend = blend([(1.0 - c.sft_align_mix, seed), (c.sft_align_mix, align)])
        stage1 = self.ckpt(self.add(stages.train(t, "stage1", "sft", c.sft, seed_blend, base)))
        pairs = self.stage2(stage1, "")
        generator, gen_tag = stage1, ""
        if loop.dpo:  # the DPO variant: preference pairs from the stage-1 model's own votes, then sample again
            pairs_idx = self.add(stages.preprocess(t, "pairs", [pairs], c.chat_template, "--preference")).outputs[0]
            generator = self.ckpt(self.add(stages.train(t, "stage1_dpo", "dpo", c.dpo, [pairs_idx], stage1)))
            gen_tag = "_dpo"
            self.stage2(generator, gen_tag)
        curated = str(loop.out / "gen" / f"curated{gen_tag}.jsonl")
        # the SICOG model: re-pretraining on self-generated data (+ the alignment data), then fine-tuning
        start = base if c.repretrain_from == "base" else stage1
        sicog = self.sicog("", curated, align, seed_blend, start)
        # the paper's comparison: the same recipe and iterations without the self-generated data
        baseline = self.baseline("", align, seed_blend, start)
        models = {"base": base, "stage1": stage1, "sicog": sicog, "baseline": baseline}
        if loop.dpo:
            models["stage1_dpo"] = generator
        self.eval_inputs()
        for name, ckpt in models.items():
            self.evaluation(name, ckpt)
        if loop.scaling:  # re-pretraining on growing shares of the curated data (from the same start as sicog)
            for frac, tag in _scaling_tags(c.scaling_fractions):
                subset = curated
                if tag:
                    subset = str(loop.out / "gen" / f"curated{tag}.jsonl")
                    self.add(Step(f"subset{tag}", "megatron_sicog.loop:write_subset",
                                  {"curated": curated, "fraction": frac, "output": subset},
                                  inputs=(curated,), outputs=(subset,)))
                self.evaluation(f"sicog{tag}", self.sicog(tag, subset, align, seed_blend, start))
        prev_sicog, prev_baseline = sicog, baseline
        for r in range(2, loop.rounds + 1):  # the previous round's SICOG model samples, curates, re-pretrains
            tag = f"_r{r}"
            self.stage2(prev_sicog, tag)
            s_model = self.sicog(tag, str(loop.out / "gen" / f"curated{tag}.jsonl"), align, seed_blend, prev_sicog)
            b_model = self.baseline(tag, align, seed_blend, prev_baseline)  # continues on align only
            self.evaluation(f"sicog{tag}", s_model)
            self.evaluation(f"baseline{tag}", b_model)
            prev_sicog, prev_baseline = s_model, b_model
        self.audit(gen_tag)
        return self.g

    def audit(self, gen_tag: str) -> None:
        """After every evaluation: round 1's curation again, judged against the hidden answers and scene
        graphs (tools/curate.py --audit), into gen/curated_audit.jsonl and curation_audit/ (analysis only;
        the same settings give the same kept set as the curated data trained on)."""
        data, gen = self.loop.data, self.loop.out / "gen"
        cur = dataclasses.replace(self.loop.curation, audit=(str(data / "unlabelled_answers.jsonl"),
                                                             str(data / "scene_graphs.jsonl")))
        self.add(stages.curate(self.t, "_audit", [str(gen / f"cod{gen_tag}.jsonl"), str(gen / f"cot{gen_tag}.jsonl")],
                               cur))

    def data_and_tokenizer(self) -> None:
        c, data, tok, base = self.cfg, self.loop.data, self.loop.tok, self.loop.base_model
        # with the shipped base: no scene it was trained on may appear in this world, and its tokenizer is used
        exclude = ("--exclude-scenes", base / "scene_keys.txt.gz") if base is not None else ()
        self.add(Stage("data", "tools/make_synthetic_data.py", tuple(map(str, (
            "--output-dir", data, "--seed", c.seed, "--image-size", c.image_size, "--max-objects", c.max_objects,
            "--num-align", c.num_align, "--num-seed", c.num_seed, "--num-unlabelled", c.num_unlabelled,
            "--num-eval", c.num_eval, "--unlabelled-questions-per-image", c.unlabelled_questions_per_image,
            *(("--seed-colours", c.seed_colours) if c.seed_colours else ()), *exclude))), outputs=(str(data),)))
        if base is None:
            self.add(Stage("tokenizer", "tools/train_tokenizer.py", (
                "--input", str(data / "align.jsonl"), str(data / "seed.jsonl"), "--output-prefix",
                str(tok.with_suffix("")), "--vocab-size", str(c.tokenizer_vocab)),
                inputs=(str(data / "align.jsonl"), str(data / "seed.jsonl")), outputs=(str(tok),)))
        if c.benchmark_images:
            self.add(Stage("benchmark_exports", "tools/make_benchmark_exports.py", (
                "--eval", str(data / "eval.jsonl"), "--image-root", str(data), "--output-dir",
                str(data / "benchmarks"), "--num-images", str(c.benchmark_images), "--seed", str(c.seed)),
                inputs=(str(data / "eval.jsonl"),), outputs=(str(data / "benchmarks"),)))

    def stage2(self, model: str, tag: str) -> str:
        """Candidates on the unlabelled split + self-consistency curation; returns the pairs file."""
        c, t, data = self.cfg, self.t, self.loop.data
        caps = self.add(stages.generate(t, f"cod{tag}", model, str(data / "unlabelled_images.jsonl"), "cod",
                                        c.num_candidates, c.temperature, c.max_new_tokens_cod,
                                        c.generation_micro_batch)).outputs[0]
        qas = self.add(stages.generate(t, f"cot{tag}", model, str(data / "unlabelled_questions.jsonl"), "cot",
                                       c.num_candidates, c.temperature, c.max_new_tokens_cot,
                                       c.generation_micro_batch)).outputs[0]
        return self.add(stages.curate(t, tag, [caps, qas], self.loop.curation)).outputs[1]

    def sicog(self, tag: str, curated: str, align: str, seed_blend: list[str], start: str) -> str:
        c, t = self.cfg, self.t
        cur_idx = self.add(stages.preprocess(t, f"curated{tag}", [curated], c.chat_template)).outputs[0]
        data = blend([(1.0 - c.repretrain_curated_mix, align), (c.repretrain_curated_mix, cur_idx)])
        pt = self.ckpt(self.add(stages.train(t, f"sicog_pretrain{tag}", "pretrain", c.repretrain, data, start)))
        return self.ckpt(self.add(stages.train(t, f"sicog{tag}", "sft", c.final_sft, seed_blend, pt)))

    def baseline(self, tag: str, align: str, seed_blend: list[str], start: str) -> str:
        c, t = self.cfg, self.t
        pt = self.ckpt(self.add(stages.train(t, f"baseline_pretrain{tag}", "pretrain", c.repretrain, [align], start)))
        return self.ckpt(self.add(stages.train(t, f"baseline{tag}", "sft", c.final_sft, seed_blend, pt)))

    def eval_inputs(self) -> None:
        out, data = self.loop.out / "eval", self.loop.data
        self.add(Step("eval_inputs", "megatron_sicog.loop:write_eval_inputs",
                      {"eval_file": str(data / "eval.jsonl"), "captions": str(out / "inputs_caption.jsonl"),
                       "questions": str(out / "inputs_reasoning.jsonl")},
                      inputs=(str(data / "eval.jsonl"),),
                      outputs=(str(out / "inputs_caption.jsonl"), str(out / "inputs_reasoning.jsonl"))))

    def evaluation(self, name: str, ckpt: str) -> None:
        """Greedy CoD captions and CoT answers on the held-out split, scored; the benchmark exports."""
        c, t, out, data = self.cfg, self.t, self.loop.out, self.loop.data
        caps = self.add(stages.generate(t, f"eval_{name}_cod", ckpt, str(out / "eval" / "inputs_caption.jsonl"),
                                        "cod", 1, 0.0, c.max_new_tokens_cod, c.eval_micro_batch)).outputs[0]
        qas = self.add(stages.generate(t, f"eval_{name}_cot", ckpt, str(out / "eval" / "inputs_reasoning.jsonl"),
                                       "cot", 1, 0.0, c.max_new_tokens_cot, c.eval_micro_batch)).outputs[0]
        preds, metrics = str(out / "eval" / f"{name}.predictions.jsonl"), str(out / "eval" / f"{name}.metrics.json")
        self.add(Step(f"predictions_{name}", "megatron_sicog.loop:write_predictions",
                      {"captions": caps, "answers": qas, "output": preds}, inputs=(caps, qas), outputs=(preds,)))
        self.add(Stage(f"score_{name}", "tools/evaluate.py", (
            "--predictions", preds, "--ground-truth", str(data / "eval.jsonl"), "--output", metrics),
            inputs=(preds, str(data / "eval.jsonl")), outputs=(metrics,)))
        if c.benchmark_images:
            self.benchmark(name, ckpt)

    def benchmark(self, name: str, ckpt: str) -> None:
        """The standard-benchmark tool on the exports: the structured-CoT prompt over the bare question (the
        demo's models learnt that prompt and never saw lettered options; replies match options by text)."""
        c, t = self.cfg, self.t
        out, bench = self.loop.out / "eval" / f"benchmarks_{name}", self.loop.data / "benchmarks"
        self.add(Stage(f"benchmarks_{name}", "tools/evaluate_benchmarks.py", (
            "--load", str(ckpt), "--benchmark", f"MMBench_tiny={bench / 'MMBench_tiny.tsv'}", "--benchmark",
            f"POPE_tiny={bench / 'POPE_tiny.jsonl'}", "--image-root", t.image_root, "--mode", "cot-open",
            "--max-new-tokens", str(c.max_new_tokens_cot), "--micro-batch-size", str(c.eval_micro_batch),
            *t.tokenizer(), "--chat-template", c.chat_template, "--output-dir", str(out), "--overwrite",
            "--no-progress"), inputs=(str(ckpt), str(bench)), outputs=(str(out),)))


# -- in-process steps of the graph (called by name, so that any runner can run them) ------------------
def write_eval_inputs(eval_file: str, captions: str, questions: str) -> None:
    """The held-out split as generation inputs: one record per image, one per question (written once)."""
    if Path(captions).exists() and Path(questions).exists():
        return
    c_rows, q_rows = [], []
    for _, rec in iter_records(eval_file):
        c_rows.append({"id": rec["id"], "image": rec["image"]})
        for q in rec.get("questions", []):
            q_rows.append({"id": q["id"], "image": rec["image"], "question": q["question"]})
    write_jsonl_atomic(Path(captions), c_rows)
    write_jsonl_atomic(Path(questions), q_rows)


def write_predictions(captions: str, answers: str, output: str) -> None:
    """tools/evaluate.py's input: the first candidate of each greedy caption and answer."""
    rows = []
    for path, task in ((captions, "caption"), (answers, "reasoning")):
        for _, rec in iter_records(path):
            cands = rec.get("candidates") or [""]
            rows.append({"id": rec["id"], "task": task, "prediction": cands[0]})
    write_jsonl_atomic(Path(output), rows)


def write_subset(curated: str, fraction: float, output: str) -> None:
    """The first ``fraction`` of the curated records (at least one): a point of the scaling curve."""
    rows = [r for _, r in iter_records(curated) if isinstance(r, dict)]
    write_jsonl_atomic(Path(output), rows[: max(1, int(round(len(rows) * fraction)))])


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Run the tiny end-to-end SICOG loop (CPU, no downloads).")
    p.add_argument("--config", default=str(REPO / "examples" / "tiny" / "config.json"))
    p.add_argument("--output-dir", default=None, help="default: the config's (runs/tiny)")
    p.add_argument("--seed", type=int, default=None,
                   help="the config's seed replaced (data, weights and order); pool several seeds' "
                        "output directories with tools/compare_runs.py")
    p.add_argument("--dpo", action="store_true", help="stage 1 variant: DPO on self-consistency pairs after SFT")
    p.add_argument("--scaling", action="store_true",
                   help="also re-pretrain on the config's scaling_fractions of the curated data "
                        "(default 25%%, 50%% and 100%%) and plot metric vs self-generated samples")
    p.add_argument("--rounds", type=int, default=1,
                   help="SICOG rounds: round r >= 2 samples and curates with round r-1's SICOG model, "
                        "re-pretrains from it, and continues the baseline chain at equal iterations")
    p.add_argument("--fresh", action="store_true", help="delete the output directory first (no resume)")
    p.add_argument("--train-base", action="store_true",
                   help="train the base model in the loop (the config's `base` phase) instead of starting from "
                        "the shipped pretrained base (the config's base_model, made by `make base-model`)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, not {args.rounds}")
    cfg = LoopConfig.from_json(args.config, output_dir=args.output_dir, seed=args.seed)
    if args.train_base:
        cfg = dataclasses.replace(cfg, base_model="")
    loop = Loop(cfg, dpo=args.dpo, scaling=args.scaling, fresh=args.fresh, rounds=args.rounds)
    results = loop.execute()
    atomic_write_json(loop.out / "summary.json", results)
    report.print_report(results, loop.out, loop.commands)
    return 0
