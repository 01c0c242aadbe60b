"""The whole SICOG loop, stage by stage, with the project's own command-line tools.

Every stage is the command a user would type (printed, and collected in
``<output>/commands.sh``); its output is checked and a marker written, so an
interrupted loop resumes at the first unfinished stage.

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
split's answers (``unlabelled_answers.jsonl``) in any command before `eval`;
they are read once, after training, to report how accurate the curated
pseudo-labels were.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from megatron_sicog.io import atomic_write_json, iter_records, write_jsonl_atomic

REPO = Path(__file__).resolve().parent.parent


@dataclass
class TrainPhase:
    iters: int
    lr: float
    global_batch_size: int = 8
    micro_batch_size: int = 8
    warmup: int = 10
    min_lr_ratio: float = 0.1
    # LLaVA-style freezing (--freeze-vision / --freeze-projector) for this phase
    freeze_vision: bool = False
    freeze_projector: bool = False
    vision_lr: Optional[float] = None  # --vision-lr: the vision encoder's own peak lr (default: lr)


@dataclass
class LoopConfig:
    output_dir: str = "runs/tiny"
    seed: int = 1234
    model_preset: str = "tiny"
    nproc: int = 1  # training processes (data parallel) per stage
    # data
    num_align: int = 2000
    num_seed: int = 300
    num_unlabelled: int = 1000
    num_eval: int = 300
    unlabelled_questions_per_image: int = 1
    image_size: int = 64
    max_objects: int = 3
    tokenizer_vocab: int = 1000
    seq_length: int = 256
    chat_template: str = "qwen2"
    # the alignment captions' format: "plain" (LLaVA pre-training: <image> caption) or the chat template
    align_template: str = "plain"
    pack_sequences: bool = True  # several short samples per sequence (block-diagonal attention)
    # training
    # the ViT learns from scratch in (re-)pre-training and is frozen in fine-tuning (LLaVA)
    base: TrainPhase = field(default_factory=lambda: TrainPhase(iters=800, lr=5e-4, warmup=20))
    sft: TrainPhase = field(default_factory=lambda: TrainPhase(iters=300, lr=5e-4, warmup=30,
                                                               freeze_vision=True))  # stage 1
    repretrain: TrainPhase = field(default_factory=lambda: TrainPhase(iters=150, lr=3e-4, warmup=15))
    final_sft: TrainPhase = field(default_factory=lambda: TrainPhase(iters=150, lr=3e-4, warmup=15,
                                                                     freeze_vision=True))
    dpo: TrainPhase = field(default_factory=lambda: TrainPhase(iters=30, lr=5e-5, global_batch_size=8,
                                                               micro_batch_size=8, warmup=3))
    dpo_beta: float = 0.1
    # where stage 3 starts: "base" (the paper: re-pretrain the base model, then the final SFT)
    # or "stage1" (cheaper: the stage-1 weights, then a short SFT)
    repretrain_from: str = "stage1"
    # share of plain alignment captions blended into every seed fine-tuning (stage 1 and the final SFT
    # of sicog and baseline alike), as LLaVA's SFT mixes tasks: keeps the base's perception in stage 1
    sft_align_mix: float = 0.0
    # stage 2
    num_candidates: int = 6
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens_cod: int = 170
    max_new_tokens_cot: int = 100
    generation_micro_batch: int = 16
    scorer: str = "embedding"
    caption_threshold: float = 0.85
    reasoning_threshold: float = 1.0  # unanimous answers only
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
        if self.repretrain_from not in ("base", "stage1"):
            raise ValueError(f"repretrain_from must be 'base' or 'stage1', not {self.repretrain_from!r}")


class StageFailed(RuntimeError):
    pass


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
        self.tok = self.out / "tokenizer" / "sp.model"
        self.py = sys.executable
        self.timings: dict[str, float] = {}
        self.metrics: dict[str, dict] = {}  # tools/evaluate.py output per evaluated model
        self.benchmarks: dict[str, dict] = {}  # tools/evaluate_benchmarks.py results per evaluated model
        self.commands = self.out / "commands.sh"
        if not self.commands.exists():
            self.commands.write_text("#!/usr/bin/env bash\n# Every command of the SICOG loop, in order "
                                     "(run from the repository root).\nset -euo pipefail\n")

    # -- running one stage ------------------------------------------------------
    def run(self, name: str, cmd: list[str], nproc: int = 1) -> None:
        marker = self.out / ".done" / name
        if nproc > 1:
            cmd = [self.py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *cmd[1:]]
        text = " ".join(shlex.quote(str(c)) for c in cmd)
        if marker.exists():
            print(f"[skip] {name} (done)", flush=True)
            return
        print(f"\n[{name}] $ {text}", flush=True)
        with open(self.commands, "a") as f:
            f.write(f"\n# {name}\n{text}\n")
        log = self.out / "logs" / f"{name}.log"
        t0 = time.perf_counter()
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        with open(log, "w") as lf:
            proc = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env, stdout=lf, stderr=subprocess.STDOUT)
        dt = time.perf_counter() - t0
        self.timings[name] = dt
        tail = log.read_text().splitlines()[-6:]
        summary = [ln for ln in tail if ln.strip() and "it/s" not in ln and "%|" not in ln][-2:]
        for ln in summary:
            print(f"    {ln.strip()[:220]}", flush=True)
        if proc.returncode != 0:
            raise StageFailed(f"stage {name} failed (exit {proc.returncode}); see {log}:\n" + "\n".join(tail))
        print(f"    {name} done in {dt:.1f}s", flush=True)
        marker.write_text(f"{dt:.3f}\n")

    def train(self, name: str, stage: str, phase: TrainPhase, data_path: list[str], init: Optional[Path]) -> Path:
        c = self.cfg
        save = self.out / "ckpt" / name
        cmd = [self.py, "pretrain_sicog.py", "--stage", stage, "--model-preset", c.model_preset,
               "--micro-batch-size", phase.micro_batch_size, "--global-batch-size", phase.global_batch_size,
               "--seq-length", c.seq_length, "--lr", phase.lr, "--min-lr", phase.lr * phase.min_lr_ratio,
               "--lr-decay-style", "cosine", "--lr-warmup-iters", phase.warmup, "--train-iters", phase.iters,
               "--weight-decay", "0.0", "--clip-grad", "1.0", "--seed", c.seed,
               "--data-path", *data_path, "--split", "100,0,0",
               "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", self.tok,
               "--chat-template", c.chat_template, "--image-root", self.data,
               "--save", save, "--load", save, "--save-interval", max(50, phase.iters // 2),
               "--log-interval", max(1, phase.iters // 10), "--log-json", self.out / "logs" / f"{name}.jsonl"]
        if init is not None:
            cmd += ["--pretrained-checkpoint", init]
        if phase.freeze_vision:
            cmd += ["--freeze-vision"]
        if phase.freeze_projector:
            cmd += ["--freeze-projector"]
        if phase.vision_lr is not None:  # a frozen ViT has no parameter group: the flag is then inert
            cmd += ["--vision-lr", phase.vision_lr]
        if c.pack_sequences and stage != "dpo":
            cmd += ["--pack-sequences"]
        if stage == "dpo":
            cmd += ["--dpo-beta", c.dpo_beta]
        self.run(f"train_{name}", [str(x) for x in cmd], nproc=c.nproc)
        return save

    def preprocess(self, name: str, inputs: list[Path], template: str, *flags: str) -> str:
        c = self.cfg
        prefix = self.out / "idx" / name
        self.run(f"preprocess_{name}", [
            self.py, "tools/preprocess_data.py", "--input", *map(str, inputs), "--image-root", str(self.data),
            "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", str(self.tok),
            "--chat-template", template, "--output-prefix", str(prefix), "--seq-length", str(c.seq_length),
            "--image-seq-length", str(self._num_patches()), "--overlong", "drop", "--workers", "0",
            "--no-progress", "--overwrite", *flags])  # a stage without its marker is redone whole
        return str(prefix)

    def generate(self, name: str, ckpt: Path, inputs: Path, mode: str, n: int, temperature: float,
                 max_new: int, micro_batch: int) -> Path:
        c = self.cfg
        out = self.out / "gen" / f"{name}.jsonl"
        self.run(f"generate_{name}", [
            self.py, "tools/generate_candidates.py", "--load", str(ckpt), "--input", str(inputs),
            "--image-root", str(self.data), "--mode", mode, "--num-candidates", str(n),
            "--temperature", str(temperature), "--top-p", str(c.top_p), "--max-new-tokens", str(max_new),
            "--micro-batch-size", str(micro_batch), "--seed", str(c.seed),
            "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", str(self.tok),
            "--chat-template", c.chat_template, "--output", str(out), "--resume", "--no-progress"])
        return out

    def _num_patches(self) -> int:
        from megatron_sicog.model.presets import PRESETS

        return PRESETS[self.cfg.model_preset].vision.num_image_tokens

    # -- the loop -----------------------------------------------------------------
    def data_and_tokenizer(self) -> None:
        c = self.cfg
        self.run("data", [self.py, "tools/make_synthetic_data.py", "--output-dir", str(self.data), "--seed", str(c.seed),
                          "--image-size", str(c.image_size), "--max-objects", str(c.max_objects),
                          "--num-align", str(c.num_align), "--num-seed", str(c.num_seed),
                          "--num-unlabelled", str(c.num_unlabelled), "--num-eval", str(c.num_eval),
                          "--unlabelled-questions-per-image", str(c.unlabelled_questions_per_image)])
        self.run("tokenizer", [self.py, "tools/train_tokenizer.py", "--input", str(self.data / "align.jsonl"),
                               str(self.data / "seed.jsonl"), "--output-prefix", str(self.tok.with_suffix("")),
                               "--vocab-size", str(c.tokenizer_vocab)])
        if c.benchmark_images:
            self.run("benchmark_exports", [self.py, "tools/make_benchmark_exports.py", "--eval",
                                           str(self.data / "eval.jsonl"), "--image-root", str(self.data),
                                           "--output-dir", str(self.data / "benchmarks"),
                                           "--num-images", str(c.benchmark_images), "--seed", str(c.seed)])

    def stage2(self, model: Path, tag: str = "") -> tuple[Path, Path]:
        """Candidates on the unlabelled split + self-consistency curation."""
        c = self.cfg
        caps = self.generate(f"cod{tag}", model, self.data / "unlabelled_images.jsonl", "cod", c.num_candidates,
                             c.temperature, c.max_new_tokens_cod, c.generation_micro_batch)
        qas = self.generate(f"cot{tag}", model, self.data / "unlabelled_questions.jsonl", "cot", c.num_candidates,
                            c.temperature, c.max_new_tokens_cot, c.generation_micro_batch)
        curated = self.out / "gen" / f"curated{tag}.jsonl"
        pairs = self.out / "gen" / f"pairs{tag}.jsonl"
        self.run(f"curate{tag}", [
            self.py, "tools/curate.py", "--input", str(caps), str(qas), "--output", str(curated),
            "--preference-output", str(pairs), "--report-dir", str(self.out / f"curation{tag}"),
            "--scorer", c.scorer, "--caption-threshold", str(c.caption_threshold),
            "--reasoning-threshold", str(c.reasoning_threshold), "--seed", str(c.seed), "--overwrite",
            # decontamination: no held-out image may enter the curated data (images only: the tiny
            # world's questions are templates shared by every split); the report counts the drops
            "--exclude", str(self.data / "eval.jsonl"), "--image-root", str(self.data),
            "--exclude-match", "image"])
        return curated, pairs

    def evaluate(self, name: str, ckpt: Path) -> dict:
        c = self.cfg
        caps_in, qas_in = self._eval_inputs()
        caps = self.generate(f"eval_{name}_cod", ckpt, caps_in, "cod", 1, 0.0, c.max_new_tokens_cod, c.eval_micro_batch)
        qas = self.generate(f"eval_{name}_cot", ckpt, qas_in, "cot", 1, 0.0, c.max_new_tokens_cot, c.eval_micro_batch)
        preds = self.out / "eval" / f"{name}.predictions.jsonl"
        rows = []
        for path, task in ((caps, "caption"), (qas, "reasoning")):
            for _, rec in iter_records(path):
                cands = rec.get("candidates") or [""]
                rows.append({"id": rec["id"], "task": task, "prediction": cands[0]})
        write_jsonl_atomic(preds, rows)
        metrics = self.out / "eval" / f"{name}.metrics.json"
        self.run(f"score_{name}", [self.py, "tools/evaluate.py", "--predictions", str(preds),
                                   "--ground-truth", str(self.data / "eval.jsonl"), "--output", str(metrics)])
        m = self.metrics[name] = json.loads(metrics.read_text())
        if c.benchmark_images:
            self.benchmarks[name] = self.benchmark(name, ckpt)
        return {"accuracy": m["reasoning"]["accuracy"], "caption_score": m["caption"]["f1"]}

    def benchmark(self, name: str, ckpt: Path) -> dict:
        """The standard-benchmark tool on the exports: the structured-CoT prompt over the bare question (the
        demo's models learnt that prompt and never saw lettered options; replies match options by text)."""
        c, out, bench = self.cfg, self.out / "eval" / f"benchmarks_{name}", self.data / "benchmarks"
        self.run(f"benchmarks_{name}", [
            self.py, "tools/evaluate_benchmarks.py", "--load", str(ckpt),
            "--benchmark", f"MMBench_tiny={bench / 'MMBench_tiny.tsv'}", "--benchmark",
            f"POPE_tiny={bench / 'POPE_tiny.jsonl'}", "--image-root", str(self.data), "--mode", "cot-open",
            "--max-new-tokens", str(c.max_new_tokens_cot), "--micro-batch-size", str(c.eval_micro_batch),
            "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", str(self.tok),
            "--chat-template", c.chat_template, "--output-dir", str(out), "--overwrite", "--no-progress"])
        return json.loads((out / "results.json").read_text())

    def _eval_inputs(self) -> tuple[Path, Path]:
        caps, qas = self.out / "eval" / "inputs_caption.jsonl", self.out / "eval" / "inputs_reasoning.jsonl"
        if not caps.exists() or not qas.exists():
            c_rows, q_rows = [], []
            for _, rec in iter_records(self.data / "eval.jsonl"):
                c_rows.append({"id": rec["id"], "image": rec["image"]})
                for q in rec.get("questions", []):
                    q_rows.append({"id": q["id"], "image": rec["image"], "question": q["question"]})
            write_jsonl_atomic(caps, c_rows)
            write_jsonl_atomic(qas, q_rows)
        return caps, qas

    def subset(self, curated: Path, fraction: float) -> Path:
        rows = [r for _, r in iter_records(curated) if isinstance(r, dict)]
        keep = rows[: max(1, int(round(len(rows) * fraction)))]
        out = self.out / "gen" / f"curated_{int(fraction * 100)}pct.jsonl"
        write_jsonl_atomic(out, keep)
        return out

    def execute(self) -> dict:
        c, t0 = self.cfg, time.perf_counter()
        self.data_and_tokenizer()
        align = self.preprocess("align", [self.data / "align.jsonl"], c.align_template)
        seed = self.preprocess("seed", [self.data / "seed.jsonl"], c.chat_template)

        base = self.train("base", "pretrain", c.base, [align], None)
        seed_blend = self.seed_blend(seed, align)
        stage1 = self.train("stage1", "sft", c.sft, seed_blend, base)
        results = {}
        curated, pairs = self.stage2(stage1)
        generator = stage1
        if self.dpo:  # the DPO variant: preference pairs from the stage-1 model's own votes, then sample again
            pairs_idx = self.preprocess("pairs", [pairs], c.chat_template, "--preference")
            generator = self.train("stage1_dpo", "dpo", c.dpo, [pairs_idx], stage1)
            curated, _ = self.stage2(generator, tag="_dpo")
        cur_idx = self.preprocess("curated", [curated], c.chat_template)

        # the SICOG model: re-pretraining on self-generated data (+ the alignment data), then fine-tuning
        start = base if c.repretrain_from == "base" else stage1
        sicog_pt = self.train("sicog_pretrain", "pretrain", c.repretrain, ["0.5", align, "0.5", cur_idx], start)
        sicog = self.train("sicog", "sft", c.final_sft, seed_blend, sicog_pt)
        # the paper's comparison: the same recipe and iterations without the self-generated data
        baseline_pt = self.train("baseline_pretrain", "pretrain", c.repretrain, [align], start)
        baseline = self.train("baseline", "sft", c.final_sft, seed_blend, baseline_pt)

        models = {"base": base, "stage1": stage1, "sicog": sicog, "baseline": baseline}
        if self.dpo:
            models["stage1_dpo"] = generator
        for name, ckpt in models.items():
            results[name] = self.evaluate(name, ckpt)

        if self.benchmarks:
            results["benchmarks"] = dict(self.benchmarks)
        results["comparisons"] = self.comparisons([("stage1", "sicog"), ("baseline", "sicog"),
                                                   ("stage1", "baseline")])
        if self.scaling:
            results["scaling"] = self.scaling_curve(curated, align, seed, start, results["baseline"])
        gen_tag = "_dpo" if self.dpo else ""
        results.update(self.curation_counts(curated, gen_tag))
        results["self_generated_quality"] = self.self_generated_quality(curated, gen_tag)
        if self.rounds > 1:
            results["rounds"] = self.later_rounds(sicog, baseline, align, seed_blend, results)
            models.update({f"{m}_r{r['round']}": None for r in results["rounds"] for m in ("sicog", "baseline")})
        for name in models:
            results[name]["step_consistency"] = self.step_consistency(name)
        results["seconds"] = round(time.perf_counter() - t0, 1)
        results["stage_seconds"] = {k: round(v, 1) for k, v in self.timings.items()}
        results["config"] = dataclasses.asdict(c)
        return results

    def later_rounds(self, sicog: Path, baseline: Path, align: str, seed_blend: list[str], results: dict) -> list:
        """Rounds 2..N: the previous round's SICOG model samples and curates again; its re-pretraining
        (same recipe, from the previous SICOG model) uses the new curated set, and the baseline chain
        continues from the previous baseline on the alignment data only, at equal iterations."""
        c, rounds = self.cfg, []
        prev_sicog, prev_baseline, prev_name = sicog, baseline, "sicog"
        for r in range(2, self.rounds + 1):
            tag = f"_r{r}"
            curated, _ = self.stage2(prev_sicog, tag=tag)
            cur_idx = self.preprocess(f"curated{tag}", [curated], c.chat_template)
            s_pt = self.train(f"sicog_pretrain{tag}", "pretrain", c.repretrain, ["0.5", align, "0.5", cur_idx],
                              prev_sicog)
            s_model = self.train(f"sicog{tag}", "sft", c.final_sft, seed_blend, s_pt)
            b_pt = self.train(f"baseline_pretrain{tag}", "pretrain", c.repretrain, [align], prev_baseline)
            b_model = self.train(f"baseline{tag}", "sft", c.final_sft, seed_blend, b_pt)
            for name, ckpt in ((f"sicog{tag}", s_model), (f"baseline{tag}", b_model)):
                results[name] = self.evaluate(name, ckpt)
            cmp = self.comparisons([(f"baseline{tag}", f"sicog{tag}"), (prev_name, f"sicog{tag}")])
            results["comparisons"].update(cmp)
            rounds.append({"round": r, "generator": prev_name, **self.curation_counts(curated, tag),
                           "self_generated_quality": self.self_generated_quality(curated, tag),
                           "sicog": results[f"sicog{tag}"], "baseline": results[f"baseline{tag}"],
                           "comparisons": cmp})
            prev_sicog, prev_baseline, prev_name = s_model, b_model, f"sicog{tag}"
        return rounds

    def seed_blend(self, seed: str, align: str) -> list[str]:
        """The data path of a seed fine-tuning: the seed, or a weighted blend with the align captions."""
        m = self.cfg.sft_align_mix
        return [seed] if m <= 0 else [str(1.0 - m), seed, str(m), align]

    def comparisons(self, pairs: list[tuple[str, str]]) -> dict:
        """Paired bootstrap (items resampled) of B - A for answer accuracy and caption F1."""
        from megatron_sicog.evaluation.significance import paired_bootstrap

        out = {}
        for a, b in pairs:
            ma, mb = self.metrics[a], self.metrics[b]
            out[f"{b}-{a}"] = {"accuracy": paired_bootstrap(ma, mb, "reasoning", seed=self.cfg.seed),
                               "caption_score": paired_bootstrap(ma, mb, "caption", seed=self.cfg.seed)}
        return out

    def scaling_curve(self, curated: Path, align: str, seed: str, start: Path, zero: dict) -> list[dict]:
        """Re-pretraining on growing shares of the curated data (from the same start as sicog)."""
        c = self.cfg
        points = [{"fraction": 0.0, "curated_samples": 0, **zero}]
        for frac in c.scaling_fractions:
            if frac >= 1.0:
                tag, idx = "", self.out / "idx" / "curated"
            else:
                tag = f"_{int(frac * 100)}pct"
                idx = self.preprocess(f"curated{tag}", [self.subset(curated, frac)], c.chat_template)
            pt = self.train(f"sicog_pretrain{tag}", "pretrain", c.repretrain, ["0.5", align, "0.5", str(idx)], start)
            model = self.train(f"sicog{tag}", "sft", c.final_sft, self.seed_blend(seed, align), pt)
            n = sum(1 for _ in iter_records(self.subset(curated, frac) if frac < 1.0 else curated))
            points.append({"fraction": frac, "curated_samples": n, **self.evaluate(f"sicog{tag}", model)})
        return points

    def self_generated_quality(self, curated: Path, tag: str = "") -> dict:
        """(Analysis only, after training) the candidates and the curated set against the hidden truth."""
        from megatron_sicog.evaluation.consistency import answer_vote_quality, caption_candidate_quality

        gen = self.out / "gen"
        return {"caption": caption_candidate_quality(gen / f"cod{tag}.jsonl", curated,
                                                     self.data / "scene_graphs.jsonl"),
                "answers": answer_vote_quality(gen / f"cot{tag}.jsonl", self.data / "unlabelled_answers.jsonl")}

    def step_consistency(self, name: str) -> dict:
        """Step 1 vs step 5 of the model's greedy held-out CoD descriptions."""
        from megatron_sicog.evaluation.consistency import mean_step_consistency

        rows = iter_records(self.out / "gen" / f"eval_{name}_cod.jsonl")
        return mean_step_consistency((r.get("candidates") or [""])[0] for _, r in rows if isinstance(r, dict))

    def curation_counts(self, curated: Path, tag: str = "") -> dict:
        """Curated / candidate counts (the candidates of the same generation, ``gen/cod{tag}.jsonl``), and
        (analysis only) pseudo-label accuracy vs the hidden answers."""
        from megatron_sicog.curation.answers import normalize_answer, same_answer

        n_curated = n_reasoning = n_correct = 0
        candidates = 0
        for name in ("cod", "cot"):
            for _, rec in iter_records(self.out / "gen" / f"{name}{tag}.jsonl"):
                if isinstance(rec, dict):
                    candidates += len(rec.get("candidates") or [])
        answers = {r["id"]: r.get("answer") for _, r in iter_records(self.data / "unlabelled_answers.jsonl")
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


def format_benchmarks(results: dict) -> str:
    """The benchmark-format exports: MMBench-style CircularEval (and per-row) accuracy, POPE accuracy / F1."""
    bench = results.get("benchmarks") or {}
    if not bench:
        return ""
    lines = [f"{'model':<12} {'MMB circ.':>9} {'MMB rows':>9} {'unmatched':>9} {'POPE acc':>9} {'POPE F1':>9} "
             f"{'yes ratio':>9}", "-" * 72]
    for k, r in bench.items():
        m, p = r["MMBench_tiny"], r["POPE_tiny"]
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
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, not {args.rounds}")
    cfg = LoopConfig.from_json(args.config, output_dir=args.output_dir, seed=args.seed)
    loop = Loop(cfg, dpo=args.dpo, scaling=args.scaling, fresh=args.fresh, rounds=args.rounds)
    results = loop.execute()
    atomic_write_json(loop.out / "summary.json", results)
    plots = save_plots(results, loop.out)
    print("\n" + format_table(results))
    if results.get("benchmarks"):
        print("\nbenchmark-format exports of the held-out split (tools/evaluate_benchmarks.py):\n"
              + format_benchmarks(results))
    print(format_comparisons(results))
    print(f"\n{results['curated_samples']} curated samples from {results['candidates']} candidates; "
          f"curated-answer accuracy vs hidden answers (analysis only): "
          f"{results['curated_reasoning_pseudo_label_accuracy']}")
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
    print(f"summary: {loop.out / 'summary.json'}; plots: {', '.join(str(p) for p in plots)}; "
          f"commands: {loop.commands}; {results['seconds']:.0f}s")
    return 0
