"""Resumable micro-batch iterators over any indexable dataset.

The position of a run is one number, the count of consumed samples (as in
Megatron-LM's pretraining sampler). Global sample k of the run is dataset item
``perm_e[k mod N]`` with ``e = k div N`` and ``perm_e`` a permutation seeded by
(seed, epoch) — so a resumed run that restores `consumed_samples` sees exactly
the sample sequence the uninterrupted run would have seen. Each global batch
is split into micro-batches of ``micro_batch_size x dp``; data-parallel rank r
takes its slice of each.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np


class ResumableSampler:
    def __init__(self, num_items: int, micro_batch_size: int, dp_rank: int, dp_size: int,
                 seed: int, shuffle: bool = True, consumed_samples: int = 0):
        if num_items <= 0:
            raise ValueError("dataset is empty")
        self.n, self.mbs, self.rank, self.dp = num_items, micro_batch_size, dp_rank, dp_size
        self.seed, self.shuffle = seed, shuffle
        self.consumed_samples = consumed_samples
        self._perm_epoch, self._perm = -1, None

    def _item(self, k: int) -> int:
        epoch, j = divmod(k, self.n)
        if not self.shuffle:
            return j
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return int(self._perm[j])

    def next_micro_batch(self) -> list[int]:
        """Item indices of this rank's next micro-batch; advances by mbs x dp samples."""
        start = self.consumed_samples + self.rank * self.mbs
        idx = [self._item(k) for k in range(start, start + self.mbs)]
        self.consumed_samples += self.mbs * self.dp
        return idx

    def state_dict(self) -> dict:
        return {"consumed_samples": self.consumed_samples}

    def load_state_dict(self, state: dict) -> None:
        self.consumed_samples = int(state["consumed_samples"])


class MicroBatchIterator:
    """Yields collated micro-batches forever: ``collate_fn([dataset[i] for i in idx])``."""

    def __init__(self, dataset: Sequence, sampler: ResumableSampler, collate_fn: Callable):
        self.dataset, self.sampler, self.collate_fn = dataset, sampler, collate_fn

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        return self.collate_fn([self.dataset[i] for i in self.sampler.next_micro_batch()])
