"""Training dataset over converted ``.bin/.idx`` files, through megatron-core's blend machinery.

* `SICOGDataset` is a megatron-core ``MegatronDataset`` (mid-level dataset):
  ``BlendedMegatronDatasetBuilder`` builds it per ``--data-path`` prefix and
  split and mixes several with ``BlendedDataset`` by weight.
* Shuffling is deterministic: epoch ``e`` of a dataset is a permutation drawn
  from ``(random_seed, e, crc32(file name), split)`` (the prefix's name, not
  its directory, so a run's order does not depend on where it is checked out);
  as many epochs as
  ``num_samples`` needs are laid end to end.
* ``pack=True`` packs consecutive samples of the shuffled order greedily into
  sequences of at most ``sequence_length`` tokens (images counted as
  ``image_seq_length`` tokens each); ``segment_ids`` number the packed samples
  1..k so the trainer can build a block-diagonal causal mask.
  `SICOGDataset.packing_summary()` reports the padding saved.
* A sample is ``{"tokens": int64[L], "loss_mask": uint8[L], "images": [uint8
  HxWx3], "segment_ids": int32[L]}``, tokens unexpanded (one image token per
  image). A sample longer than ``sequence_length`` is cut (images whose token
  is cut are dropped; needs ``image_token_id`` when it has images).
* ``tiling`` (a `data.tiling.Tiling`): images expand by their size
  (``Tiling.num_tokens``), for packing and cutting alike; the lengths are read once
  at construction from the stored images' headers (no pixels are decoded). Its settings
  (`Tiling.key`) are part of the cache key (``unique_description``), so a blend cached
  under ``path_to_cache`` without tiling is never reused with it.
* `build_train_valid_datasets(data_path, seq_length, seed, num_train_samples,
  num_valid_samples, split="98,2", pack=False, ...)` is what the trainer calls.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.blended_megatron_dataset_config import BlendedMegatronDatasetConfig
from megatron.core.datasets.megatron_dataset import MegatronDataset
from megatron.core.datasets.utils import Split, get_blend_from_list

from .indexed import SampleReader
from .length import expanded_length, fit_prefix

logger = logging.getLogger(__name__)


@dataclass
class SICOGDatasetConfig(BlendedMegatronDatasetConfig):
    """megatron-core's dataset config plus packing and image-length settings."""

    pack: bool = False
    image_seq_length: int = 1          # tokens per image after the trainer expands it
    image_token_id: Optional[int] = None
    decode_images: bool = True         # False: "images" holds the stored bytes
    tiling: Optional[object] = None    # data.tiling.Tiling: each image expands to tiling.num_tokens(h, w)

    @property
    def tiling_key(self) -> Optional[dict]:
        """The tiling's settings (`Tiling.key`) in the datasets' cache key: tiled lengths change packing and
        the blend's sample counts, so indices cached without tiling (or with other grids) are never reused."""
        return None if self.tiling is None else self.tiling.key()


def pack_greedy(order: np.ndarray, lengths: np.ndarray, capacity: int) -> np.ndarray:
    """Bin boundaries for packing docs in `order`: bin b is order[bounds[b]:bounds[b+1]].

    Docs are taken in order; a bin is closed when the next doc would overflow
    `capacity`. A doc longer than `capacity` gets a bin of its own.
    """
    bounds = [0]
    used = 0
    for i, doc in enumerate(order):
        n = int(lengths[doc])
        if used and used + n > capacity:
            bounds.append(i)
            used = 0
        used += n
    bounds.append(len(order))
    return np.asarray(bounds, dtype=np.int64)


def truncate_sample(sample: dict, limit: int, image_seq_length: int, image_token_id: Optional[int],
                    tiling=None) -> dict:
    """Cut a sample to `limit` expanded tokens (`length.fit_prefix`); with `tiling`, images by their size."""
    tokens, images = sample["tokens"], sample["images"]
    per_image = image_seq_length if tiling is None else tiling.tokens_of(images)
    length = (expanded_length(len(tokens), len(images), image_seq_length) if tiling is None
              else len(tokens) + sum(per_image) - len(images))
    if length <= limit:
        return sample
    if images and image_token_id is None:
        raise ValueError("a sample with images is longer than sequence_length: "
                         "set image_token_id in the dataset config to truncate it")
    keep, n_img = fit_prefix(tokens, limit, image_token_id if images else None, per_image)
    return {"tokens": tokens[:keep], "loss_mask": sample["loss_mask"][:keep],
            "images": images[:n_img], "segment_ids": sample["segment_ids"][:keep]}


