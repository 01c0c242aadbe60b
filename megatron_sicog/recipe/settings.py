"""The settings of one SICOG round, declared once for both graphs that build a round.

`RoundSettings` holds what the demo (`megatron_sicog.loop.LoopConfig`) and a cluster round
(`recipe.round.RoundConfig`) both set: the run's folder, model and sequence, where and on what
re-pretraining starts, how candidates are sampled and curated. Its defaults are the cluster round's;
the demo is the same round at a tiny scale and names the values it changes with `with_defaults`
(shorter sequences, packing, fewer new tokens, ...), so a field is never declared twice.
``tools()`` and ``curation()`` turn the settings into the builders' shared arguments
(`recipe.stages.Tools`, `recipe.stages.Curation`).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from functools import partial

from megatron_sicog.recipe.stages import Curation, TrainPhase, Tools, num_image_tokens

REPRETRAIN_FROM = ("base", "stage1")


@dataclass(kw_only=True)
class RoundSettings:
    output_dir: str = "runs/sicog"  # ckpt/, gen/, idx/, logs/ of the round
    seed: int = 1234
    model_preset: str = "tiny"
    seq_length: int = 2048
    chat_template: str = "qwen2"
    pack_sequences: bool = False  # several short samples per sequence (block-diagonal attention)
    dpo_beta: float = 0.1
    # where re-pretraining starts: "base" (the paper: re-pretrain the base model, then the full fine-tuning)
    # or "stage1" (cheaper: the stage-1 weights, then a short fine-tuning)
    repretrain_from: str = "base"
    # share of the curated data in the re-pretraining blend, the rest alignment data (1.0: curated only)
    repretrain_curated_mix: float = 1.0
    repretrain: TrainPhase = field(default_factory=lambda: TrainPhase(iters=1000, lr=1e-4, global_batch_size=8,
                                                                      micro_batch_size=1, warmup=0))
    # stage 2: candidates
    num_candidates: int = 6
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens_cod: int = 512
    max_new_tokens_cot: int = 512
    generation_micro_batch: int = 8
    # stage 2: curation
    scorer: str = "embedding"
    caption_threshold: float = 0.85
    reasoning_threshold: float = 1.0  # unanimous answers only

    def check_values(self) -> None:
        """Refuse values outside a setting's range (ValueError naming the setting)."""
        if self.repretrain_from not in REPRETRAIN_FROM:
            raise ValueError(f"repretrain_from must be 'base' or 'stage1', not {self.repretrain_from!r}")
        if not 0.0 < self.repretrain_curated_mix <= 1.0:
            raise ValueError(f"repretrain_curated_mix must be in (0, 1], not {self.repretrain_curated_mix!r}")

    def tools(self, out, image_root: str, tokenizer_model: str, **more) -> Tools:
        """The arguments every command of the round repeats; ``more``: the graph's own (nproc, tokenizer_type)."""
        return Tools(out=out, image_root=image_root, tokenizer_model=tokenizer_model,
                     chat_template=self.chat_template, seq_length=self.seq_length, seed=self.seed,
                     model_preset=self.model_preset, image_seq_length=num_image_tokens(self.model_preset),
                     pack_sequences=self.pack_sequences, dpo_beta=self.dpo_beta, top_p=self.top_p, **more)

    def curation(self, exclude=(), **more) -> Curation:
        """Curation's settings; ``exclude``: files whose images may not be curated (decontamination)."""
        return Curation(scorer=self.scorer, caption_threshold=self.caption_threshold,
                        reasoning_threshold=self.reasoning_threshold, exclude=tuple(map(str, exclude)), **more)


def with_defaults(base: type, **defaults) -> type:
    """``base`` (a dataclass) with other defaults for some of its fields: each field keeps its one
    declaration (type, comment) in ``base``; only the value differs. Mutable values are copied per instance."""
    fields = {f.name: f for f in dataclasses.fields(base)}
    unknown = sorted(set(defaults) - set(fields))
    if unknown:
        raise TypeError(f"{base.__name__} has no settings {unknown}")
    changed = []
    for name, value in defaults.items():
        if isinstance(value, (list, dict, set)) or dataclasses.is_dataclass(value):
            default = field(default_factory=partial(copy.deepcopy, value))
        else:
            default = field(default=value)
        changed.append((name, fields[name].type, default))
    cls = dataclasses.make_dataclass(f"{base.__name__}WithDefaults", changed, bases=(base,), kw_only=True)
    cls.__module__ = base.__module__
    return cls
