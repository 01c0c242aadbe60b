"""DPO preference pairs read from mmap indexed datasets (``tools/preprocess_data.py --preference``).

Such a dataset holds two documents per pair, written together: document 2i is
pair i's prompt + chosen reply, 2i+1 the same prompt + rejected reply, images
stored with both. `PreferencePairs` opens one or more prefixes (`SampleReader`,
mmap; nothing is decoded until a pair is read) and returns
``{"chosen": sample, "rejected": sample}``. A dataset that is not one of pairs
(an odd number of documents, or a pair whose two prompts differ) is refused
naming the file and the document.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .indexed import SampleReader


def _prompt(sample: dict) -> np.ndarray:
    targets = np.flatnonzero(sample["loss_mask"])
    return sample["tokens"][:targets[0] if len(targets) else len(sample["tokens"])]


class PreferencePairs:
    def __init__(self, prefixes: Sequence[str]):
        words = [w for p in prefixes for w in str(p).split()]
        if not words:
            raise ValueError("--data-path is empty")
        if any(_is_number(w) for w in words):
            raise ValueError(f"--data-path {' '.join(words)}: DPO takes preference dataset prefixes, "
                             "not a weighted blend")
        self.readers = [SampleReader(p) for p in words]
        for r in self.readers:
            if len(r) % 2:
                raise ValueError(f"{r.prefix}: {len(r)} documents, not chosen/rejected pairs "
                                 "(convert preference records with tools/preprocess_data.py --preference)")
        self.offsets = np.cumsum([0] + [len(r) // 2 for r in self.readers])
        if self.offsets[-1] == 0:
            raise ValueError(f"no preference pairs in {' '.join(words)}")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"pair {i} out of range ({len(self)} pairs)")
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        reader, j = self.readers[k], 2 * (int(i) - int(self.offsets[k]))
        chosen, rejected = reader.read(j), reader.read(j + 1)
        if not np.array_equal(_prompt(chosen), _prompt(rejected)):
            raise ValueError(f"{reader.prefix}: documents {j} and {j + 1} have different prompts: "
                             "not a chosen/rejected pair (tools/preprocess_data.py --preference writes them)")
        return {"chosen": chosen, "rejected": rejected}


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True
