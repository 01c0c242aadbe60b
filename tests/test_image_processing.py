"""Image preprocessing per vision family equals transformers' processors pixel for pixel.

Tolerance: none. The tensors of `data.image_processing` are bit-identical
(``torch.equal``) to ``CLIPImageProcessor`` / ``SiglipImageProcessor`` (the PIL
backend, what transformers uses without torchvision) on images wider, taller,
smaller and larger than the model's size.
"""
import json

import numpy as np
import pytest
import torch

from megatron_sicog.data.image_processing import (CLIP_MEAN, ImageProcessing, ImageProcessorError, _hf_class,
                                                  for_vision)
from megatron_sicog.model.presets import PRESETS, VisionArgs

SHAPES = [(37, 53), (90, 24), (32, 32), (51, 50), (13, 90), (400, 300)]  # (height, width)


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SHAPES]


def _hf_pixels(hf, images):
    return torch.stack([torch.as_tensor(np.asarray(x)) for x in hf(images=images)["pixel_values"]])


# real checkpoints' preprocessor_config.json (openai/clip-vit-large-patch14-336: the old int sizes and a
# feature extractor type; google/siglip-so400m-patch14-384)
CLIP_L336 = {"crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
             "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(CLIP_MEAN),
             "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 336}
SIGLIP_384 = {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
              "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5],
              "processor_class": "SiglipProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
              "size": {"height": 384, "width": 384}}


@pytest.mark.parametrize("family", ["clip", "siglip"])
@pytest.mark.parametrize("size", [32, 64])
def test_family_default_equals_the_hf_processor(family, size):
    ours = ImageProcessing.family_default(family, size)
    kw = ({"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}} if family == "clip"
          else {"size": {"height": size, "width": size}})
    hf = _hf_class(family)(**kw)
    images = _images(size)
    want, got = _hf_pixels(hf, images), ours(images)
    assert got.dtype == torch.float32 and got.shape == (len(SHAPES), 3, size, size)
    assert torch.equal(got, want)
    assert ImageProcessing.from_hf(hf.to_dict(), size) == ours
    # the object the export writes is the same processor
    assert torch.equal(_hf_pixels(ours.hf_processor(), images), want)


@pytest.mark.parametrize("cfg,size", [(CLIP_L336, 336), (SIGLIP_384, 384)])
def test_real_configs_parse_and_give_the_hf_pixels(cfg, size):
    ours = ImageProcessing.from_hf(cfg, size)
    kind = "clip" if "CLIP" in cfg.get("feature_extractor_type", "") else "siglip"
    assert ours == ImageProcessing.family_default(kind, size)
    hf = _hf_class(kind).from_dict(cfg)
    images = _images(1)[:3]
    assert torch.equal(ours(images), _hf_pixels(hf, images))


def test_clip_crops_siglip_squashes():
    """A 2:1 image: CLIP keeps the centre square, SigLIP the whole image squeezed."""
    img = np.zeros((32, 64, 3), dtype=np.uint8)
    img[:, :16] = 255  # white left quarter: cropped away by CLIP, squeezed into the left half by SigLIP
    clip = ImageProcessing.family_default("clip", 32)(([img]))
    sig = ImageProcessing.family_default("siglip", 32)([img])
    assert clip[0, :, :, 0].max() < 0  # black everywhere (below the mean)
    assert sig[0, :, :, 0].min() > 0.99  # white at the left edge (mean/std 0.5: 1.0)


def test_for_vision_follows_the_record_then_the_family():
    clip = PRESETS["tiny"].vision
    assert for_vision(clip) == ImageProcessing.family_default(clip.family, clip.image_size)
    sig = PRESETS["qwen2-7b-siglip-so400m"].vision
    assert for_vision(sig).kind == "siglip" and for_vision(sig).image_mean == (0.5, 0.5, 0.5)
    # a recorded processor wins over the family's: a CLIP tower that came with a squashing processor
    squash = {"image_processor_type": "CLIPImageProcessor", "size": {"height": 64, "width": 64},
              "do_center_crop": False}
    rec = VisionArgs(image_size=64, image_processor=squash)
    p = for_vision(rec)
    assert p.crop_size is None and dict(p.size) == {"height": 64, "width": 64} and p.image_mean == CLIP_MEAN
    assert json.loads(json.dumps(p.to_hf())) == p.to_hf() and ImageProcessing.from_hf(p.to_hf(), 64) == p


@pytest.mark.parametrize("edit,match", [
    ({"image_processor_type": "LlavaOnevisionImageProcessor"}, "image_processor_type='LlavaOnevisionImage"),
    ({"do_pad": True}, "do_pad=True"),
    ({"do_image_splitting": True}, "do_image_splitting=True"),
    ({"size": {"longest_edge": 384}}, "size="),
    ({"size": {"height": 384, "width": 300}}, "384x300 pixels"),
    ({"size": {"height": 336, "width": 336}}, "image_size is 384"),
    ({"do_resize": False}, "do_resize=False"),
    ({"image_mean": [0.5, 0.5]}, "image_mean="),
])
def test_configs_it_cannot_reproduce_are_refused_naming_field_and_value(edit, match):
    with pytest.raises(ImageProcessorError, match=match.replace("(", r"\(")):
        ImageProcessing.from_hf({**SIGLIP_384, **edit}, 384)


def test_clip_without_crop_needs_a_square_size():
    with pytest.raises(ImageProcessorError, match="varying shape"):
        ImageProcessing.from_hf({**CLIP_L336, "do_center_crop": False}, 336)


def _expand2square(pil_img, background_color):
    """LLaVA-1.5's expand2square (llava/mm_utils.py), as its training and evaluation code call it."""
    from PIL import Image

    width, height = pil_img.size
    if width == height:
        return pil_img
    if width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    result = Image.new(pil_img.mode, (height, height), background_color)
    result.paste(pil_img, ((height - width) // 2, 0))
    return result


def _llava15_pixels(processor, images, aspect):
    """What LLaVA-1.5 feeds its tower: image_aspect_ratio 'pad' -> expand2square with
    tuple(int(x*255) for x in image_mean), then the CLIP processor; 'resize' (VILA) -> PIL resize to the
    crop size first."""
    from PIL import Image

    out = []
    for a in images:
        im = Image.fromarray(a)
        if aspect == "pad":
            im = _expand2square(im, tuple(int(x * 255) for x in processor.image_mean))
        elif aspect == "resize":
            c = processor.crop_size if getattr(processor, "crop_size", None) else processor.size
            im = im.resize((c["width"], c["height"]))
        out.append(im)
    return _hf_pixels(processor, out)


@pytest.mark.parametrize("aspect", ["pad", "resize"])
@pytest.mark.parametrize("family,size", [("clip", 32), ("clip", 336), ("siglip", 48)])
def test_image_aspect_ratio_gives_llava15s_pixels(aspect, family, size):
    ours = ImageProcessing.family_default(family, size).with_aspect_ratio(aspect)
    hf = ImageProcessing.family_default(family, size).hf_processor()
    images = _images(size)
    want = _llava15_pixels(hf, images, aspect)
    assert torch.equal(ours(images), want)
    alone = ImageProcessing.family_default(family, size)(images)
    # on non-square images the step changes the pixels, except SigLIP's 'resize': it squashes already
    assert torch.equal(alone, want) == (family == "siglip" and aspect == "resize")
    # what the checkpoint records and the export writes: a transformers processor giving the same pixels
    rec = ImageProcessing.from_hf(json.loads(json.dumps(ours.to_hf())), size)
    assert rec == ours and torch.equal(_hf_pixels(ours.hf_processor(), images), want)
    if aspect == "pad":
        assert ours.to_hf()["image_processor_type"] == "LlavaImageProcessor" and ours.to_hf()["do_pad"] is True
        vision = VisionArgs(family=family, image_size=size, image_processor=ours.to_hf())
        assert torch.equal(for_vision(vision)(images), want)


def test_pad_fills_with_the_mean_colour_and_keeps_the_image_centred():
    img = np.full((10, 30, 3), 255, dtype=np.uint8)  # 1:3, white
    p = ImageProcessing.family_default("siglip", 30).with_aspect_ratio("pad")
    x = p.pixels_uint8(img)
    assert x.shape == (30, 30, 3)
    assert (x[:10] == 127).all() and (x[10:20] == 255).all() and (x[20:] == 127).all()  # int(0.5 * 255)


@pytest.mark.parametrize("proc,aspect,match", [
    (ImageProcessing.family_default("clip", 32), "anyres", "image_aspect_ratio='anyres'"),
    (ImageProcessing.family_default("clip", 32).with_aspect_ratio("pad"), "square", "do_pad=True"),
    (ImageProcessing.from_hf({**CLIP_L336, "size": 384}, 336), "resize", "resizes again"),
])
def test_aspect_ratios_it_cannot_express_are_refused(proc, aspect, match):
    with pytest.raises(ImageProcessorError, match=match):
        proc.with_aspect_ratio(aspect)


def test_llava_processor_configs_parse():
    """transformers' own LlavaImageProcessor config (llava-hf style, do_pad) gives its pixels."""
    cfg = {**CLIP_L336, "feature_extractor_type": None, "image_processor_type": "LlavaImageProcessor",
           "do_pad": True}
    ours = ImageProcessing.from_hf(cfg, 336)
    assert ours.pad_to_square and ours.kind == "llava"
    images = _images(2)[:3]
    assert torch.equal(ours(images), _hf_pixels(_hf_class("llava").from_dict(cfg), images))
    with pytest.raises(ImageProcessorError, match="do_normalize=False"):
        ImageProcessing.from_hf({**cfg, "do_normalize": False}, 336)
