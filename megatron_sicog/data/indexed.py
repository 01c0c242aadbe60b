"""The on-disk layout of a SICOG sample in a megatron-core multimodal IndexedDataset.

One ``<prefix>.bin/.idx`` pair, written with megatron-core's
``IndexedDatasetBuilder(bin, dtype, multimodal=True)`` and opened by its
``IndexedDataset(prefix, multimodal=True)``. One *document* is one sample:

====  =====  ===============================================================
item  mode   content
====  =====  ===============================================================
0     0      token ids (unexpanded: one ``<image>`` id per image)
1     0      loss spans ``s0, e0, s1, e1, ...``: the ``[s, e)`` token ranges
             whose tokens are targets (assistant replies); the mask is
             rebuilt from them (2 numbers per reply instead of 1 per token)
2..   1      one item per image, in placeholder order: the image bytes packed
             into the dataset dtype with PKCS#7 padding (1..itemsize pad
             bytes, each equal to the pad length), so the byte length is exact
====  =====  ===============================================================

dtype (megatron's rule): ``uint16`` when the vocabulary has < 65500 ids, else
``int32``; with ``uint16`` a sample may hold at most 65535 tokens (span ends).
Image bytes are whatever `image.decode_image` reads: the source file as
stored (JPEG/PNG/...; the converter's default) or raw resized pixels as PPM.

`SampleWriter` wraps the builder (temp files + rename: the pair appears only
when complete); `SampleReader` reads samples back as the trainer's dicts.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from megatron_sicog.guards import fsync_dir, make_temp

MODE_TEXT, MODE_IMAGE = 0, 1
ITEMS_BEFORE_IMAGES = 2
UINT16_MAX_TOKENS = 65535


def token_dtype(vocab_size: int) -> type:
    """megatron's DType.optimal_dtype, without importing megatron-core."""
    return np.uint16 if vocab_size < 65500 else np.int32


def max_tokens_for(dtype) -> int:
    return UINT16_MAX_TOKENS if np.dtype(dtype) == np.uint16 else 2**31 - 1


def pack_bytes(data: bytes, dtype) -> np.ndarray:
    """Bytes -> array of `dtype` words, PKCS#7-padded to a whole number of words."""
    size = np.dtype(dtype).itemsize
    pad = size - len(data) % size
    return np.frombuffer(bytes(data) + bytes([pad]) * pad, dtype=dtype)


def unpack_bytes(words: np.ndarray) -> bytes:
    """Inverse of `pack_bytes` (a zero-copy view would outlive the mmap: copy)."""
    raw = words.view(np.uint8)
    pad = int(raw[-1])
    if not 1 <= pad <= words.dtype.itemsize:
        raise ValueError(f"corrupt image item: padding byte {pad}")
    return raw[:-pad].tobytes()


def doc_items(tokens: np.ndarray, spans: Sequence[tuple[int, int]], images: Sequence[bytes], dtype):
    """The items (arrays) and modes of one sample, in layout order."""
    items = [np.asarray(tokens, dtype=dtype), np.asarray(spans, dtype=dtype).reshape(-1)]
    items += [pack_bytes(b, dtype) for b in images]
    return items, [MODE_TEXT, MODE_TEXT] + [MODE_IMAGE] * len(images)


