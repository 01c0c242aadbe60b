"""Packing the vision features of tiled images (LLaVA-NeXT), as transformers' ``pack_image_features`` does.

Each image arrives as its views' projected features ``[views, g*g, H]`` (base view
first when `Tiling.use_thumbnail`, then the tiles row-major). The tiles' features are
laid out as one ``(rows*g) x (cols*g)`` map, the padding of the image's aspect is cut
(the policy's ``kept``: `data.tiling.unpad_slices` for LLaVA-NeXT, nothing for UHD slices;
an image with no tiles is its base view alone), ``image_newline`` is appended to every row, and the rows
are read out row-major behind the base view's features: ``Tiling.num_tokens`` vectors
per image, the number of image-token positions the batch builder made for it.
"""
from __future__ import annotations

import torch

from megatron_sicog.data.tiling import TilingPolicy


def pack_image_features(features: torch.Tensor, image_sizes: torch.Tensor, tiling: TilingPolicy,
                        image_newline: torch.Tensor) -> list[torch.Tensor]:
    """features [sum of views, g*g, H], image_sizes [n, 2] (height, width) -> n tensors [tokens_i, H]."""
    g = tiling.features_per_side
    if features.shape[1] != g * g:
        raise ValueError(f"{features.shape[1]} features per view, expected {g}x{g} for tiling")
    out, start = [], 0
    for height, width in image_sizes.tolist():
        rows, cols = tiling.grid(height, width)
        n_views = tiling.num_views(height, width)
        views = features[start:start + n_views]
        if views.shape[0] != n_views:
            raise ValueError(f"image {len(out)} ({height}x{width}) needs {n_views} views, "
                             f"{views.shape[0]} are left of {features.shape[0]}")
        start += n_views
        base, tiles = (views[:1].flatten(0, 1), views[1:]) if tiling.use_thumbnail else (None, views)
        if rows * cols == 0:
            out.append(base)
            continue
        h = tiles.shape[-1]
        fmap = tiles.reshape(rows, cols, g, g, h).permute(0, 2, 1, 3, 4).reshape(rows * g, cols * g, h)
        rs, cs = tiling.kept(height, width, rows * g, cols * g)
        fmap = fmap[rs, cs]
        newline = image_newline.to(fmap.dtype).expand(fmap.shape[0], 1, h)
        packed = torch.cat([fmap, newline], dim=1).reshape(-1, h)
        out.append(packed if base is None else torch.cat([base, packed]))
    if start != features.shape[0]:
        raise ValueError(f"{features.shape[0]} views for images that take {start}")
    return out