class SICOGDataset(MegatronDataset):
    """A shuffled, epoch-repeated (optionally packed) view of one dataset split."""

    def __init__(self, dataset: SampleReader, dataset_path: Optional[str], indices: np.ndarray,
                 num_samples: Optional[int], index_split: Split, config: SICOGDatasetConfig) -> None:
        super().__init__(dataset, dataset_path, indices, num_samples, index_split, config)
        self.reader = dataset
        if len(indices) == 0 and num_samples:
            raise ValueError(f"{dataset_path}: the {index_split.name} split has no documents but "
                             f"{num_samples} samples were requested (check --split)")
        if config.tiling is None:
            self.lengths = expanded_length(dataset.num_tokens, dataset.num_images, config.image_seq_length)
        else:
            self.lengths = tiled_lengths(dataset, config.tiling)
        seed_parts = [config.random_seed, zlib.crc32(Path(dataset_path).name.encode()), index_split.value]
        target = num_samples if num_samples else None
        orders, bounds, n_seq, epoch = [], [], 0, 0
        while len(indices):
            rng = np.random.default_rng(seed_parts + [epoch])
            order = indices[rng.permutation(len(indices))].astype(np.int64)
            if config.pack:
                b = pack_greedy(order, self.lengths, config.sequence_length)
                bounds.append(b[:-1] + epoch * len(indices))
                n_seq += len(b) - 1
            else:
                n_seq += len(order)
            orders.append(order)
            epoch += 1
            if target is None or n_seq >= target:
                break
        self.epochs = epoch
        self.doc_order = np.concatenate(orders) if orders else np.zeros(0, dtype=np.int64)
        if config.pack:
            self.bounds = np.concatenate(bounds + [np.asarray([len(self.doc_order)])])
        else:
            self.bounds = np.arange(len(self.doc_order) + 1, dtype=np.int64)

    @staticmethod
    def numel_low_level_dataset(low_level_dataset: SampleReader) -> int:
        return len(low_level_dataset)

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: SICOGDatasetConfig) -> SampleReader:
        return SampleReader(dataset_path, mmap=config.mmap_bin_files)

    @staticmethod
    def _key_config_attributes() -> List[str]:
        return ["random_seed", "sequence_length", "split", "split_matrix", "pack", "image_seq_length", "tiling_key"]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def docs_of(self, idx: int) -> np.ndarray:
        """Document ids (in the .bin) that make up sample `idx`."""
        return self.doc_order[self.bounds[idx]:self.bounds[idx + 1]]

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < len(self):
            raise IndexError(f"sample {idx} out of range ({len(self)} samples)")
        cfg: SICOGDatasetConfig = self.config
        parts = []
        for k, doc in enumerate(self.docs_of(int(idx)), start=1):
            s = self.reader.read(int(doc), decode_images=cfg.decode_images)
            s["segment_ids"] *= k
            parts.append(s)
        if len(parts) == 1:
            return truncate_sample(parts[0], cfg.sequence_length, cfg.image_seq_length, cfg.image_token_id,
                                   cfg.tiling)
        return {key: np.concatenate([p[key] for p in parts]) for key in ("tokens", "loss_mask", "segment_ids")} | {
            "images": [im for p in parts for im in p["images"]]}

    def packing_summary(self) -> dict:
        """Padding with and without packing over the first epoch of this split."""
        n_docs = len(self.indices)
        docs = self.doc_order[:n_docs]
        tokens = int(np.minimum(self.lengths[docs], self.config.sequence_length).sum()) if n_docs else 0
        n_seq = int(np.searchsorted(self.bounds, n_docs, side="left")) if self.config.pack else n_docs
        pad_unpacked = n_docs * self.config.sequence_length - tokens
        pad_packed = n_seq * self.config.sequence_length - tokens
        return {"samples": n_docs, "sequences": n_seq, "tokens": tokens,
                "padding_unpacked": pad_unpacked, "padding_packed": pad_packed,
                "padding_saved": (1 - pad_packed / pad_unpacked) if pad_unpacked else 0.0}


def tiled_lengths(reader: SampleReader, tiling) -> np.ndarray:
    """Expanded length of every document when its images are tiled (image headers read, not decoded)."""
    out = np.asarray(reader.num_tokens, dtype=np.int64).copy()
    for i in np.flatnonzero(np.asarray(reader.num_images)):
        out[i] += sum(n - 1 for n in tiling.tokens_of(reader.image_bytes(int(i))))
    return out


def parse_data_path(data_path: Union[str, Sequence[str]]):
    """``"0.7 a 0.3 b"`` / ``["0.7", "a", "0.3", "b"]`` / ``"a b"`` -> megatron blend tuple."""
    items = data_path.split() if isinstance(data_path, str) else [w for s in data_path for w in str(s).split()]
    if not items:
        raise ValueError("--data-path is empty")
    blend = get_blend_from_list(items)
    for prefix in blend[0]:
        SampleReader.check_exists(prefix)
    if blend[1] is not None and any(w < 0 for w in blend[1]):
        raise ValueError(f"--data-path weights must be >= 0, got {blend[1]}")
    return blend


def build_train_valid_datasets(data_path: Union[str, Sequence[str]], seq_length: int, seed: int,
                               num_train_samples: int, num_valid_samples: int, split: str = "98,2",
                               pack: bool = False, image_seq_length: int = 1,
                               image_token_id: Optional[int] = None, path_to_cache: Optional[str] = None,
                               decode_images: bool = True, tiling=None):
    """(train, valid) datasets for ``--data-path`` with weights; valid is None for an empty split."""
    config = SICOGDatasetConfig(
        random_seed=seed, sequence_length=seq_length, blend=parse_data_path(data_path), split=split,
        path_to_cache=path_to_cache, pack=pack, image_seq_length=image_seq_length,
        image_token_id=image_token_id, decode_images=decode_images, tiling=tiling)
    sizes = [num_train_samples, num_valid_samples, 0]
    train, valid, _ = BlendedMegatronDatasetBuilder(SICOGDataset, sizes, lambda: True, config).build()
    return train, valid
