"""Resumable, data-parallel sample order for training.

* `PretrainingSampler` — Megatron's pretraining sampler: walks the (already
  shuffled, epoch-repeated) dataset linearly from ``consumed_samples``; each
  global step takes ``micro_batch_size * data_parallel_size`` samples and hands
  rank r its slice.
* `ResumableDataLoader` — a ``torch.utils.data.DataLoader`` over that sampler
  that counts the samples it has actually RETURNED (workers prefetch ahead, so
  the sampler's own position is not the training position).
  ``state_dict() -> {"consumed_samples": n}``; a loader built with (or loaded
  from) that state yields exactly the batches that would have followed.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch


class PretrainingSampler:
    """Batches of indices for one data-parallel rank, starting at `consumed_samples`."""

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int,
                 data_parallel_rank: int = 0, data_parallel_size: int = 1) -> None:
        if total_samples <= 0:
            raise ValueError(f"no samples to consume (total_samples={total_samples})")
        if not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(f"data_parallel_rank {data_parallel_rank} not in [0, {data_parallel_size})")
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.rank = data_parallel_rank
        self.step = micro_batch_size * data_parallel_size
        if consumed_samples > total_samples:
            raise ValueError(f"consumed_samples {consumed_samples} > total_samples {total_samples}")

    def __len__(self) -> int:
        return (self.total_samples - self.consumed_samples) // self.step

    def __iter__(self) -> Iterator[list[int]]:
        lo = self.rank * self.micro_batch_size
        for start in range(self.consumed_samples, self.total_samples - self.step + 1, self.step):
            yield list(range(start + lo, start + lo + self.micro_batch_size))


def collate_as_list(batch: list) -> list:
    """Default collate: the list of sample dicts (the trainer pads and expands)."""
    return batch


class ResumableDataLoader:
    """Iterate micro-batches; `state_dict` is the exact resume position."""

    def __init__(self, dataset, micro_batch_size: int, data_parallel_rank: int = 0,
                 data_parallel_size: int = 1, consumed_samples: int = 0, num_workers: int = 0,
                 collate_fn: Optional[Callable] = None, pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size
        self.num_workers = num_workers
        self.collate_fn = collate_fn or collate_as_list
        self.pin_memory = pin_memory
        self.consumed_samples = consumed_samples
        self._it: Optional[Iterator] = None

    def _make_iter(self) -> Iterator:
        sampler = PretrainingSampler(len(self.dataset), self.consumed_samples, self.micro_batch_size,
                                     self.data_parallel_rank, self.data_parallel_size)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
            collate_fn=self.collate_fn, pin_memory=self.pin_memory,
            persistent_workers=False)
        return iter(loader)

    def __iter__(self) -> "ResumableDataLoader":
        return self

    def __next__(self):
        if self._it is None:
            self._it = self._make_iter()
        batch = next(self._it)
        self.consumed_samples += self.micro_batch_size * self.data_parallel_size
        return batch

    def state_dict(self) -> dict:
        return {"consumed_samples": self.consumed_samples}

    def load_state_dict(self, state: dict) -> None:
        self.consumed_samples = int(state["consumed_samples"])
        self._it = None
