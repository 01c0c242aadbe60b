"""Epoch-shuffled views for datasets that megatron's dataset builder did not shuffle.

Indexed datasets from `data.dataset.build_train_valid_datasets` are already
shuffled and repeated to the requested number of samples (megatron's
machinery); the trainer walks them linearly with `data.sampler.ResumableDataLoader`,
whose position is the consumed-sample count. Mock data and DPO pairs come as
plain item lists: `EpochShuffledView` presents them the same way — global
sample k is item ``perm_e[k mod N]`` with ``e = k div N`` and ``perm_e`` seeded
by (seed, epoch) — so one loader and one resume rule serve every stage.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class EpochShuffledView:
    def __init__(self, items: Sequence, num_samples: int, seed: int):
        if len(items) == 0:
            raise ValueError("dataset is empty")
        self.items, self.num_samples, self.seed = items, num_samples, seed
        self._epoch, self._perm = -1, None

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, k: int):
        epoch, j = divmod(int(k), len(self.items))
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.items))
            self._epoch = epoch
        return self.items[int(self._perm[j])]
