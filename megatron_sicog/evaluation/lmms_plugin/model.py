"""`MegatronSicog`: an lmms-eval (0.7.x) simple model answering with the project's engine.

``--model_args`` (``key=value,...``): ``load`` (a checkpoint of this project,
any TP/PP) or ``hf_path`` (a LlavaForConditionalGeneration directory);
``iteration``; ``tokenizer_type`` / ``tokenizer_model`` / ``chat_template``
(default: the checkpoint's); ``tensor_model_parallel_size`` (1 in one process;
under torchrun every rank of the TP group runs lmms-eval); ``mode``
(``benchmark``: the task's prompt as is; ``answer`` / ``cot``: inside the
project's short-answer / structured-CoT prompt); ``max_new_tokens`` (default
when the task gives none); ``batch_size``.

`generate_until` answers greedily, batched (`generation.candidates.iter_greedy_answers`);
each request's images come from the task's ``doc_to_visual`` (PIL images) and
go in front of the text, one ``<image>`` each. A task's ``until`` strings
cut the answer at their first occurrence; a temperature above 0 is answered
greedily, with a warning (evaluation here is deterministic). Log-likelihood
requests (multiple choice scored by likelihood) are not supported: use the
generation variant of such a task.
"""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import numpy as np
from lmms_eval.api.model import lmms
from tqdm import tqdm

from megatron_sicog.prompts import IMAGE_PLACEHOLDER, build_prompt

log = logging.getLogger("megatron_sicog.lmms_eval")
MODES = ("benchmark", "answer", "cot")


def _none(v):
    return None if v in (None, "", "None", "none") else v


class MegatronSicog(lmms):
    is_simple = True

    def __init__(self, load: Optional[str] = None, hf_path: Optional[str] = None, iteration=None,
                 tokenizer_type: Optional[str] = None, tokenizer_model: Optional[str] = None,
                 chat_template: Optional[str] = None, tensor_model_parallel_size=1, mode: str = "benchmark",
                 max_new_tokens=128, batch_size=8, seed=1234, **kwargs) -> None:
        super().__init__()
        import shutil
        import tempfile

        from megatron.core import parallel_state

        from megatron_sicog import runtime
        from megatron_sicog.generation.loading import load_model_and_tokenizer
        from megatron_sicog.model.presets import PRESETS

        load, hf_path = _none(load), _none(hf_path)
        if bool(load) == bool(hf_path):
            raise ValueError("megatron_sicog needs exactly one of load=CHECKPOINT or hf_path=DIR in --model_args")
        if mode not in MODES:
            raise ValueError(f"megatron_sicog: mode must be one of {MODES}, got {mode!r}")
        unknown = sorted(k for k in kwargs if k not in ("device", "device_map"))
        if unknown:
            raise ValueError(f"megatron_sicog: unknown --model_args {', '.join(unknown)}")
        self.mode = mode
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        tp = int(tensor_model_parallel_size)
        runtime.init_distributed(tp, 1, seed=int(seed))
        if parallel_state.get_data_parallel_world_size() != 1:
            raise ValueError(f"megatron_sicog runs one model replica: world size must equal "
                             f"tensor_model_parallel_size ({tp})")
        args = SimpleNamespace(load=load, hf_path=hf_path, iteration=None if _none(iteration) is None else int(iteration),
                               tensor_model_parallel_size=tp, tokenizer_type=_none(tokenizer_type),
                               tokenizer_model=_none(tokenizer_model), chat_template=_none(chat_template),
                               model_preset=next(iter(PRESETS)))
        tmp = Path(tempfile.mkdtemp(prefix=".lmms-eval-"))
        try:
            self.model, self.tokenizer, self.template = load_model_and_tokenizer(args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # lmms-eval's own rank / world size: one replica, answers written by TP rank 0
        self._rank = parallel_state.get_tensor_model_parallel_rank()
        self._world_size = 1

    # -- requests -------------------------------------------------------------------
    def _item(self, context: str, visuals) -> dict:
        if visuals is None:
            visuals = []
        elif not isinstance(visuals, (list, tuple)):
            visuals = [visuals]
        arrays = []
        for v in visuals:
            if isinstance(v, (str, Path)):
                from megatron_sicog.data.image import load_image

                v = load_image(v)
            if not hasattr(v, "convert"):
                raise ValueError(f"megatron_sicog takes images only, got a {type(v).__name__} visual")
            arrays.append(np.asarray(v.convert("RGB"), dtype=np.uint8))
        text = context.replace(IMAGE_PLACEHOLDER, "").strip() if arrays else context
        if self.mode != "benchmark":
            text = build_prompt(self.mode, text, with_image=False)
        if arrays:
            text = IMAGE_PLACEHOLDER * len(arrays) + "\n" + text
        return {"prompt": text, "images": arrays}

    def generate_until(self, requests) -> List[str]:
        from megatron_sicog.generation.candidates import iter_greedy_answers

        # requests of one max_new_tokens are answered together
        groups: dict[int, list[int]] = {}
        items, untils = [], []
        for i, req in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            gen_kwargs = dict(gen_kwargs or {})
            if float(gen_kwargs.get("temperature", 0) or 0) > 0:
                log.warning("megatron_sicog answers greedily; temperature %s ignored", gen_kwargs["temperature"])
            until = gen_kwargs.get("until") or []
            untils.append([until] if isinstance(until, str) else list(until))
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else None
            items.append(self._item(context, visuals))
            groups.setdefault(int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)), []).append(i)
        answers: list[Optional[str]] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="megatron_sicog")
        for max_new, idx in groups.items():
            for batch in iter_greedy_answers(self.model, self.tokenizer, [items[i] for i in idx], self.template,
                                             max_new_tokens=max_new, micro_batch_size=self.batch_size):
                for j, text in batch:
                    i = idx[j]
                    for stop in untils[i]:
                        if stop and stop in text:
                            text = text[: text.index(stop)]
                    answers[i] = text
                    self.cache_hook.add_partial("generate_until", (requests[i].args[0], requests[i].args[1]), text)
                bar.update(len(batch))
        bar.close()
        return answers  # type: ignore[return-value]

    def loglikelihood(self, requests):
        raise NotImplementedError("megatron_sicog answers by generation only; use a generate_until task")

    def generate_until_multi_round(self, requests) -> List[str]:
        raise NotImplementedError("megatron_sicog answers single-round requests only")
