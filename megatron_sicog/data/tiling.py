"""Any-resolution tiling (LLaVA-NeXT): one image -> a base view + a grid of tiles, and its token count.

`Tiling` is the one place that decides how a high-resolution image becomes model
inputs; collation, generation, conversion and verification all ask it
(`tiling_for(vision_args)`; None: the single-view default).

* Grid: of the allowed resolutions (``image_grid_pinpoints``, (height, width), each
  a multiple of the tile size S), `select_best_resolution` takes the one that keeps
  the most of the image's pixels after an aspect-preserving downscale, ties broken by
  the least padding (transformers' rule). The grid is (height / S, width / S) tiles.
* Views, as ``LlavaNextImageProcessor`` (PIL backend) makes them: the base view is
  the whole image resized to S x S (no aspect kept); the tiles come from the image
  resized to fit the chosen resolution (``get_patch_output_size``: the scaled edge
  is ``ceil``-ed), zero-padded to it centred (the odd pixel at the bottom / right),
  and cut row-major into S x S tiles. transformers cuts tiles of ``crop_size`` when the config
  has one, centre crop or not (`llava_next_tile_size`); a SigLIP-style processor (``size``
  height x width, no crop) must say ``crop_size`` = S, else its tiles are the class default's. Every view then goes through the checkpoint's
  `ImageProcessing` (rescale, normalise). tests/test_tiling.py checks bit equality.
* Tokens: the base view gives g*g features (g = S / patch); the tiles' features form
  a (rows*g) x (cols*g) map, unpadded back to the image's aspect (transformers'
  ``unpad_image``) and followed, row by row, by the ``image_newline`` vector:
  ``g*g + h' * (w' + 1)``. `num_tokens(height, width)` is what one ``<image>``
  expands to; the model packs features in exactly that order.

Megatron-LM flags: ``--use-tiling`` turns it on with the grids of at most
``--max-num-tiles`` tiles; ``--use-thumbnail`` adds the base view (LLaVA-NeXT
always has it).

A second policy behind the same interface (`TilingPolicy`: ``grid``, ``kept``,
``num_views``, ``num_tokens``, ``views``, ``key``, called on images): `UHDSlicing`,
LLaVA-UHD's slice grid (``slice_image_minicpm(max_slice_nums=7, scale_resolution=S)``:
about width*height / S^2 slices, at most 7, the factorisation closest in log aspect
ratio to the image; an image of at most S^2 pixels is not sliced) plus the whole image
as the thumbnail. LLaVA-UHD feeds each slice at its own aspect through a ViT with
interpolated position embeddings; our towers take S x S views, so the image is resized
to (rows*S) x (cols*S) and cut into S x S slices. The slices cover the image (no
padding to cut), so an image takes ``g*g + rows*g * (cols*g + 1)`` positions (the
feature map's rows, each followed by ``image_newline``, as for LLaVA-NeXT).
`model.anyres.pack_image_features` packs either policy. Not yet selectable from
``VisionArgs`` (`tiling_for` builds LLaVA-NeXT tiling only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from megatron_sicog.data.image_processing import ImageProcessing, ImageProcessorError, for_vision

LLAVA_NEXT_TYPES = ("LlavaNextImageProcessor", "LlavaNextImageProcessorFast", "LlavaNextImageProcessorPil")


def select_best_resolution(height: int, width: int, pinpoints: Sequence[Sequence[int]]) -> tuple[int, int]:
    """The (height, width) of `pinpoints` keeping the most pixels of an image, then wasting the fewest."""
    best, best_effective, best_wasted = None, 0, float("inf")
    for ph, pw in pinpoints:
        scale = min(pw / width, ph / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = ph * pw - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (int(ph), int(pw)), effective, wasted
    return best


def fitted_size(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int]:
    """(h, w) of the image scaled to fit (target_h, target_w) with its aspect (``get_patch_output_size``)."""
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


def unpadded_shape(height: int, width: int, cur_h: int, cur_w: int) -> tuple[int, int]:
    """(h', w') of a cur_h x cur_w feature map once the padding of an height x width image is cut
    (transformers' ``unpad_image``: the same rounding and the same symmetric cut)."""
    if width / height > cur_w / cur_h:
        new_h = int(round(height * (cur_w / width), 7))
        pad = (cur_h - new_h) // 2
        return cur_h - 2 * pad, cur_w
    new_w = int(round(width * (cur_h / height), 7))
    pad = (cur_w - new_w) // 2
    return cur_h, cur_w - 2 * pad


def unpad_slices(height: int, width: int, cur_h: int, cur_w: int) -> tuple[slice, slice]:
    """Row and column slices of the kept part of the feature map (see `unpadded_shape`)."""
    h, w = unpadded_shape(height, width, cur_h, cur_w)
    top, left = (cur_h - h) // 2, (cur_w - w) // 2
    return slice(top, top + h), slice(left, left + w)


def grids_up_to(max_num_tiles: int, tile: int) -> list[list[int]]:
    """Pinpoints of every grid of rows x cols <= `max_num_tiles` tiles (Megatron-LM's ``--max-num-tiles``)."""
    if max_num_tiles < 1:
        raise ValueError(f"max_num_tiles {max_num_tiles}: at least 1")
    return [[r * tile, c * tile] for r in range(1, max_num_tiles + 1) for c in range(1, max_num_tiles + 1)
            if r * c <= max_num_tiles]


class TilingPolicy:
    """What every tiling policy gives: a (rows, cols) grid of S x S views per image size, the kept part
    of its feature map (`kept`), view and token counts, and the views themselves (`views`)."""

    processing: ImageProcessing
    patch_size: int
    use_thumbnail: bool

    @property
    def tile_size(self) -> int:
        return self.processing.output_size[0]

    @property
    def features_per_side(self) -> int:
        return self.tile_size // self.patch_size

    def grid(self, height: int, width: int) -> tuple[int, int]:
        raise NotImplementedError

    def kept(self, height: int, width: int, cur_h: int, cur_w: int) -> tuple[slice, slice]:
        """Row and column slices of the tiles' cur_h x cur_w feature map that the model keeps."""
        raise NotImplementedError

    def views(self, image: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def key(self) -> dict:
        raise NotImplementedError

    def num_views(self, height: int, width: int) -> int:
        rows, cols = self.grid(height, width)
        return rows * cols + (1 if self.use_thumbnail else 0)

    def num_tokens(self, height: int, width: int) -> int:
        """Positions one ``<image>`` of this size takes: base g*g + kept tiles' features h' x (w' + newline)."""
        g = self.features_per_side
        rows, cols = self.grid(height, width)
        rs, cs = self.kept(height, width, rows * g, cols * g)
        h, w = rs.stop - rs.start, cs.stop - cs.start
        return (g * g if self.use_thumbnail else 0) + (h * (w + 1) if rows * cols else 0)

    def tokens_of(self, images: Sequence) -> list[int]:
        """`num_tokens` of each image (HxWx3 arrays or encoded bytes: only the header is read)."""
        return [self.num_tokens(*image_hw(im)) for im in images]

    def _resized(self, image: np.ndarray, height: int, width: int) -> np.ndarray:
        from PIL import Image

        pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB")
        return np.asarray(pil.resize((width, height), resample=self.processing.resample), dtype=np.uint8)

    def __call__(self, images: Sequence):
        """(pixels [sum of views, 3, S, S] float32, image_sizes [n, 2] int64 (height, width)) of
        HxWx3 uint8 images or encoded image bytes, image after image."""
        import torch

        from megatron_sicog.data.image import decode_image

        arrays = [decode_image(im) for im in images]
        views = [v for a in arrays for v in self.views(a)]
        sizes = torch.tensor([a.shape[:2] for a in arrays], dtype=torch.int64).reshape(-1, 2)
        return self.processing(views), sizes


@dataclass(frozen=True)
class Tiling(TilingPolicy):
    """Base view + tiles of S x S pixels for a tower of `patch_size` patches (see the module docstring)."""

    processing: ImageProcessing
    pinpoints: tuple          # ((height, width), ...), multiples of the tile size
    patch_size: int
    use_thumbnail: bool = True

    def __post_init__(self):
        size = self.processing.output_size
        if size is None or size[0] != size[1]:
            raise ImageProcessorError(f"tiling needs square views; the processor gives {size}")
        if getattr(self.processing, "pad_to_square", False):
            raise ImageProcessorError("tiling keeps the image's aspect in its grid; LLaVA's pad-to-square "
                                      "processor does not go with it")
        s = size[0]
        pins = tuple((int(h), int(w)) for h, w in self.pinpoints)
        if not pins:
            raise ValueError("image_grid_pinpoints is empty")
        bad = [p for p in pins if p[0] % s or p[1] % s or min(p) <= 0]
        if bad:
            raise ValueError(f"image_grid_pinpoints {bad} are not positive multiples of the tile size {s}")
        if s % self.patch_size:
            raise ValueError(f"tile size {s} is not a multiple of the patch size {self.patch_size}")
        object.__setattr__(self, "pinpoints", pins)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of tiles for an image of this size."""
        h, w = select_best_resolution(height, width, self.pinpoints)
        return h // self.tile_size, w // self.tile_size

    def kept(self, height: int, width: int, cur_h: int, cur_w: int) -> tuple[slice, slice]:
        """The unpadded part (transformers' ``unpad_image``, `unpad_slices`)."""
        return unpad_slices(height, width, cur_h, cur_w)

    def key(self) -> dict:
        """Everything that decides grids and token counts, as JSON (the dataset's cache key)."""
        return {"policy": "anyres", "tile_size": self.tile_size, "patch_size": self.patch_size,
                "pinpoints": [list(p) for p in self.pinpoints], "use_thumbnail": self.use_thumbnail}

    def views(self, image: np.ndarray) -> list[np.ndarray]:
        """The uint8 S x S views of one HxWx3 image: [base,] tiles row-major."""
        from PIL import Image

        s, resample = self.tile_size, self.processing.resample
        height, width = image.shape[:2]
        pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB")
        th, tw = select_best_resolution(height, width, self.pinpoints)
        fh, fw = fitted_size(height, width, th, tw)
        fitted = np.asarray(pil.resize((fw, fh), resample=resample), dtype=np.uint8)
        canvas = np.zeros((th, tw, 3), dtype=np.uint8)
        top, left = (th - fh) // 2, (tw - fw) // 2
        canvas[top:top + fh, left:left + fw] = fitted
        tiles = [canvas[i:i + s, j:j + s] for i in range(0, th, s) for j in range(0, tw, s)]
        if not self.use_thumbnail:
            return tiles
        base = np.asarray(pil.resize((s, s), resample=resample), dtype=np.uint8)
        return [base] + tiles

    # -- the HF processor ------------------------------------------------------------
    def to_hf(self) -> dict:
        """The ``preprocessor_config.json`` of ``LlavaNextImageProcessor`` with these pixels."""
        if not self.use_thumbnail:
            raise ImageProcessorError("LlavaNextImageProcessor always makes the base view (use_thumbnail)")
        out = self.processing.to_hf()
        out.update(image_processor_type="LlavaNextImageProcessor", do_pad=True,
                   image_grid_pinpoints=[list(p) for p in self.pinpoints])
        return out

    def hf_processor(self):
        """transformers' LLaVA-NeXT image processor object (PIL backend) of these fields."""
        cfg = self.to_hf()
        cfg.pop("image_processor_type")
        return llava_next_processor_class()(**cfg)


def uhd_slice_grid(height: int, width: int, max_slice_nums: int = 7, scale_resolution: int = 336) -> tuple[int, int]:
    """(rows, cols) of LLaVA-UHD's slices (``slice_image_minicpm``); (0, 0): not sliced.

    ``multiple = min(ceil(w*h / S^2), max_slice_nums)``; at most 1, no slices. Else every
    factorisation cols x rows of multiple-1, multiple and multiple+1 (leaving out 1 and
    counts above the maximum), in that order and by increasing cols, is tried and the first
    with the least ``|log(w/h) - log(cols/rows)|`` wins.
    """
    multiple = min(math.ceil(width * height / (scale_resolution * scale_resolution)), max_slice_nums)
    if multiple <= 1:
        return 0, 0
    log_ratio = math.log(width / height)
    best, best_err = (1, 1), float("inf")
    for n in (multiple - 1, multiple, multiple + 1):
        if n == 1 or n > max_slice_nums:
            continue
        for cols in range(1, n + 1):
            if n % cols == 0:
                err = abs(log_ratio - math.log(cols / (n // cols)))
                if err < best_err:
                    best, best_err = (n // cols, cols), err
    return best


@dataclass(frozen=True)
class UHDSlicing(TilingPolicy):
    """LLaVA-UHD-style slices (`uhd_slice_grid`, scale resolution = the tile size S) + the thumbnail."""

    processing: ImageProcessing
    patch_size: int
    max_slice_nums: int = 7
    use_thumbnail: bool = True

    def __post_init__(self):
        size = self.processing.output_size
        if size is None or size[0] != size[1]:
            raise ImageProcessorError(f"slicing needs square views; the processor gives {size}")
        if size[0] % self.patch_size:
            raise ValueError(f"slice size {size[0]} is not a multiple of the patch size {self.patch_size}")
        if self.max_slice_nums < 2:
            raise ValueError(f"max_slice_nums {self.max_slice_nums}: at least 2")
        if not self.use_thumbnail:
            raise ValueError("UHD slicing always has the thumbnail (the image as one view)")

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return uhd_slice_grid(height, width, self.max_slice_nums, self.tile_size)

    def kept(self, height: int, width: int, cur_h: int, cur_w: int) -> tuple[slice, slice]:
        """All of it: the slices cover the resized image, nothing is padding."""
        return slice(0, cur_h), slice(0, cur_w)

    def key(self) -> dict:
        return {"policy": "uhd", "tile_size": self.tile_size, "patch_size": self.patch_size,
                "max_slice_nums": self.max_slice_nums, "use_thumbnail": self.use_thumbnail}

    def views(self, image: np.ndarray) -> list[np.ndarray]:
        """The uint8 S x S views: the thumbnail (whole image), then the slices row-major."""
        s = self.tile_size
        rows, cols = self.grid(*image.shape[:2])
        out = [self._resized(image, s, s)]
        if rows:
            big = self._resized(image, rows * s, cols * s)
            out += [big[i:i + s, j:j + s] for i in range(0, rows * s, s) for j in range(0, cols * s, s)]
        return out


def image_hw(image) -> tuple[int, int]:
    """(height, width) of an HxWx3 array or of encoded image bytes (PIL reads the header, not the pixels)."""
    if isinstance(image, np.ndarray) and image.ndim == 3:
        return int(image.shape[0]), int(image.shape[1])
    import io

    from PIL import Image

    data = image.tobytes() if isinstance(image, np.ndarray) else bytes(image)
    with Image.open(io.BytesIO(data)) as im:
        return im.height, im.width


def processing_from_llava_next(cfg: dict, image_size: Optional[int] = None) -> tuple[ImageProcessing, list]:
    """(per-view `ImageProcessing`, pinpoints) of a LLaVA-NeXT ``preprocessor_config.json`` dict."""
    cfg = dict(cfg)
    typ = cfg.get("image_processor_type")
    if typ not in LLAVA_NEXT_TYPES:
        raise ImageProcessorError(f"preprocessor_config image_processor_type={typ!r}: not a LLaVA-NeXT processor")
    defaults = llava_next_processor_class()().to_dict()
    pins = cfg.pop("image_grid_pinpoints", defaults.get("image_grid_pinpoints"))
    cfg.pop("do_pad", None)  # batching pad of the tile dimension: no pixels change
    for k in ("size", "crop_size", "image_mean", "image_std", "resample", "do_center_crop"):
        cfg.setdefault(k, defaults.get(k))
    tile = llava_next_tile_size(cfg["size"], cfg["crop_size"])
    cfg["image_processor_type"] = "CLIPImageProcessor"
    processing = ImageProcessing.from_hf(cfg, image_size)
    if processing.output_size != (tile, tile):
        raise ImageProcessorError(
            f"LlavaNextImageProcessor cuts {tile} px tiles (crop_size={cfg['crop_size']!r}, size={cfg['size']!r}: "
            f"crop_size decides the tile even with do_center_crop={cfg['do_center_crop']!r}) but makes "
            f"{processing.output_size} px views of them; set crop_size to the views' size")
    return processing, [list(p) for p in pins]


def llava_next_tile_size(size, crop_size) -> int:
    """The edge of the tiles ``LlavaNextImageProcessor`` cuts from the padded image: ``crop_size['height']``
    when there is one (whether or not it centre-crops), else ``size['height']``, else ``size['shortest_edge']``
    (transformers' rule; a SigLIP-style processor without a centre crop still needs ``crop_size``)."""
    crop = {"height": crop_size} if isinstance(crop_size, int) else dict(crop_size or {})
    size = {"shortest_edge": size} if isinstance(size, int) else dict(size or {})
    for value in (crop.get("height"), size.get("height"), size.get("shortest_edge")):
        if value:
            return int(value)
    raise ImageProcessorError(f"LlavaNextImageProcessor size={size!r} crop_size={crop_size!r}: no tile size")


def llava_next_processor_class():
    try:
        from transformers import LlavaNextImageProcessorPil as cls
    except ImportError:  # transformers 4.x: the slow processor is the PIL one
        from transformers import LlavaNextImageProcessor as cls
    return cls


def tiling_for(vision) -> Optional[Tiling]:
    """The tiling of a model with these `VisionArgs`; None when it takes one view per image."""
    pins = getattr(vision, "image_grid_pinpoints", None)
    if not pins:
        return None
    return Tiling(for_vision(vision), tuple(tuple(p) for p in pins), vision.patch_size,
                  getattr(vision, "use_thumbnail", True))


def geometry_for(vision) -> Optional[Tiling]:
    """A `Tiling` of these `VisionArgs` for grids and token counts only (what the model packs by): the
    family's processor stands in for the recorded one, which decides pixels, not shapes."""
    pins = getattr(vision, "image_grid_pinpoints", None)
    if not pins:
        return None
    return Tiling(ImageProcessing.family_default(vision.family, vision.image_size), tuple(tuple(p) for p in pins),
                  vision.patch_size, getattr(vision, "use_thumbnail", True))
