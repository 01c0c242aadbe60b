"""Fitting a sample to a sequence length once its images are expanded: the one rule.

A sample's token ids are UNEXPANDED (one image-token id per image); the
model sees each image as ``image_seq_length`` positions (one number, or one per
image when tiled images expand by their size, `data.tiling`): `expanded_length`
counts them. `fit_prefix` gives
the longest prefix whose expanded length fits ``limit`` and how many images
it keeps — an image whose run would be cut is dropped with its token and
everything after it, so positions and image features always agree. The
converter (`data.preprocess`), the dataset (`data.dataset`) and the collator
(`model.batch`) all cut with it.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np


def expanded_length(num_tokens, num_images, image_seq_length: int):
    """Positions of a sample (or of arrays of them) once each image token becomes `image_seq_length`."""
    return num_tokens + num_images * (image_seq_length - 1)


def fit_prefix(tokens: Union[Sequence[int], np.ndarray], limit: int, image_token_id: Optional[int],
               image_seq_length: Union[int, Sequence[int]]) -> tuple[int, int]:
    """(tokens kept, images kept) of the longest prefix of at most `limit` expanded positions.

    `image_token_id` None means the sample has no images (every token counts 1);
    `image_seq_length` a sequence: the positions of each image token in order.
    """
    tokens = np.asarray(tokens)
    if image_token_id is None:
        return min(len(tokens), int(limit)), 0
    is_img = tokens == image_token_id
    lengths = image_positions(is_img, image_seq_length)
    if is_img.any() and (lengths != 1).any():
        keep = int(np.searchsorted(np.cumsum(lengths), limit, side="right"))
    else:
        keep = min(len(tokens), int(limit))
    return keep, int(np.count_nonzero(is_img[:keep]))


def image_positions(is_img: np.ndarray, image_seq_length: Union[int, Sequence[int]]) -> np.ndarray:
    """Expanded positions of every token: 1, or its image's length (per-image lengths in token order)."""
    out = np.ones(len(is_img), dtype=np.int64)
    if np.ndim(image_seq_length) == 0:
        out[is_img] = int(image_seq_length)
        return out
    lengths = np.asarray(image_seq_length, dtype=np.int64)
    if len(lengths) != int(is_img.sum()):
        raise ValueError(f"{len(lengths)} image lengths for {int(is_img.sum())} image tokens")
    out[is_img] = lengths
    return out
