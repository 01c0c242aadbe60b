"""One SICOG round on a cluster's own data, as a stage graph (what examples/slurm/run_sicog_loop.sh submits):

    train_stage1          pretrain_sicog.py --stage sft|dpo   seed data, from base_checkpoint  -> ckpt/stage1
    generate_cod / _cot   tools/generate_candidates.py        caption_input / qa_input          -> gen/{cod,cot}.jsonl
    curate                tools/curate.py                     the candidates                   -> gen/curated.jsonl
    preprocess_curated    tools/preprocess_data.py            gen/curated.jsonl                -> idx/curated
    train_sicog_pretrain  pretrain_sicog.py --stage pretrain  idx/curated (+ align_data blend)  -> ckpt/sicog_pretrain
    train_sicog           pretrain_sicog.py --stage sft|dpo   final_data (the seed data)        -> ckpt/sicog

The same builders and the same settings (`recipe.settings.RoundSettings`, whose defaults are this
round's) make the tiny demo's round (megatron_sicog/loop.py), so equal settings give equal commands. The
demo changes some defaults to its scale: among them, it re-pretrains on a 0.5/0.5 blend of alignment and
curated data; a cluster round on the curated data only (``repretrain_curated_mix`` 1.0) unless
``align_data`` and a mix below 1 are given.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from megatron_sicog.recipe import stages
from megatron_sicog.recipe.graph import Member, Stage
from megatron_sicog.recipe.settings import RoundSettings
from megatron_sicog.recipe.stages import TrainPhase, blend

LIST_FIELDS = ("seed_data", "final_data", "exclude", "train_extra_args")


@dataclass
class RoundConfig(RoundSettings):  # the round's shared settings (recipe/settings.py), with their defaults, plus:
    base_checkpoint: str = ""  # stage 1 starts here (required)
    seed_data: list = field(default_factory=list)  # stage-1 --data-path, weights allowed (required)
    caption_input: str = ""  # images for CoD candidates (LLaVA JSONL)     } at least
    qa_input: str = ""  # image-question pairs for CoT candidates           } one of the two
    image_root: str = ""  # folder the records' image paths are relative to (required)
    tokenizer_type: str = "HuggingFaceTokenizer"
    tokenizer_model: str = ""  # (required)
    stage1_stage: str = "sft"  # sft | dpo
    stage1: TrainPhase = field(default_factory=lambda: TrainPhase(iters=1000, lr=2e-5, global_batch_size=8,
                                                                  micro_batch_size=1, warmup=0))
    align_data: str = ""  # alignment data blended into re-pretraining (with repretrain_curated_mix < 1)
    final_stage: str = "sft"  # sft | dpo | none
    final_data: list = field(default_factory=list)  # default: seed_data
    final: TrainPhase = field(default_factory=lambda: TrainPhase(iters=1000, lr=2e-5, global_batch_size=8,
                                                                 micro_batch_size=1, warmup=0))
    train_extra_args: list = field(default_factory=list)  # appended to every training command (TP, PP, ...)
    exclude: list = field(default_factory=list)  # decontamination: files whose images may not be curated

    def check(self) -> None:
        missing = [f for f in ("base_checkpoint", "seed_data", "image_root", "tokenizer_model") if not getattr(self, f)]
        if missing:
            raise ValueError(f"round settings missing: {', '.join(missing)}")
        if not (self.caption_input or self.qa_input):
            raise ValueError("set caption_input (CoD candidates) and/or qa_input (CoT candidates)")
        for name, value, allowed in (("stage1_stage", self.stage1_stage, ("sft", "dpo")),
                                     ("final_stage", self.final_stage, ("sft", "dpo", "none"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        self.check_values()
        if self.repretrain_curated_mix < 1.0 and not self.align_data:
            raise ValueError(f"repretrain_curated_mix {self.repretrain_curated_mix} < 1 needs align_data")

    @classmethod
    def load(cls, path: Optional[str], sets: list[str] = ()) -> "RoundConfig":
        """Settings from a JSON file, then ``key=value`` overrides (``stage1.iters=50``; JSON values, else text;
        list settings split on spaces)."""
        raw = json.loads(Path(path).read_text()) if path else {}
        for item in sets:
            key, _, value = item.partition("=")
            try:
                v = json.loads(value)
            except ValueError:
                v = value
            if key in LIST_FIELDS and isinstance(v, str):
                v = v.split()
            head, _, sub = key.partition(".")
            if sub:
                raw.setdefault(head, {})[sub] = v
            else:
                raw[key] = v
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ValueError(f"unknown round settings {unknown}")
        kw = {}
        for k, v in raw.items():
            if isinstance(v, dict):
                v = dataclasses.replace(names[k].default_factory(), **v)
            kw[k] = v
        return cls(**kw)


def sicog_round(cfg: RoundConfig) -> list[Member]:
    cfg.check()
    out = Path(cfg.output_dir).resolve()
    t = cfg.tools(out, cfg.image_root, cfg.tokenizer_model, tokenizer_type=cfg.tokenizer_type)

    def train(name, stage, phase, data, init) -> Stage:
        s = stages.train(t, name, stage, phase, data, init)
        return dataclasses.replace(s, args=s.args + tuple(map(str, cfg.train_extra_args)))

    g: list[Member] = [train("stage1", cfg.stage1_stage, cfg.stage1, cfg.seed_data, cfg.base_checkpoint)]
    stage1 = g[0].outputs[0]
    candidates = []
    for name, inputs, mode, max_new in (("cod", cfg.caption_input, "cod", cfg.max_new_tokens_cod),
                                        ("cot", cfg.qa_input, "cot", cfg.max_new_tokens_cot)):
        if inputs:
            g.append(stages.generate(t, name, stage1, inputs, mode, cfg.num_candidates, cfg.temperature, max_new,
                                     cfg.generation_micro_batch))
            candidates.append(g[-1].outputs[0])
    g.append(stages.curate(t, "", candidates, cfg.curation(exclude=cfg.exclude)))
    g.append(stages.preprocess(t, "curated", [g[-1].outputs[0]], cfg.chat_template))
    data = blend([(1.0 - cfg.repretrain_curated_mix, cfg.align_data), (cfg.repretrain_curated_mix, g[-1].outputs[0])])
    start = cfg.base_checkpoint if cfg.repretrain_from == "base" else stage1
    g.append(train("sicog_pretrain", "pretrain", cfg.repretrain, data, start))
    if cfg.final_stage != "none":
        g.append(train("sicog", cfg.final_stage, cfg.final, cfg.final_data or cfg.seed_data, g[-1].outputs[0]))
    return g
