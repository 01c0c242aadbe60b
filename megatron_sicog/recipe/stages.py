"""The command of each kind of stage of the SICOG round, from the settings shared by every tool.

``Tools`` holds what every command repeats (tokenizer, chat template, image root, sequence length, seed,
where the run writes); each builder returns one ``Stage`` with its inputs and outputs. Run directory layout:
``ckpt/<name>`` (checkpoints), ``idx/<name>`` (mmap datasets), ``gen/<name>.jsonl`` (candidates, curated
records, pairs), ``logs/<name>.jsonl`` (training logs), ``curation<tag>/`` (curation reports).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from megatron_sicog.recipe.graph import Shard, Stage


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


@dataclass(frozen=True)
class Tools:
    out: Path  # the run directory
    image_root: str
    tokenizer_model: str
    chat_template: str
    seq_length: int
    seed: int
    model_preset: str
    image_seq_length: int  # the preset's image tokens (preprocessing reserves them)
    tokenizer_type: str = "SentencePieceTokenizer"
    nproc: int = 1  # training processes
    pack_sequences: bool = True
    dpo_beta: float = 0.1
    top_p: float = 0.9

    def tokenizer(self) -> list[str]:
        return ["--tokenizer-type", self.tokenizer_type, "--tokenizer-model", self.tokenizer_model]


def num_image_tokens(preset: str) -> int:
    """The image tokens one image takes in the preset's language model (what preprocessing reserves)."""
    from megatron_sicog.model.presets import PRESETS

    return PRESETS[preset].vision.num_image_tokens


def _data_prefixes(data_path: Sequence[str]) -> tuple[str, ...]:
    """The dataset prefixes of a Megatron --data-path (weights left out)."""
    words = list(data_path)
    return tuple(words[1::2]) if len(words) > 1 and _is_number(words[0]) else tuple(words)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def blend(parts: Sequence[tuple[float, str]]) -> list[str]:
    """A Megatron --data-path from (weight, prefix) pairs: parts of weight 0 left out, a single part unweighted."""
    kept = [(w, p) for w, p in parts if w > 0]
    if len(kept) == 1:
        return [kept[0][1]]
    return [x for w, p in kept for x in (str(w), p)]


