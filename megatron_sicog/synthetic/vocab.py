"""The closed vocabulary of the synthetic shapes world.

Every word the generator writes about an image comes from these tables, and the
caption-fidelity parser (`megatron_sicog.evaluation.facts`) reads the same
tables, so the world and its metric can never drift apart. The vocabulary is
kept small and regular on purpose: a tiny model with a ~1k-piece SentencePiece
vocabulary must learn it in minutes on a CPU.

Colours are RGB triples chosen far apart; background colours are disjoint from
object colours so a background word never names an object and vice versa.
"""
from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
BACKGROUNDS = {
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}
SIZES = ("small", "large")
TEXTURES = ("solid", "striped", "dotted")
DEFAULT_TEXTURE = "solid"  # texts leave it out: "a small red circle" is solid
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
SIDES = ("top", "bottom", "left", "right")
MARGINAL_SHAPE = "dot"  # the small object near the border

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
WORD_NUMBERS = {w: n for n, w in NUMBER_WORDS.items()}

# Spelling variants a model (or a person) may write; mapped onto the canonical word.
SYNONYMS = {
    "grey": "gray",
    "centre": "center",
    "circles": "circle",
    "squares": "square",
    "triangles": "triangle",
    "diamonds": "diamond",
    "dots": "dot",
    "big": "large",
    "little": "small",
    "tiny": "small",
    "stripy": "striped",
    "spotted": "dotted",
    "plain": "solid",
}


def position_name(row: int, col: int) -> str:
    """'top left' ... 'bottom right' for 0-based grid row and column."""
    return f"{ROWS[row]} {COLS[col]}"


def canonical_word(word: str) -> str:
    """Lower-cased word with a known synonym replaced by its canonical form."""
    w = word.lower()
    return SYNONYMS.get(w, w)
