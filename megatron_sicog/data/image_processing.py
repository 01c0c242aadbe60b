"""The image processor of a checkpoint: pixel for pixel what transformers' processor of its vision family gives.

`for_vision(vision_args)` is the one place that decides how a model's images
are preprocessed; the trainer's collation, generation, evaluation and the HF
export all ask it. It returns the processor recorded with the checkpoint
(``VisionArgs.image_processor``: the fields of the HF directory's
``preprocessor_config.json``, kept on import), else the family's:

* CLIP -> ``CLIPImageProcessor``: bicubic resize of the shortest edge to S
  (the long edge ``int(S * long / short)``), centre crop to S x S, x 1/255,
  CLIP mean/std;
* SigLIP -> ``SiglipImageProcessor``: bicubic resize to S x S (no crop), x 1/255,
  mean = std = 0.5.

LLaVA's ``image_aspect_ratio`` (the HF ``config.json`` field of LLaVA-trained
checkpoints, or ``hf-to-megatron --image-aspect-ratio``) changes the image before
that processor (`with_aspect_ratio`): ``"pad"`` (LLaVA-1.5) expands it to a square
of its longer side with the processor's mean colour ``tuple(int(x * 255) for x in
image_mean)``, centred (LLaVA's ``expand2square``) — recorded and exported as
transformers' ``LlavaImageProcessor`` with ``do_pad`` (kind ``llava``), which does the
same; ``"resize"`` (VILA / LLaVA forks) squashes it to the processor's output size
with PIL's bicubic first — recorded as the squashing processor it amounts to;
``"square"`` (LLaVA's default) or none: the processor alone.

`ImageProcessing` holds the pixel-deciding fields of a ``preprocessor_config.json``
(``from_hf`` refuses, naming field and value, what the project cannot reproduce or
what would not give S x S pixels); calling it on HxWx3 uint8 arrays gives the
``[n, 3, S, S]`` float32 tensor, computed as transformers' PIL backend does
(PIL resize of the uint8 image, crop, float64 rescale cast to float32, float32
normalisation): tests/test_image_processing.py checks bit equality with
``CLIPImageProcessor`` / ``SiglipImageProcessor`` on non-square images. The
torchvision backend of transformers (used when torchvision is installed) resizes
with its own kernel and differs from PIL by a few grey levels; the PIL backend is
the reference here, as it was for the original LLaVA and SigLIP processors.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
PIL_BICUBIC = 3
HF_TYPES = {"CLIPImageProcessor": "clip", "CLIPImageProcessorFast": "clip", "CLIPFeatureExtractor": "clip",
            "SiglipImageProcessor": "siglip", "SiglipImageProcessorFast": "siglip",
            "LlavaImageProcessor": "llava", "LlavaImageProcessorFast": "llava"}
HF_CLASS = {"clip": "CLIPImageProcessor", "siglip": "SiglipImageProcessor", "llava": "LlavaImageProcessor"}
ASPECT_RATIOS = ("pad", "resize", "square")  # LLaVA's image_aspect_ratio values reproduced


class ImageProcessorError(ValueError):
    """A preprocessor config the project cannot reproduce (the message names field and value)."""


@dataclass(frozen=True)
class ImageProcessing:
    """Pixel-deciding fields of a HF image processor (the ``preprocessor_config.json`` names)."""

    kind: str                         # "clip", "siglip", "llava": CLIP- / Siglip- / LlavaImageProcessor
    size: tuple                       # (("shortest_edge", S),) or (("height", H), ("width", W))
    crop_size: Optional[tuple] = None  # (H, W) of the centre crop; None: no crop
    resample: int = PIL_BICUBIC
    rescale_factor: Optional[float] = 1 / 255   # None: no rescale
    image_mean: Optional[tuple] = None          # None: no normalisation
    image_std: Optional[tuple] = None
    pad_to_square: bool = False       # LlavaImageProcessor do_pad: expand to a square with the mean colour

    @property
    def keeps_its_output(self) -> bool:
        """True when these pixels, processed again, come out unchanged: the resize of an output-sized image
        is the identity (PIL returns a copy), so is the crop, a square needs no pad. What storing the
        processed view (`tools/preprocess_data.py --image-size`) and the 'resize' aspect ratio rely on."""
        size = self.output_size
        return size is not None and self.resized_shape(*size) == tuple(size)

    @property
    def output_size(self) -> Optional[tuple[int, int]]:
        """(H, W) of every output, or None when it depends on the image (shortest edge, no crop)."""
        if self.crop_size is not None:
            return tuple(self.crop_size)
        d = dict(self.size)
        return (d["height"], d["width"]) if "height" in d else None

    # -- construction --------------------------------------------------------------
    @classmethod
    def family_default(cls, family: str, image_size: int) -> "ImageProcessing":
        if family == "clip":
            return cls("clip", (("shortest_edge", image_size),), (image_size, image_size),
                       image_mean=CLIP_MEAN, image_std=CLIP_STD)
        if family == "siglip":
            return cls("siglip", (("height", image_size), ("width", image_size)),
                       image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD)
        raise ImageProcessorError(f"vision family {family!r}: no image processor (clip or siglip)")

    @classmethod
    def from_hf(cls, cfg: dict, image_size: Optional[int] = None) -> "ImageProcessing":
        """Parse a ``preprocessor_config.json`` dict; with `image_size`, its output must be that square."""
        cfg = dict(cfg)
        field = "image_processor_type" if "image_processor_type" in cfg else "feature_extractor_type"
        typ = cfg.get(field)  # older configs (CLIP ViT-L/14-336) name only a feature extractor
        if typ not in HF_TYPES:
            raise ImageProcessorError(f"preprocessor_config {field}={typ!r}: only {sorted(HF_TYPES)} are reproduced")
        kind = HF_TYPES[typ]
        base = _hf_class(kind)().to_dict()  # the class defaults, as plain values
        defaults = {f: base.get(f) for f in ("do_resize", "size", "resample", "do_center_crop", "crop_size",
                                             "do_rescale", "rescale_factor", "do_normalize", "image_mean",
                                             "image_std", "do_convert_rgb", "do_pad")}
        get = {k: cfg.get(k, v) for k, v in defaults.items()}
        if not get["do_resize"]:
            raise ImageProcessorError(f"preprocessor_config do_resize={get['do_resize']!r}: the model needs a "
                                      "fixed input size")
        steps = [k for k, v in cfg.items() if k.startswith("do_") and k not in defaults and v]
        if (get["do_pad"] and kind != "llava") or steps:
            k = steps[0] if steps else "do_pad"
            raise ImageProcessorError(f"preprocessor_config {k}={cfg.get(k)!r} is not reproduced")
        if get["do_pad"] and not get["do_normalize"]:
            raise ImageProcessorError("preprocessor_config do_pad=True with do_normalize=False is not reproduced "
                                      "(the pad colour is the mean the project keeps only when normalising)")
        if get["do_convert_rgb"] is False:
            raise ImageProcessorError("preprocessor_config do_convert_rgb=False is not reproduced (images are RGB)")
        size = get["size"]
        if isinstance(size, int):
            size = {"height": size, "width": size} if kind == "siglip" else {"shortest_edge": size}
        size = {k: v for k, v in dict(size).items() if v is not None}
        if set(size) == {"shortest_edge"}:
            size_t = (("shortest_edge", int(size["shortest_edge"])),)
        elif set(size) == {"height", "width"}:
            size_t = (("height", int(size["height"])), ("width", int(size["width"])))
        else:
            raise ImageProcessorError(f"preprocessor_config size={size!r}: only {{'shortest_edge': S}} or "
                                      "{'height': H, 'width': W}")
        crop = None
        if get["do_center_crop"] and kind in ("clip", "llava"):
            c = get["crop_size"]
            c = {"height": c, "width": c} if isinstance(c, int) else dict(c)
            if set(c) != {"height", "width"}:
                raise ImageProcessorError(f"preprocessor_config crop_size={c!r}: needs height and width")
            crop = (int(c["height"]), int(c["width"]))
        resample = get["resample"]
        if not isinstance(resample, int) or not 0 <= int(resample) <= 5:
            raise ImageProcessorError(f"preprocessor_config resample={resample!r}: a PIL resampling code 0-5")
        mean, std = get["image_mean"], get["image_std"]
        if get["do_normalize"]:
            mean = tuple(float(x) for x in (mean if isinstance(mean, (list, tuple)) else [mean] * 3))
            std = tuple(float(x) for x in (std if isinstance(std, (list, tuple)) else [std] * 3))
            if len(mean) != 3 or len(std) != 3:
                raise ImageProcessorError(f"preprocessor_config image_mean={mean!r} image_std={std!r}: "
                                          "three values each")
        out = cls(kind, size_t, crop, int(resample),
                  float(get["rescale_factor"]) if get["do_rescale"] else None,
                  mean if get["do_normalize"] else None, std if get["do_normalize"] else None,
                  bool(get["do_pad"]))
        if out.output_size is None:
            raise ImageProcessorError(f"preprocessor_config size={size!r} without a centre crop gives images of "
                                      "varying shape; the vision tower takes one square size")
        if image_size is not None and out.output_size != (image_size, image_size):
            raise ImageProcessorError(f"preprocessor_config gives {out.output_size[0]}x{out.output_size[1]} "
                                      f"pixels (size={size!r}, crop_size={get['crop_size']!r}); the vision "
                                      f"tower's image_size is {image_size}")
        return out

    def to_hf(self) -> dict:
        """The ``preprocessor_config.json`` fields (every pixel-deciding one written out)."""
        out = {"image_processor_type": HF_CLASS[self.kind], "do_convert_rgb": True, "do_resize": True,
               "size": dict(self.size), "resample": self.resample,
               "do_rescale": self.rescale_factor is not None,
               "rescale_factor": self.rescale_factor if self.rescale_factor is not None else 1 / 255,
               "do_normalize": self.image_mean is not None,
               "image_mean": list(self.image_mean or (0.0, 0.0, 0.0)),
               "image_std": list(self.image_std or (1.0, 1.0, 1.0))}
        if self.kind in ("clip", "llava"):
            out["do_center_crop"] = self.crop_size is not None
            out["crop_size"] = dict(zip(("height", "width"), self.crop_size or self.output_size))
        if self.kind == "llava":
            out["do_pad"] = self.pad_to_square
        return out

    def with_aspect_ratio(self, image_aspect_ratio: Optional[str]) -> "ImageProcessing":
        """These pixels under LLaVA's ``image_aspect_ratio`` (see the module docstring): "pad" -> the
        ``LlavaImageProcessor`` with ``do_pad`` of the same fields; "resize" -> the processor that squashes
        to the output size; "square" / None -> unchanged. Refuses, naming the value, what it cannot express."""
        if image_aspect_ratio in (None, "square"):
            if self.pad_to_square and image_aspect_ratio == "square":
                raise ImageProcessorError("image_aspect_ratio='square' but preprocessor_config do_pad=True: "
                                          "which one the model was trained with is ambiguous")
            return self
        if image_aspect_ratio not in ASPECT_RATIOS:
            raise ImageProcessorError(f"image_aspect_ratio={image_aspect_ratio!r}: only {list(ASPECT_RATIOS)} are "
                                      "reproduced (any-resolution tiling is image_grid_pinpoints)")
        if image_aspect_ratio == "pad":
            if self.image_mean is None:
                raise ImageProcessorError("image_aspect_ratio='pad' needs the processor's image_mean (do_normalize)")
            return replace(self, kind="llava", pad_to_square=True)
        if self.pad_to_square:
            raise ImageProcessorError("image_aspect_ratio='resize' but preprocessor_config do_pad=True")
        h, w = self.output_size
        if not self.keeps_its_output:  # the processor would resize the squashed image again
            raise ImageProcessorError(f"image_aspect_ratio='resize' squashes to {h}x{w}, which the processor "
                                      f"(size={dict(self.size)!r}) resizes again: not reproduced")
        # the squash (PIL's default filter, bicubic) is all the geometry; the processor's own resize is the identity
        return replace(self, size=(("height", h), ("width", w)), crop_size=None, resample=PIL_BICUBIC)

    def hf_processor(self):
        """The transformers image processor object of these fields (PIL backend)."""
        cfg = self.to_hf()
        cfg.pop("image_processor_type")
        return _hf_class(self.kind)(**cfg)

    # -- pixels --------------------------------------------------------------------
    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) after the resize, as transformers' ``get_resize_output_image_size`` computes it."""
        d = dict(self.size)
        if "height" in d:
            return d["height"], d["width"]
        s = d["shortest_edge"]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = s, int(s * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def pixels_uint8(self, image: np.ndarray) -> np.ndarray:
        """Pad to a square (with `pad_to_square`), resize (PIL) and centre-crop one HxWx3 uint8 image; uint8 HxWx3."""
        from PIL import Image

        if self.pad_to_square:
            image = expand_to_square(image, tuple(int(x * 255) for x in self.image_mean))
        h, w = self.resized_shape(image.shape[0], image.shape[1])
        image = np.asarray(Image.fromarray(image, "RGB").resize((w, h), resample=self.resample), dtype=np.uint8)
        if self.crop_size is not None:
            image = _center_crop(image, *self.crop_size)
        return image

    def __call__(self, images: Sequence[np.ndarray]):
        """``[n, 3, S, S]`` float32 tensor of HxWx3 uint8 images (or encoded image bytes)."""
        import torch

        from megatron_sicog.data.image import decode_image

        h, w = self.output_size
        if len(images) == 0:
            return torch.zeros((0, 3, h, w), dtype=torch.float32)
        arr = np.stack([self.pixels_uint8(decode_image(im)) for im in images]).transpose(0, 3, 1, 2)
        x = arr.astype(np.float64) * self.rescale_factor if self.rescale_factor is not None else arr
        x = x.astype(np.float32)
        if self.image_mean is not None:
            mean = np.asarray(self.image_mean, dtype=np.float32).reshape(1, 3, 1, 1)
            std = np.asarray(self.image_std, dtype=np.float32).reshape(1, 3, 1, 1)
            x = (x - mean) / std
        return torch.from_numpy(np.ascontiguousarray(x))


def expand_to_square(image: np.ndarray, color: tuple) -> np.ndarray:
    """LLaVA's ``expand2square``: the HxWx3 uint8 image centred on a square of its longer side filled with
    `color` (the odd pixel of the margin at the bottom / right)."""
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[:] = np.asarray(color, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top:top + h, left:left + w] = image
    return canvas


def _center_crop(image: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """transformers' ``center_crop``: top/left = (size - crop) // 2, zero padding where the image is smaller."""
    h, w = image.shape[:2]
    top, left = (h - ch) // 2, (w - cw) // 2
    if top >= 0 and left >= 0 and top + ch <= h and left + cw <= w:
        return image[top:top + ch, left:left + cw]
    nh, nw = max(ch, h), max(cw, w)
    canvas = np.zeros((nh, nw, image.shape[2]), dtype=image.dtype)
    tp, lp = -(-(nh - h) // 2), -(-(nw - w) // 2)
    canvas[tp:tp + h, lp:lp + w] = image
    top, left = top + tp, left + lp
    top, left = max(top, 0), max(left, 0)
    return canvas[top:min(top + ch, nh), left:min(left + cw, nw)]


def _hf_class(kind: str):
    """transformers' PIL image processor class of `kind` (importing the name without torchvision warns)."""
    if kind == "clip":
        try:
            from transformers import CLIPImageProcessorPil as cls
        except ImportError:  # transformers 4.x: the slow processor is the PIL one
            from transformers import CLIPImageProcessor as cls
    elif kind == "llava":
        try:
            from transformers import LlavaImageProcessorPil as cls
        except ImportError:
            from transformers import LlavaImageProcessor as cls
    else:
        try:
            from transformers import SiglipImageProcessorPil as cls
        except ImportError:
            from transformers import SiglipImageProcessor as cls
    return cls


def for_vision(vision) -> ImageProcessing:
    """The image processing of a model with these `VisionArgs`: its recorded processor, else its family's."""
    recorded = getattr(vision, "image_processor", None)
    if recorded:
        return ImageProcessing.from_hf(recorded, vision.image_size)
    return ImageProcessing.family_default(vision.family, vision.image_size)