class SampleWriter:
    """Write samples to ``<prefix>.bin/.idx`` atomically through IndexedDatasetBuilder.

    Use as a context manager; on an exception the temp files are removed and
    any existing output is untouched. `add_documents` writes a whole chunk of
    documents with ONE write; the index is the same as add_item x k +
    end_document per document (see test_preprocess).
    """

    def __init__(self, prefix: Union[str, Path], dtype):
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        self.prefix = str(prefix)
        self.dtype = np.dtype(dtype).type
        Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        self._tmp_prefix = tmp = str(make_temp(os.path.abspath(self.prefix), ".partial"))
        self.builder = IndexedDatasetBuilder(tmp + ".bin", dtype=self.dtype, multimodal=True)
        self.num_docs = 0
        self.nbytes = 0

    def add_sample(self, tokens, spans, images: Sequence[bytes] = ()) -> None:
        import torch

        items, modes = doc_items(tokens, spans, images, self.dtype)
        for arr, mode in zip(items, modes):
            self.builder.add_item(torch.from_numpy(arr), mode)
            self.nbytes += arr.nbytes
        self.builder.end_document()
        self.num_docs += 1

    def add_documents(self, flat: np.ndarray, item_lengths: Sequence[int], item_modes: Sequence[int],
                      items_per_doc: Sequence[int]) -> None:
        """Append many documents at once: `flat` is all their items concatenated."""
        from megatron_sicog.mcore_compat import builder_append_documents

        flat = np.ascontiguousarray(flat, dtype=self.dtype)
        if int(np.sum(item_lengths, dtype=np.int64)) != flat.size or len(item_lengths) != len(item_modes):
            raise ValueError("add_documents: item lengths do not cover the data")
        builder_append_documents(self.builder, flat, item_lengths, item_modes, items_per_doc)
        self.num_docs += len(items_per_doc)
        self.nbytes += flat.nbytes

    def add_index(self, prefix: Union[str, Path]) -> None:
        """Append a whole existing dataset (a shard)."""
        self.builder.add_index(str(prefix))

    def __enter__(self) -> "SampleWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.builder.finalize(self._tmp_prefix + ".idx")
            self._publish()
        else:
            from megatron_sicog.mcore_compat import builder_abort

            builder_abort(self.builder)
        self._cleanup()

    def _publish(self) -> None:
        """Rename .bin then .idx into place; an old .idx goes first so a new .bin
        never pairs with a stale index."""
        for fsync_path in (self._tmp_prefix + ".bin", self._tmp_prefix + ".idx"):
            with open(fsync_path, "rb+") as f:
                os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.prefix + ".idx")
        os.replace(self._tmp_prefix + ".bin", self.prefix + ".bin")
        os.replace(self._tmp_prefix + ".idx", self.prefix + ".idx")
        fsync_dir(os.path.dirname(os.path.abspath(self.prefix)))

    def _cleanup(self) -> None:
        for p in (self._tmp_prefix, self._tmp_prefix + ".bin", self._tmp_prefix + ".idx"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


class SampleReader:
    """Random access to the samples of one ``<prefix>.bin/.idx`` (mmap)."""

    def __init__(self, prefix: Union[str, Path], mmap: bool = True):
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        self.prefix = str(prefix)
        self.check_exists(self.prefix)
        self.ds = IndexedDataset(self.prefix, multimodal=True, mmap=mmap)
        index = self.ds.index
        self.doc_starts = index.document_indices  # item index of each document's first item
        if index.sequence_modes is None:
            raise ValueError(f"{self.prefix}: not a multimodal dataset")
        items = np.diff(self.doc_starts)
        if len(items) and items.min() < ITEMS_BEFORE_IMAGES:
            raise ValueError(f"{self.prefix}: not a SICOG sample dataset (a document has < 2 items)")
        self.num_images = (items - ITEMS_BEFORE_IMAGES).astype(np.int64)
        self.num_tokens = index.sequence_lengths[self.doc_starts[:-1]].astype(np.int64)

    @staticmethod
    def check_exists(prefix: Union[str, Path]) -> None:
        """Raise FileNotFoundError naming the missing file of ``<prefix>.bin/.idx``."""
        for ext in (".bin", ".idx"):
            if not os.path.isfile(f"{prefix}{ext}"):
                raise FileNotFoundError(f"dataset file missing: {prefix}{ext}")

    def __len__(self) -> int:
        return len(self.doc_starts) - 1

    def read(self, i: int, decode_images: bool = True) -> dict:
        """Sample `i`: tokens int64, loss_mask uint8, images (uint8 HxWx3, or raw bytes)."""
        from .image import decode_image

        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {self.prefix} ({len(self)} samples)")
        first = int(self.doc_starts[i])
        tokens = self.ds[first][0].astype(np.int64)
        spans = self.ds[first + 1][0].astype(np.int64).reshape(-1, 2)
        mask = np.zeros(len(tokens), dtype=np.uint8)
        for s, e in spans:
            mask[s:e] = 1
        images = []
        for j in range(first + ITEMS_BEFORE_IMAGES, int(self.doc_starts[i + 1])):
            data = unpack_bytes(self.ds[j][0])
            images.append(decode_image(data) if decode_images else data)
        return {"tokens": tokens, "loss_mask": mask, "images": images,
                "segment_ids": np.ones(len(tokens), dtype=np.int32)}

    def image_bytes(self, i: int) -> list[bytes]:
        return self.read(i, decode_images=False)["images"]


def open_dtype(prefix: Union[str, Path]) -> Optional[type]:
    """The dtype recorded in ``<prefix>.idx`` (reads the header only)."""
    from megatron_sicog.mcore_compat import index_file_dtype

    return index_file_dtype(f"{prefix}.idx")
