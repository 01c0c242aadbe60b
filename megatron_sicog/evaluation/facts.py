"""Facts of a synthetic scene, from its graph and from a description's text.

A fact is a tuple; a scene graph gives the true set (`graph_facts`) and a
caption the claimed set (`text_facts`); caption fidelity compares the two.

Fact kinds (the first element; `FACT_KINDS` lists them):
  ("object", shape)                      the shape is present
  ("colour"|"size"|"texture"|"position", shape, value)   per main object
  ("count", n)                           number of main objects
  ("background", colour)
  ("dot", colour) and ("dot_side", side) the marginal dot near one edge

The parser reads the templates of `megatron_sicog.synthetic.text` and the
usual variations of them: adjectives before a shape ("a large striped red
circle"), predicates after it ("the circle is red, large", "Circle: red"),
positions ("at the top left", "at the center", "in the top row" is not one),
"<colour> background" / "background is <colour>", "<n> shapes", "a <colour>
dot near the <side> edge". Words outside the vocabulary are ignored; synonyms
(grey, centre, big, ...) map through `vocab.canonical_word`; a sentence
opening with "it" continues the previous sentence's object. A main object
mentioned without a texture is solid (the texts leave "solid" out); without an
explicit count the count is the number of distinct shapes mentioned.
"""
from __future__ import annotations

import re
from typing import Optional

from ..synthetic import vocab

FACT_KINDS = ("object", "colour", "size", "texture", "position", "count", "background", "dot", "dot_side")
Fact = tuple

_TOKEN = re.compile(r"[a-z]+|\d+|[.,;:!?]")
_SENTENCE_END = {".", "!", "?", ";"}
_ARTICLES = {"a", "an", "the"}
_COUNT_NOUNS = {"shape", "shapes", "object", "objects"}
_ATTRS = {
    **{c: "colour" for c in vocab.COLOURS},
    **{s: "size" for s in vocab.SIZES},
    **{t: "texture" for t in vocab.TEXTURES},
}
_OBJECT_WORDS = set(vocab.SHAPES) | {vocab.MARGINAL_SHAPE}


def graph_facts(graph: dict) -> set[Fact]:
    """The true facts of a scene graph (`Scene.to_dict()` form)."""
    facts: set[Fact] = {("count", len(graph["objects"])), ("background", graph["background"])}
    for o in graph["objects"]:
        s = o["shape"]
        position = o.get("position") or vocab.position_name(int(o["row"]), int(o["col"]))
        facts |= {("object", s), ("colour", s, o["colour"]), ("size", s, o["size"]),
                  ("texture", s, o["texture"]), ("position", s, position)}
    m = graph.get("marginal")
    if m:
        facts |= {("dot", m["colour"]), ("dot_side", m["side"])}
    return facts


def _tokens(text: str) -> list[str]:
    return [vocab.canonical_word(t) for t in _TOKEN.findall(text.lower())]


def _position_at(tok: list[str], i: int) -> tuple[Optional[str], int]:
    """(position name, tokens used) for a position starting at tok[i], else (None, 0).

    'top left' is a full position; after an article a lone row or column word
    is one too ('the center' = middle center, 'the top' = top center, 'the
    left' = middle left), but never 'left of' or '<side> edge'.
    """
    w = tok[i]
    nxt = tok[i + 1] if i + 1 < len(tok) else ""
    if w in vocab.ROWS and nxt in vocab.COLS:
        return f"{w} {nxt}", 2
    prev = tok[i - 1] if i > 0 else ""
    if prev in _ARTICLES and nxt not in ("of", "edge", "row", "column", "side"):
        if w in vocab.ROWS:
            return f"{w} center", 1
        if w in vocab.COLS:
            return ("middle center" if w == "center" else f"middle {w}"), 1
    return None, 0


