"""Fitting a sample to a sequence length once its images are expanded: the one rule.

A sample's token ids are UNEXPANDED (one image-token id per image); the
model sees each image as ``image_seq_length`` positions: `expanded_length`
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
               image_seq_length: int) -> tuple[int, int]:
    """(tokens kept, images kept) of the longest prefix of at most `limit` expanded positions.

    `image_token_id` None means the sample has no images (every token counts 1).
    """
    tokens = np.asarray(tokens)
    if image_token_id is None:
        return min(len(tokens), int(limit)), 0
    is_img = tokens == image_token_id
    extra = image_seq_length - 1
    if extra and is_img.any():
        keep = int(np.searchsorted(np.cumsum(1 + extra * is_img.astype(np.int64)), limit, side="right"))
    else:
        keep = min(len(tokens), int(limit))
    return keep, int(np.count_nonzero(is_img[:keep]))
