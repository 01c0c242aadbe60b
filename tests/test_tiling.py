"""Any-resolution tiling equals transformers' LLaVA-NeXT: pixels, grid shapes and tokens per image.

Tolerance: none. `data.tiling.Tiling` gives the tensors of ``LlavaNextImageProcessor``
(PIL backend) bit for bit on wide, tall and near-square non-square images, and its
token count is the length transformers' ``pack_image_features`` gives (unpadding and
``image_newline``) for every grid shape.
"""
import numpy as np
import pytest
import torch

from megatron_sicog.data.image_processing import ImageProcessing, ImageProcessorError
from megatron_sicog.data.tiling import (Tiling, grids_up_to, llava_next_processor_class, processing_from_llava_next,
                                        select_best_resolution, tiling_for, unpadded_shape)
from megatron_sicog.model.presets import VisionArgs

S = 32
PINS = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]  # LLaVA-NeXT's default grids at a 32 px tile
SHAPES = [(40, 117), (150, 47), (61, 83), (21, 300), (33, 31)]  # (height, width): wide, tall, near-square, ...


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SHAPES]


def _hf(pins=PINS, size=S):
    return llava_next_processor_class()(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                        image_grid_pinpoints=pins)


def test_views_equal_llava_next_image_processor():
    ours = Tiling(ImageProcessing.family_default("clip", S), PINS, patch_size=8)
    hf = _hf()
    for image in _images():
        want = hf(images=[image], return_tensors="pt")
        got, sizes = ours([image])
        assert torch.equal(sizes, want["image_sizes"])
        assert got.shape[0] == ours.num_views(*image.shape[:2]) > 1
        assert torch.equal(got, want["pixel_values"][0, :got.shape[0]])


def test_batch_of_images_concatenates_views_image_by_image():
    ours = Tiling(ImageProcessing.family_default("clip", S), PINS, patch_size=8)
    images = _images(1)[:3]
    got, sizes = ours(images)
    assert sizes.tolist() == [list(im.shape[:2]) for im in images]
    parts = [ours([im])[0] for im in images]
    assert torch.equal(got, torch.cat(parts))


def test_grid_choice_is_transformers_rule():
    from transformers.image_processing_utils import select_best_resolution as hf_select

    rng = np.random.default_rng(3)
    pins = grids_up_to(6, 336)
    for _ in range(200):
        h, w = int(rng.integers(10, 3000)), int(rng.integers(10, 3000))
        assert select_best_resolution(h, w, pins) == tuple(hf_select((h, w), pins))


