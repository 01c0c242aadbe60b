"""Scene graphs of the synthetic world: sampling, canonical keys, geometry.

A scene holds 1-3 main objects with distinct shapes (so "the circle" always
names exactly one object), each with a colour, size, texture and a cell of a
3x3 grid (no two objects share a cell); a background colour; and, sometimes, a
small "marginal" dot in the border strip along one edge.

Scenes are plain dataclasses that round-trip through JSON (`to_dict` /
`from_dict`). `scene_key` is the canonical identity used to keep the splits
disjoint: two scenes with the same key render the same semantic content.
Geometry (`layout`) maps the grid to pixels for any image size, shared by the
renderer and the tests that check pixels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from . import vocab


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    texture: str
    row: int
    col: int

    @property
    def position(self) -> str:
        return vocab.position_name(self.row, self.col)


@dataclass(frozen=True)
class Marginal:
    """A small dot near one edge; `offset` in [0, 1] places it along that edge."""

    colour: str
    side: str
    offset: float = 0.5
    shape: str = vocab.MARGINAL_SHAPE


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[SceneObject, ...]
    marginal: Optional[Marginal] = None

    def ordered(self) -> list[SceneObject]:
        """Objects in reading order (row-major), the order every text uses."""
        return sorted(self.objects, key=lambda o: (o.row, o.col))

    def by_shape(self, shape: str) -> SceneObject:
        for o in self.objects:
            if o.shape == shape:
                return o
        raise KeyError(f"no {shape} in scene")

    def to_dict(self) -> dict:
        return {
            "background": self.background,
            "objects": [dict(asdict(o), position=o.position) for o in self.ordered()],
            "marginal": asdict(self.marginal) if self.marginal else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        objs = tuple(
            SceneObject(o["shape"], o["colour"], o["size"], o["texture"], int(o["row"]), int(o["col"]))
            for o in d["objects"]
        )
        m = d.get("marginal")
        marginal = Marginal(m["colour"], m["side"], float(m.get("offset", 0.5))) if m else None
        return cls(d["background"], objs, marginal)


def scene_key(scene: Scene) -> str:
    """Canonical identity of a scene's semantic content (ignores the dot's exact offset)."""
    objs = ";".join(
        f"{o.shape},{o.colour},{o.size},{o.texture},{o.row},{o.col}" for o in scene.ordered()
    )
    m = f"{scene.marginal.colour},{scene.marginal.side}" if scene.marginal else "-"
    return f"{scene.background}|{objs}|{m}"


@dataclass
class SceneSampler:
    """Draws random scenes from a numpy Generator.

    max_objects: 1..len(SHAPES); marginal_prob: chance of a border dot;
    colours: the object and dot colours drawn from (default: all of `vocab.COLOURS`;
    a subset narrows a split, e.g. the seed's, below the world's range);
    size_weights etc. are uniform (the world has no bias a model could exploit).
    """

    rng: np.random.Generator
    min_objects: int = 1
    max_objects: int = 3
    marginal_prob: float = 0.5
    colours: tuple = tuple(vocab.COLOURS)
    _cells: list = field(default_factory=lambda: [(r, c) for r in range(3) for c in range(3)])

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= len(vocab.SHAPES):
            raise ValueError(
                f"need 1 <= min_objects ({self.min_objects}) <= max_objects ({self.max_objects}) "
                f"<= {len(vocab.SHAPES)}"
            )
        unknown = [c for c in self.colours if c not in vocab.COLOURS]
        if unknown or not self.colours:
            raise ValueError(f"colours must be a non-empty subset of {sorted(vocab.COLOURS)} (got {list(self.colours)})")

    def _pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def sample(self) -> Scene:
        n = int(self.rng.integers(self.min_objects, self.max_objects + 1))
        shapes = self.rng.choice(len(vocab.SHAPES), size=n, replace=False)
        cells = self.rng.choice(len(self._cells), size=n, replace=False)
        colours = list(self.colours)
        objects = tuple(
            SceneObject(
                shape=vocab.SHAPES[int(s)],
                colour=self._pick(colours),
                size=self._pick(vocab.SIZES),
                texture=self._pick(vocab.TEXTURES),
                row=self._cells[int(c)][0],
                col=self._cells[int(c)][1],
            )
            for s, c in zip(shapes, cells)
        )
        marginal = None
        if self.rng.random() < self.marginal_prob:
            marginal = Marginal(
                colour=self._pick(colours),
                side=self._pick(vocab.SIDES),
                offset=round(float(self.rng.uniform(0.15, 0.85)), 3),
            )
        return Scene(self._pick(list(vocab.BACKGROUNDS)), objects, marginal)


@dataclass(frozen=True)
class Layout:
    """Pixel geometry for an image of `image_size` pixels square.

    The main objects live in a centred 3x3 grid inside a border strip of width
    `margin`; the marginal dot sits in the middle of that strip.
    """

    image_size: int

    @property
    def margin(self) -> int:
        return max(3, round(self.image_size * 0.125))

    @property
    def cell(self) -> float:
        return (self.image_size - 2 * self.margin) / 3

    def radius(self, size: str) -> int:
        return max(2, round(self.cell * (0.45 if size == "large" else 0.25)))

    @property
    def dot_radius(self) -> int:
        return max(1, round(self.image_size / 32))

    def center(self, obj: SceneObject) -> tuple[int, int]:
        x = self.margin + (obj.col + 0.5) * self.cell
        y = self.margin + (obj.row + 0.5) * self.cell
        return int(round(x)), int(round(y))

    def dot_center(self, m: Marginal) -> tuple[int, int]:
        along = int(round(self.margin + m.offset * (self.image_size - 2 * self.margin)))
        near = self.margin // 2
        far = self.image_size - 1 - self.margin // 2
        return {
            "top": (along, near),
            "bottom": (along, far),
            "left": (near, along),
            "right": (far, along),
        }[m.side]
