"""Render a scene graph to a PIL image (no anti-aliasing, so colours are exact).

Each object is drawn as a mask (its shape) through which a texture is pasted:
solid = the object colour; striped = horizontal stripes of a darker shade;
dotted = a grid of darker dots. Patterns are phased so the object's centre
pixel always shows the pure object colour, which is what tests check.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from . import vocab
from .scene import Layout, Scene, SceneObject

DARKEN = 0.5


def _dark(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(c * DARKEN) for c in rgb)


def _shape_polygon(shape: str, cx: int, cy: int, r: int):
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    raise ValueError(shape)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: int, cy: int, r: int, fill) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape in ("circle", vocab.MARGINAL_SHAPE):
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon(_shape_polygon(shape, cx, cy, r), fill=fill)


def _texture(size: int, obj: SceneObject, cx: int, cy: int, period: int) -> Image.Image:
    """Full-image texture of `obj`, phased so that pixel (cx, cy) is the pure colour."""
    rgb = np.array(vocab.COLOURS[obj.colour], dtype=np.uint8)
    if obj.texture not in vocab.TEXTURES:
        raise ValueError(f"unknown texture {obj.texture!r}")
    tex = np.broadcast_to(rgb, (size, size, 3)).copy()
    half = period // 2
    dy = (np.arange(size) - cy) % period
    dx = (np.arange(size) - cx) % period
    if obj.texture == "striped":
        mark = np.broadcast_to((dy >= period - half)[:, None], (size, size))
    elif obj.texture == "dotted":
        mark = (dy == half)[:, None] & (dx == half)[None, :]
    else:
        return Image.fromarray(tex)
    tex[mark] = _dark(tuple(int(c) for c in rgb))
    return Image.fromarray(tex)


def render_scene(scene: Scene, image_size: int = 64) -> Image.Image:
    """The RGB image of `scene`, `image_size` pixels square."""
    lay = Layout(image_size)
    img = Image.new("RGB", (image_size, image_size), vocab.BACKGROUNDS[scene.background])
    period = max(3, image_size // 16)
    for obj in scene.ordered():
        cx, cy = lay.center(obj)
        mask = Image.new("L", (image_size, image_size), 0)
        _draw_shape(ImageDraw.Draw(mask), obj.shape, cx, cy, lay.radius(obj.size), 255)
        img.paste(_texture(image_size, obj, cx, cy, period), (0, 0), mask)
    if scene.marginal is not None:
        dx, dy = lay.dot_center(scene.marginal)
        _draw_shape(ImageDraw.Draw(img), vocab.MARGINAL_SHAPE, dx, dy, lay.dot_radius,
                    vocab.COLOURS[scene.marginal.colour])
    return img