def train(t: Tools, name: str, stage: str, phase: TrainPhase, data_path: Sequence[str],
          init: Optional[str], vision_init: Optional[str] = None) -> Stage:
    """pretrain_sicog.py: ``--stage`` pretrain / sft / dpo into ckpt/<name>, from ``init`` when given;
    ``vision_init``: a checkpoint whose vision encoder alone starts this one (a separately pretrained tower)."""
    save = str(t.out / "ckpt" / name)
    args = ["--stage", stage, "--model-preset", t.model_preset,
            "--micro-batch-size", phase.micro_batch_size, "--global-batch-size", phase.global_batch_size,
            "--seq-length", t.seq_length, "--lr", phase.lr, "--min-lr", phase.lr * phase.min_lr_ratio,
            "--lr-decay-style", "cosine", "--lr-warmup-iters", phase.warmup, "--train-iters", phase.iters,
            "--weight-decay", "0.0", "--clip-grad", "1.0", "--seed", t.seed,
            "--data-path", *data_path, "--split", "100,0,0", *t.tokenizer(),
            "--chat-template", t.chat_template, "--image-root", t.image_root,
            "--save", save, "--load", save, "--save-interval", max(50, phase.iters // 2),
            "--log-interval", max(1, phase.iters // 10), "--log-json", t.out / "logs" / f"{name}.jsonl"]
    if init is not None:
        args += ["--pretrained-checkpoint", init]
    if vision_init is not None:
        args += ["--pretrained-vision-checkpoint", vision_init]
    if phase.freeze_vision:
        args += ["--freeze-vision"]
    if phase.freeze_projector:
        args += ["--freeze-projector"]
    if phase.vision_lr is not None:  # a frozen ViT has no parameter group: the flag is then inert
        args += ["--vision-lr", phase.vision_lr]
    if t.pack_sequences and stage != "dpo":
        args += ["--pack-sequences"]
    if stage == "dpo":
        args += ["--dpo-beta", t.dpo_beta]
    inputs = _data_prefixes([str(d) for d in data_path]) + tuple(str(i) for i in (init, vision_init) if i is not None)
    return Stage(f"train_{name}", "pretrain_sicog.py", tuple(str(a) for a in args),
                 inputs=inputs + (t.tokenizer_model,), outputs=(save,), nproc=t.nproc, kind="train")


def preprocess(t: Tools, name: str, inputs: Sequence[str], template: str, *flags: str) -> Stage:
    """tools/preprocess_data.py: LLaVA records -> idx/<name> (.bin/.idx); sharded as an array + merge."""
    prefix = str(t.out / "idx" / name)
    args = ["--input", *map(str, inputs), "--image-root", t.image_root, *t.tokenizer(),
            "--chat-template", template, "--output-prefix", prefix, "--seq-length", str(t.seq_length),
            "--image-seq-length", str(t.image_seq_length), "--overlong", "drop", "--workers", "0",
            "--no-progress", "--overwrite", *flags]  # a stage without its marker is redone whole
    return Stage(f"preprocess_{name}", "tools/preprocess_data.py", tuple(args),
                 inputs=tuple(map(str, inputs)) + (t.tokenizer_model,), outputs=(prefix,),
                 shard=Shard(prefix, "mmap"))


def generate(t: Tools, name: str, ckpt: str, inputs: str, mode: str, n: int, temperature: float,
             max_new: int, micro_batch: int) -> Stage:
    """tools/generate_candidates.py: ``n`` candidates per record -> gen/<name>.jsonl (resumable)."""
    out = str(t.out / "gen" / f"{name}.jsonl")
    args = ["--load", str(ckpt), "--input", str(inputs), "--image-root", t.image_root, "--mode", mode,
            "--num-candidates", str(n), "--temperature", str(temperature), "--top-p", str(t.top_p),
            "--max-new-tokens", str(max_new), "--micro-batch-size", str(micro_batch), "--seed", str(t.seed),
            *t.tokenizer(), "--chat-template", t.chat_template, "--output", out, "--resume", "--no-progress"]
    return Stage(f"generate_{name}", "tools/generate_candidates.py", tuple(args),
                 inputs=(str(ckpt), str(inputs), t.tokenizer_model), outputs=(out,), shard=Shard(out, "jsonl"))


@dataclass(frozen=True)
class Curation:
    scorer: str = "embedding"
    caption_threshold: float = 0.85
    reasoning_threshold: float = 1.0
    exclude: tuple[str, ...] = ()  # decontamination: files whose images may not enter the curated data
    exclude_match: tuple[str, ...] = ("image",)
    audit: tuple[str, ...] = ()  # labelled files judging the kept labels (tools/curate.py --audit): analysis only


def curate(t: Tools, tag: str, candidates: Sequence[str], c: Curation) -> Stage:
    """tools/curate.py: self-consistency voting -> gen/curated<tag>.jsonl, gen/pairs<tag>.jsonl, a report."""
    curated, pairs = str(t.out / "gen" / f"curated{tag}.jsonl"), str(t.out / "gen" / f"pairs{tag}.jsonl")
    args = ["--input", *map(str, candidates), "--output", curated, "--preference-output", pairs,
            "--report-dir", str(t.out / f"curation{tag}"), "--scorer", c.scorer,
            "--caption-threshold", str(c.caption_threshold), "--reasoning-threshold", str(c.reasoning_threshold),
            "--seed", str(t.seed), "--overwrite"]
    if c.exclude:
        args += ["--exclude", *c.exclude, "--image-root", t.image_root, "--exclude-match", *c.exclude_match]
    if c.audit:
        args += ["--audit", *c.audit]
    return Stage(f"curate{tag}", "tools/curate.py", tuple(args),
                 inputs=tuple(map(str, candidates)) + c.exclude + c.audit,
                 outputs=(curated, pairs, str(t.out / f"curation{tag}")))
