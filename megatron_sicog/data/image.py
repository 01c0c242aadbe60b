"""Image I/O shared by converter, dataset and generation.

* `load_image(path)` -> RGB ``PIL.Image`` (raises ValueError naming the file);
* `encode_image_bytes(image, format)` -> encoded bytes (PNG/JPEG, or PPM: raw
  pixels behind a 15-byte header, what the converter stores with ``--image-size``);
* `decode_image(bytes | array)` -> ``np.uint8`` HxWx3.

The model's preprocessing (resize, crop, mean/std of its vision family's HF
processor) is `image_processing.for_vision(vision_args)`.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image


def load_image(path: Union[str, Path]) -> Image.Image:
    """Open and fully decode an image as RGB; errors name the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"image not found: {path}") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds
        raise ValueError(f"unreadable image {path}: {e}") from None


def encode_image_bytes(image: Union[Image.Image, np.ndarray], format: str = "PNG", quality: int = 95) -> bytes:
    """Encode an image (PIL or HxWx3 uint8) as PNG, JPEG or PPM bytes."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB")
    fmt = format.upper()
    buf = io.BytesIO()
    if fmt in ("JPEG", "JPG"):
        image.convert("RGB").save(buf, "JPEG", quality=quality)
    else:
        image.save(buf, fmt)
    return buf.getvalue()


def decode_image(data: Union[bytes, bytearray, memoryview, np.ndarray]) -> np.ndarray:
    """Decode encoded image bytes (or pass an HxWx3 array through) to uint8 HxWx3 RGB."""
    if isinstance(data, np.ndarray) and data.ndim == 3:
        if data.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 array, got shape {data.shape}")
        return np.ascontiguousarray(data, dtype=np.uint8)
    if isinstance(data, np.ndarray):
        data = data.tobytes()
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot decode image bytes ({len(data)} bytes): {e}") from None

