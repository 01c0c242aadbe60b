"""Dataset samples -> model batches: image-token expansion, shift, padding, masks.

A sample (see `data/`) holds UNEXPANDED token ids (one image-token id per
image), a loss mask aligned with them (1 = this token is a target), the
images in order, and segment ids (1..k when k samples were packed).

`collate` expands every image token into `num_image_tokens` copies (the
positions the model fills with patch features), then shifts: inputs are
tokens[:-1], labels tokens[1:], loss mask mask[1:] — so image and prompt
positions never carry loss. The attention mask is causal and, for packed
sequences, block-diagonal over segments (no cross-sample attention; RoPE is
relative, so continuing positions inside a pack change nothing).

Tiled images (`tiling`, a `data.tiling.Tiling`): each image token expands to
``tiling.num_tokens(height, width)`` positions, so samples of one batch carry
different numbers of image positions; ``Batch.images`` holds every image's views
and ``Batch.image_sizes`` the (height, width) of each image, in batch order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from megatron_sicog.data.length import fit_prefix, image_positions


@dataclass
class Batch:
    input_ids: torch.Tensor  # [b, s] int64
    labels: torch.Tensor  # [b, s] int64
    loss_mask: torch.Tensor  # [b, s] float32
    position_ids: torch.Tensor  # [b, s] int64
    attention_mask: torch.Tensor  # [b, 1, s, s] bool, True = masked out
    images: Optional[torch.Tensor]  # [n, 3, H, W] float or None (tiled: every image's views)
    image_sizes: Optional[torch.Tensor] = None  # [n_images, 2] int64 (height, width); tiled images only

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(*(move(getattr(self, f)) for f in self.__dataclass_fields__))


def expand_image_tokens(tokens: np.ndarray, loss_mask: np.ndarray, segment_ids: np.ndarray,
                        image_token_id: int, num_image_tokens):
    """Repeat each image token `num_image_tokens` times (one number, or one per image; mask 0, same segment)."""
    is_img = tokens == image_token_id
    if not is_img.any():
        return tokens, loss_mask, segment_ids
    reps = image_positions(is_img, num_image_tokens)
    mask = np.repeat(loss_mask, reps)
    mask[np.repeat(is_img, reps)] = 0
    return np.repeat(tokens, reps), mask, np.repeat(segment_ids, reps)


def attention_mask_from_segments(segment_ids: torch.Tensor) -> torch.Tensor:
    """[b, s] segment ids -> [b, 1, s, s] bool mask (True = masked): causal within a segment."""
    s = segment_ids.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return ~(causal[None] & same)[:, None]


def collate(samples: Sequence[dict], seq_length: int, image_token_id: int, num_image_tokens: int,
            pad_id: int, image_transform: Optional[Callable] = None, tiling=None) -> Batch:
    """Build a Batch of exactly `seq_length` positions from dataset samples.

    Over-long samples are cut to seq_length+1 expanded tokens by
    `data.length.fit_prefix` (an image whose patch run would be cut is dropped,
    with what follows it: those positions are padding without loss). With
    `tiling`, images are tiled (its views replace `image_transform`).
    """
    b = len(samples)
    ids = np.full((b, seq_length + 1), pad_id, dtype=np.int64)
    mask = np.zeros((b, seq_length + 1), dtype=np.float32)
    segs = np.zeros((b, seq_length + 1), dtype=np.int64)  # padding: segment 0
    images = []
    for i, smp in enumerate(samples):
        tok = np.asarray(smp["tokens"], dtype=np.int64)
        lm = np.asarray(smp["loss_mask"], dtype=np.float32)
        seg = np.asarray(smp.get("segment_ids", np.ones(len(tok), dtype=np.int64)), dtype=np.int64)
        imgs = list(smp.get("images") or [])
        n_img = int((tok == image_token_id).sum())
        if n_img != len(imgs):
            raise ValueError(f"sample {i} has {n_img} image tokens but {len(imgs)} images")
        per_image = num_image_tokens
        if tiling is not None:
            from megatron_sicog.data.image import decode_image

            imgs = [decode_image(im) for im in imgs]
            per_image = [tiling.num_tokens(*im.shape[:2]) for im in imgs]
        keep, n_keep = fit_prefix(tok, seq_length + 1, image_token_id, per_image)
        tok, lm, seg, imgs = tok[:keep], lm[:keep], seg[:keep], imgs[:n_keep]
        if tiling is not None:
            per_image = per_image[:n_keep]
        tok, lm, seg = expand_image_tokens(tok, lm, seg, image_token_id, per_image)
        n = len(tok)
        ids[i, :n], mask[i, :n], segs[i, :n] = tok, lm, seg
        images.extend(imgs)
    input_ids = torch.from_numpy(ids[:, :-1].copy())
    labels = torch.from_numpy(ids[:, 1:].copy())
    loss_mask = torch.from_numpy(mask[:, 1:].copy())
    seg_in = torch.from_numpy(segs[:, :-1].copy())
    # padding attends only to itself-as-a-segment; it carries no loss
    attention_mask = attention_mask_from_segments(seg_in)
    position_ids = torch.arange(seq_length).expand(b, seq_length).contiguous()
    img_tensor = sizes = None
    if images and tiling is not None:
        img_tensor, sizes = tiling(images)
    elif images:
        img_tensor = image_transform(images) if image_transform is not None else torch.stack(
            [torch.as_tensor(im, dtype=torch.float32) for im in images])
    return Batch(input_ids, labels, loss_mask, position_ids, attention_mask, img_tensor, sizes)