def _hf_token_count(height, width, pins, tile, patch):
    """Length of transformers' pack_image_features output for one image (the model's own code)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig
    from transformers.models.llava_next.modeling_llava_next import LlavaNextModel

    cfg = LlavaNextConfig(vision_config=CLIPVisionConfig(image_size=tile, patch_size=patch), image_grid_pinpoints=pins,
                          text_config=LlamaConfig(hidden_size=4, num_attention_heads=1, num_key_value_heads=1))
    g = tile // patch
    rows, cols = select_best_resolution(height, width, pins)
    feats = [torch.zeros(1 + (rows // tile) * (cols // tile), g * g, 4)]
    model = LlavaNextModel.__new__(LlavaNextModel)
    model.config = cfg
    packed, lens = LlavaNextModel.pack_image_features(model, feats, torch.tensor([[height, width]]), "default",
                                                      torch.zeros(4))
    return int(lens[0])


@pytest.mark.parametrize("tile,patch", [(32, 8), (336, 14)])
def test_token_count_per_grid_shape_is_transformers(tile, patch):
    pins = [[tile, 2 * tile], [2 * tile, tile], [2 * tile, 2 * tile], [3 * tile, tile], [tile, 3 * tile]]
    t = Tiling(ImageProcessing.family_default("clip", tile), pins, patch_size=patch)
    for h, w in [(tile, 2 * tile), (2 * tile, tile), (2 * tile, 2 * tile), (3 * tile, tile), (tile, 3 * tile),
                 (40, 117), (150, 47), (61, 83), (1080, 1920), (1920, 1080), (500, 2000)]:
        assert t.num_tokens(h, w) == _hf_token_count(h, w, pins, tile, patch), (h, w)


def test_unpadded_shape_cuts_the_padding_of_the_aspect():
    assert unpadded_shape(100, 200, 48, 48) == (24, 48)  # a 2:1 image in a square map: half the rows
    assert unpadded_shape(200, 100, 48, 48) == (48, 24)
    assert unpadded_shape(100, 100, 48, 48) == (48, 48)


def test_single_view_default_and_vision_args():
    assert tiling_for(VisionArgs()) is None
    t = tiling_for(VisionArgs(image_size=32, patch_size=8, image_grid_pinpoints=PINS))
    assert t.grid(40, 117) == (1, 3) and t.num_views(40, 117) == 4
    assert t.num_tokens(40, 117) == 16 + 4 * 13  # 40x117 in a 4x12 map keeps all 4 rows (+ newline each)
    no_thumb = tiling_for(VisionArgs(image_size=32, patch_size=8, image_grid_pinpoints=PINS, use_thumbnail=False))
    assert no_thumb.num_views(40, 117) == 3 and no_thumb.num_tokens(40, 117) == 4 * 13
    assert len(no_thumb.views(_images()[0])) == 3


def test_grids_up_to_and_bad_pinpoints():
    assert sorted(map(tuple, grids_up_to(2, 10))) == [(10, 10), (10, 20), (20, 10)]
    assert len(grids_up_to(6, 1)) == 14
    with pytest.raises(ValueError, match="multiples of the tile size"):
        Tiling(ImageProcessing.family_default("clip", S), [[32, 50]], patch_size=8)


def test_hf_config_round_trip_and_processor_object():
    ours = Tiling(ImageProcessing.family_default("clip", S), PINS, patch_size=8)
    cfg = ours.to_hf()
    processing, pins = processing_from_llava_next(cfg, S)
    assert processing == ours.processing and pins == PINS
    image = _images(2)[1]
    got, _ = ours([image])
    want = ours.hf_processor()(images=[image], return_tensors="pt")["pixel_values"][0]
    assert torch.equal(got, want)
    with pytest.raises(ImageProcessorError, match="not a LLaVA-NeXT"):
        processing_from_llava_next({"image_processor_type": "CLIPImageProcessor"})


def _siglip_hf(**crop):
    return llava_next_processor_class()(size={"height": S, "width": S}, do_center_crop=False, image_mean=[0.5] * 3,
                                        image_std=[0.5] * 3, image_grid_pinpoints=PINS, **crop)


def test_siglip_style_processor_tiles_at_crop_size_as_transformers():
    """No centre crop, ``size`` height x width: transformers still cuts tiles of ``crop_size`` (its rule)."""
    hf = _siglip_hf(crop_size={"height": S, "width": S})
    processing, pins = processing_from_llava_next({**hf.to_dict(), "image_processor_type": "LlavaNextImageProcessor"},
                                                  S)
    ours = Tiling(processing, pins, patch_size=8)
    for image in _images(4):
        want = hf(images=[image], return_tensors="pt")
        got, sizes = ours([image])
        assert torch.equal(sizes, want["image_sizes"])
        assert torch.equal(got, want["pixel_values"][0, :got.shape[0]])
    # without crop_size the class default (224) is the tile: pixels no S-px tower matches, refused by name
    cfg = {**_siglip_hf().to_dict(), "image_processor_type": "LlavaNextImageProcessor"}
    assert cfg["crop_size"] == {"height": 224, "width": 224}
    with pytest.raises(ImageProcessorError, match="cuts 224 px tiles"):
        processing_from_llava_next(cfg, S)
    cfg.pop("crop_size")
    with pytest.raises(ImageProcessorError, match="cuts 224 px tiles"):
        processing_from_llava_next(cfg, S)


def test_megatron_flags_turn_tiling_on():
    import argparse

    from megatron_sicog.model.presets import add_model_args, model_args_from_flags, validate

    p = add_model_args(argparse.ArgumentParser())
    off = model_args_from_flags(p.parse_args([]))
    assert off.vision.image_grid_pinpoints is None  # the tiny demo's single view
    on = model_args_from_flags(p.parse_args(["--use-tiling", "--max-num-tiles", "4", "--use-thumbnail"]))
    s = on.vision.image_size
    assert sorted(map(tuple, on.vision.image_grid_pinpoints)) == sorted(
        (r * s, c * s) for r in range(1, 5) for c in range(1, 5) if r * c <= 4)
    assert on.vision.use_thumbnail and tiling_for(on.vision).num_views(s, 4 * s) == 5
    no_thumb = model_args_from_flags(p.parse_args(["--use-tiling"]))
    assert not no_thumb.vision.use_thumbnail and len(no_thumb.vision.image_grid_pinpoints) == 14
    with pytest.raises(ValueError, match="multiples of image size"):
        validate(on.replace(vision=VisionArgs(image_grid_pinpoints=[[64, 100]])))
