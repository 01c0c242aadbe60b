"""Training objectives: what a stage optimises, as an object the trainer drives without knowing which.

An objective supplies

* ``loss_keys``: the metrics its loss function reports (averaged by the trainer), the first one the loss;
* ``rows_per_sample``: batch rows one dataset sample becomes (DPO: chosen + rejected);
* ``setup(inner, model_args, args)``: extra models it needs beside the policy (DPO: the frozen reference);
* ``datasets(...)``: (train, valid) indexable datasets, ``train`` already holding ``num_train`` samples;
* ``collate(sample_collate)``: dataset samples -> one `model.batch.Batch`;
* ``forward_step(data_iterator, model)``: the function megatron-core's schedule calls per micro-batch;
* ``run(schedule, data_iterator, num_microbatches, forward_only)``: one step's micro-batches through
  ``schedule(forward_step, data_iterator, model, num_microbatches, forward_only)`` (model None: the
  policy), returning the schedule's per-micro-batch loss dicts.

`LMObjective` is next-token loss on the target tokens (pretrain, SFT). `DPOObjective` runs each step's
micro-batches twice through the same schedule: forward-only through the frozen reference (any PP size:
the reference is partitioned like the policy, its sequence log-probs come out on the last stage), then
through the policy, whose loss function on the last stage takes the reference log-probs in micro-batch
order.
"""
from __future__ import annotations

from collections import deque
from functools import partial

import torch
from megatron.core import parallel_state

from megatron_sicog import runtime
from megatron_sicog.training.data_iterators import EpochShuffledView
from megatron_sicog.training.dpo import build_reference_model, dpo_loss, sequence_logps
from megatron_sicog.training.lm_step import forward_step as lm_forward_step


def _mock(args, model_args, n: int, seed: int):
    from megatron_sicog.training.mock_data import MockMultimodalDataset

    m = model_args
    return MockMultimodalDataset(n, seq_length=args.seq_length, vocab_size=m.language.vocab_size,
                                 image_token_id=m.image_token_id, image_size=m.vision.image_size,
                                 num_image_tokens=m.vision.num_image_tokens, seed=seed)


class LMObjective:
    loss_keys = ("lm_loss",)
    rows_per_sample = 1

    def setup(self, inner, model_args, args) -> None:
        pass

    def datasets(self, args, model_args, tokenizer, num_train: int, num_valid: int):
        if args.mock_data:
            train = EpochShuffledView(_mock(args, model_args, max(num_train, 64), args.seed), num_train, args.seed)
            return train, _mock(args, model_args, max(num_valid, 16), args.seed + 1)
        from megatron_sicog.data.dataset import build_train_valid_datasets
        from megatron_sicog.data.tiling import tiling_for

        m = model_args
        return build_train_valid_datasets(
            args.data_path, seq_length=args.seq_length, seed=args.seed, num_train_samples=num_train,
            num_valid_samples=num_valid if args.eval_iters else 0, split=args.split, pack=args.pack_sequences,
            image_seq_length=m.vision.num_image_tokens, image_token_id=m.image_token_id,
            tiling=tiling_for(m.vision))

    def collate(self, sample_collate):
        return sample_collate

    forward_step = staticmethod(lm_forward_step)

    def run(self, schedule, data_iterator, num_microbatches: int, forward_only: bool) -> list[dict]:
        return schedule(self.forward_step, data_iterator, None, num_microbatches, forward_only)


def collate_pairs(pairs, collate_fn):
    """[{"chosen": sample, "rejected": sample}] -> one Batch: chosen rows, then rejected rows."""
    return collate_fn([p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])


def _reference_loss(loss_mask, output_tensor):
    logps = sequence_logps(output_tensor, loss_mask)
    return logps.sum() * 0.0, {"logps": logps.detach()}


class DPOObjective:
    loss_keys = ("dpo_loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected",
                 "logps/chosen", "logps/rejected")
    rows_per_sample = 2

    def __init__(self, beta: float):
        self.beta = beta
        self.ref_model = None
        self._ref_logps: deque = deque()

    def setup(self, inner, model_args, args) -> None:
        self.ref_model = build_reference_model(inner, model_args, args)

    def datasets(self, args, model_args, tokenizer, num_train: int, num_valid: int):
        if args.mock_data:
            from megatron_sicog.training.mock_data import MockPreferenceDataset

            train = MockPreferenceDataset(_mock(args, model_args, max(num_train, 64), args.seed))
            valid = MockPreferenceDataset(_mock(args, model_args, max(num_valid, 16), args.seed + 1))
            return EpochShuffledView(train, num_train, args.seed), valid
        from megatron_sicog.data.preference import PreferencePairs

        train = PreferencePairs(args.data_path)
        return EpochShuffledView(train, num_train, args.seed), None

    def collate(self, sample_collate):
        return partial(collate_pairs, collate_fn=sample_collate)

    @staticmethod
    def reference_step(data_iterator, model):
        batch = next(data_iterator).to(runtime.device())
        out = model(batch.input_ids, batch.position_ids, batch.attention_mask,
                    images=batch.images, labels=batch.labels, image_sizes=batch.image_sizes)
        return out, partial(_reference_loss, batch.loss_mask)

    def forward_step(self, data_iterator, model):
        batch = next(data_iterator).to(runtime.device())
        out = model(batch.input_ids, batch.position_ids, batch.attention_mask,
                    images=batch.images, labels=batch.labels, image_sizes=batch.image_sizes)
        if not parallel_state.is_pipeline_last_stage():
            return out, None  # the schedule calls a loss function on the last stage only
        return out, partial(dpo_loss, batch.loss_mask, self._ref_logps.popleft(), self.beta)

    def run(self, schedule, data_iterator, num_microbatches: int, forward_only: bool) -> list[dict]:
        batches = [next(data_iterator) for _ in range(num_microbatches)]
        with torch.no_grad():
            refs = schedule(self.reference_step, iter(batches), [self.ref_model], num_microbatches, True)
        self._ref_logps = deque(r["logps"] for r in refs)  # empty before the last stage
        return schedule(self.forward_step, iter(batches), None, num_microbatches, forward_only)


def build_objective(args):
    return DPOObjective(args.dpo_beta) if args.stage == "dpo" else LMObjective()
