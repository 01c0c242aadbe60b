"""UHD-style slicing (`data.tiling.UHDSlicing`): LLaVA-UHD's slice grid, the views, and packing.

The grid is checked against a direct transcription of the published rule
(LLaVA-UHD's ``slice_image_minicpm`` with its ``find best grid`` loop, sizes as PIL's
(width, height), grids as [grid_x, grid_y]) on every image size in a sweep of aspect
ratios and resolutions.
"""
import math

import numpy as np
import pytest
import torch

from megatron_sicog.data.image_processing import ImageProcessing
from megatron_sicog.data.tiling import Tiling, UHDSlicing, uhd_slice_grid
from megatron_sicog.model.anyres import pack_image_features


def published_best_grid(original_size, max_slice_nums=7, scale_resolution=336):
    """LLaVA-UHD slice_image_minicpm's grid choice, transcribed: None when the image is not sliced."""
    original_width, original_height = original_size
    log_ratio = math.log(original_width / original_height)
    ratio = original_width * original_height / (scale_resolution * scale_resolution)
    multiple = min(math.ceil(ratio), max_slice_nums)
    if multiple <= 1:
        return None
    candidate_split_grids_nums = []
    for i in [multiple - 1, multiple, multiple + 1]:
        if i == 1 or i > max_slice_nums:
            continue
        candidate_split_grids_nums.append(i)
    candidate_grids = []
    for split_grids_nums in candidate_split_grids_nums:
        m = 1
        while m <= split_grids_nums:
            if split_grids_nums % m == 0:
                candidate_grids.append([m, split_grids_nums // m])
            m += 1
    best_grid = [1, 1]
    min_error = float("inf")
    for grid in candidate_grids:
        error = abs(log_ratio - math.log(grid[0] / grid[1]))
        if error < min_error:
            best_grid = grid
            min_error = error
    return best_grid


def test_slice_grid_is_the_published_rule():
    sizes = [(h, w) for h in (20, 100, 224, 336, 337, 500, 672, 800, 1008, 1344, 2000, 4000)
             for w in (20, 90, 336, 400, 672, 1000, 1024, 1500, 2016, 3000, 5000)]
    seen = set()
    for max_slices in (7, 9, 4):
        for h, w in sizes:
            ref = published_best_grid((w, h), max_slices, 336)
            got = uhd_slice_grid(h, w, max_slices, 336)
            assert got == ((0, 0) if ref is None else (ref[1], ref[0])), (h, w, max_slices)
            assert got[0] * got[1] <= max_slices
            seen.add(got)
    # the sweep reaches wide, tall, square and unsliced grids
    assert {(0, 0), (1, 2), (2, 1), (2, 2), (1, 7), (7, 1)} <= seen


@pytest.fixture
def slicing():
    return UHDSlicing(ImageProcessing.family_default("clip", 32), patch_size=8)


def test_views_tokens_and_packing(slicing):
    rng = np.random.default_rng(0)
    s, g = 32, 4
    exact = rng.integers(0, 256, (2 * s, 3 * s, 3), dtype=np.uint8)  # 6 slices' worth: grid 2 x 3
    assert slicing.grid(2 * s, 3 * s) == (2, 3)
    views = slicing.views(exact)
    assert len(views) == 1 + 6 == slicing.num_views(2 * s, 3 * s)
    assert all(v.shape == (s, s, 3) and v.dtype == np.uint8 for v in views)
    # the image already has the sliced size: the slices are its crops, row-major
    assert all(np.array_equal(views[1 + 3 * i + j], exact[i * s:(i + 1) * s, j * s:(j + 1) * s])
               for i in range(2) for j in range(3))
    small = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)  # under S^2 pixels: the thumbnail alone
    assert slicing.grid(20, 30) == (0, 0) and len(slicing.views(small)) == 1
    assert slicing.num_tokens(20, 30) == g * g
    assert slicing.num_tokens(2 * s, 3 * s) == g * g + 2 * g * (3 * g + 1)  # nothing unpadded, newline per row

    images = [exact, small, rng.integers(0, 256, (40, 150, 3), dtype=np.uint8)]
    pixels, sizes = slicing(images)
    assert pixels.shape == (sum(slicing.num_views(*im.shape[:2]) for im in images), 3, s, s)
    assert sizes.tolist() == [list(im.shape[:2]) for im in images]
    feats = torch.randn(pixels.shape[0], g * g, 8)
    newline = torch.randn(8)
    packed = pack_image_features(feats, sizes, slicing, newline)
    assert [p.shape[0] for p in packed] == slicing.tokens_of(images)
    assert torch.equal(packed[1], feats[7])  # the small image: its thumbnail's features only
    rows, cols = slicing.grid(2 * s, 3 * s)
    # first row of the first image's map: the first feature row of slices 1..3, then the newline
    first_row = torch.cat([feats[1 + j, :g] for j in range(cols)] + [newline[None]])
    assert torch.equal(packed[0][g * g:g * g + cols * g + 1], first_row)


def test_policies_have_distinct_cache_keys(slicing):
    anyres = Tiling(slicing.processing, [[32, 64], [64, 32]], patch_size=8)
    assert slicing.key()["policy"] == "uhd" and anyres.key()["policy"] == "anyres"
    assert slicing.key() != UHDSlicing(slicing.processing, patch_size=8, max_slice_nums=9).key()
    with pytest.raises(ValueError, match="thumbnail"):
        UHDSlicing(slicing.processing, patch_size=8, use_thumbnail=False)