class _Parser:
    """One left-to-right pass over the tokens, keeping the current subject."""

    def __init__(self) -> None:
        self.facts: set[Fact] = set()
        self.shapes_seen: list[str] = []
        self.textured: set[str] = set()
        self.count: Optional[int] = None
        self.pending: dict[str, str] = {}
        self.last: Optional[str] = None      # last object named in this sentence
        self.subject: Optional[str] = None   # object (or "background") a predicate describes
        self.predicate = False
        self.previous: Optional[str] = None  # last object of the previous sentence ("it")

    def _reset_sentence(self) -> None:
        self.previous = self.last or self.previous
        self.pending, self.last, self.subject, self.predicate = {}, None, None, False

    def _attach(self, target: str, kind: str, value: str) -> None:
        if target == "background":
            if kind == "colour":  # an object colour here is a (wrong) claim too
                self.facts.add(("background", value))
        elif target == vocab.MARGINAL_SHAPE:
            if kind == "colour":
                self.facts.add(("dot", value))
            elif kind == "side":
                self.facts.add(("dot_side", value))
        elif kind in ("colour", "size", "texture", "position"):
            self.facts.add((kind, target, value))
            if kind == "texture":
                self.textured.add(target)

    def _object(self, shape: str) -> None:
        if shape != vocab.MARGINAL_SHAPE:
            self.facts.add(("object", shape))
            if shape not in self.shapes_seen:
                self.shapes_seen.append(shape)
        for kind, value in self.pending.items():
            self._attach(shape, kind, value)
        self.pending = {}
        self.last = shape
        self.predicate = False

    def parse(self, text: str) -> set[Fact]:
        tok = _tokens(text)
        i = 0
        while i < len(tok):
            w = tok[i]
            nxt = tok[i + 1] if i + 1 < len(tok) else ""
            target = self.subject if self.predicate else None
            if w in _SENTENCE_END:
                self._reset_sentence()
            elif w == ",":
                self.pending = {}
            elif w in _ARTICLES or w == "with":
                self.predicate, self.pending = False, {}
            elif w == "it" and self.last is None:
                self.last = self.previous
            elif w in ("is", "are") or (w == ":" and self.last):
                self.subject = self.last
                self.predicate = self.subject is not None
            elif w == "background":
                if "colour" in self.pending:
                    self._attach("background", "colour", self.pending.pop("colour"))
                self.last = "background"
            elif (w.isdigit() or w in vocab.WORD_NUMBERS) and nxt in _COUNT_NOUNS:
                self.count = int(w) if w.isdigit() else vocab.WORD_NUMBERS[w]
                i += 1
            elif w in vocab.SIDES and nxt == "edge":
                self._attach(vocab.MARGINAL_SHAPE, "side", w)
                i += 1
            elif w in _OBJECT_WORDS:
                self._object(w)
            elif w in _ATTRS:
                if nxt == "background" or (target == "background"):
                    self._attach("background", "colour", w)
                    self.predicate = False
                    if nxt == "background":
                        i += 1
                        self.last = "background"
                elif target:
                    self._attach(target, _ATTRS[w], w)
                else:
                    self.pending[_ATTRS[w]] = w
            elif w in vocab.BACKGROUNDS:
                if nxt == "background" or target == "background":
                    self._attach("background", "colour", w)
                elif target:
                    self._attach(target, "colour", w)  # "the circle is white": a wrong colour
                else:
                    self.pending["colour"] = w
            else:
                pos, used = _position_at(tok, i)
                if pos:
                    owner = target or self.last
                    if owner and owner not in ("background", vocab.MARGINAL_SHAPE):
                        self._attach(owner, "position", pos)
                    i += used - 1
            i += 1
        for shape in self.shapes_seen:
            if shape not in self.textured:
                self.facts.add(("texture", shape, vocab.DEFAULT_TEXTURE))
        count = self.count if self.count is not None else len(self.shapes_seen)
        if count:
            self.facts.add(("count", count))
        return self.facts


def text_facts(text: str) -> set[Fact]:
    """The facts a description claims (see the module docstring for the grammar)."""
    return _Parser().parse(text or "")
