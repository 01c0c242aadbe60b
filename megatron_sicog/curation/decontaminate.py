"""Decontamination: keep benchmark and held-out items out of the self-generated training data.

`ExclusionIndex.build(specs, ...)` reads the excluded files and holds, per
excluded image, an exact hash (SHA-256 of the decoded RGB pixels and their
shape: the same picture in another container or compression level still
matches), two 64-bit perceptual hashes (`dhash`, `phash`) and a colour
thumbnail (`colour_signature`, 4x4 RGB means), a finer one (`cell_signature`,
16x16 RGB means) and the normalised text of every excluded question
(`normalize_question`). A re-encoded or resized copy matches when both Hamming
distances are <= `max_distance`, the 4x4 thumbnails differ by <= `max_colour`
(mean absolute, of 255; the hashes see only grey structure, so a blue square
on black and a yellow one on grey hash alike) and no cell of the 16x16
thumbnails differs by more than `max_cell` (largest absolute difference of a
channel, of 255). The 8x8 hashes alone collide on distinct simple pictures:
in the tiny demo's world (64-pixel shapes on flat backgrounds) 99 of 1,000
unlabelled images passed both hashes and the 4x4 thumbnail against a held-out one, though every
scene differs (another shape, size or texture of one object); the 16x16 check
leaves 4 of them (a texture, a size or a small object's shape is all that differs; the
synthetic world now redraws such scenes, `synthetic.splits`, so the demo drops none).
Copies of that world's 300 held-out images still match: 299 JPEG re-encodes
at quality 90 and at 75, 274 at 50, 193 at 30, all 300 resized to 48, 336 or
224 + JPEG, 299 at 32 pixels (tests/test_curation_decontaminate.py; crops are
not matched: 33 of 300 with a 3 % border cut off, 151 before the 16x16 check).

`index.check(images, question)` returns why a candidate item must be dropped
("exact_image", "near_image", "question") or None. Question matches are
always counted; they drop an item only when "question" is in `match` (a
world of templated questions, such as the tiny demo's, shares every question
between its splits, and there a question match says nothing about leakage).

Excluded files (a spec is ``FILE`` or ``NAME=FILE``):

* ``FILE`` (.jsonl / .json): LLaVA records (``image`` relative to the
  exclude image root, default the file's folder; the question is the
  ``question`` field or the first human turn without ``<image>``);
* ``NAME=FILE``: a benchmark in a format of ``tools/evaluate_benchmarks.py``
  (``mmbench=MMBench.tsv``: VLMEvalKit TSV with base64 images; ``pope=pope.jsonl``:
  POPE; ``chartqa=...``), read by `evaluation.benchmarks.load_benchmark`.

Near-duplicate search is a vectorised scan over all excluded hashes (fine for
benchmark-sized exclusions: 10^5 images x 10^6 candidates is minutes).
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, Path]
MATCH_KINDS = ("image", "question")
DEFAULT_MAX_DISTANCE = 6  # bits of 64, for each of dHash and pHash
DEFAULT_MAX_COLOUR = 16.0  # mean absolute difference of the 4x4 RGB thumbnails, of 255
DEFAULT_MAX_CELL = 40.0  # largest absolute difference of a cell of the 16x16 RGB thumbnails, of 255


# -- hashes ---------------------------------------------------------------------------
def _gray(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    im = Image.fromarray(arr[..., :3].astype(np.uint8), "RGB").convert("L")
    return np.asarray(im.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


def _bits_to_int(bits: np.ndarray) -> int:
    out = 0
    for b in bits.ravel():
        out = (out << 1) | int(bool(b))
    return out


def exact_hash(image: np.ndarray) -> str:
    """SHA-256 of the decoded RGB pixels and their shape."""
    arr = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def dhash(image: np.ndarray) -> int:
    """Difference hash: 8x9 grey thumbnail, one bit per horizontal neighbour pair (left > right)."""
    g = _gray(image, (9, 8))
    return _bits_to_int(g[:, :-1] > g[:, 1:])


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m  # orthonormal DCT-II: coefficients = m @ x


_DCT32 = _dct_matrix(32)


def phash(image: np.ndarray) -> int:
    """DCT hash: 32x32 grey thumbnail, the 8x8 lowest frequencies, one bit per coefficient above
    their median (the DC term left out of the median)."""
    g = _gray(image, (32, 32))
    low = (_DCT32 @ g @ _DCT32.T)[:8, :8]
    return _bits_to_int(low > np.median(low.ravel()[1:]))


def _thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    im = Image.fromarray(arr[..., :3].astype(np.uint8), "RGB").resize((side, side), Image.Resampling.BOX)
    return np.asarray(im, dtype=np.float32).ravel()


def colour_signature(image: np.ndarray) -> np.ndarray:
    """4x4 RGB thumbnail (box filter), float32 [48]."""
    return _thumbnail(image, 4)


def cell_signature(image: np.ndarray) -> np.ndarray:
    """16x16 RGB thumbnail (box filter), float32 [768]."""
    return _thumbnail(image, 16)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def _popcount64(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


# -- questions -------------------------------------------------------------------------
_PUNCT = re.compile(r"[^\w\s]")


def normalize_question(text: Optional[str]) -> Optional[str]:
    """Lower case, NFKC, no ``<image>``, punctuation and runs of spaces removed; None when empty."""
    if not isinstance(text, str):
        return None
    t = unicodedata.normalize("NFKC", text).replace("<image>", " ").lower()
    t = " ".join(_PUNCT.sub(" ", t).split())
    return t or None


def question_of_prompt(prompt: str) -> Optional[str]:
    """The question inside a generation prompt (`prompts.PROMPTS` templates with ``{question}``),
    None for a prompt of a mode without one (captions)."""
    from megatron_sicog.prompts import PROMPTS

    body = prompt.replace("<image>", "").strip()
    for template in PROMPTS.values():
        if "{question}" not in template:
            continue
        head, _, tail = template.partition("{question}")
        if body.startswith(head.strip()) and body.endswith(tail.strip()):
            q = body[len(head.strip()):len(body) - len(tail.strip())] if tail.strip() else body[len(head.strip()):]
            return q.strip() or None
    return None


# -- the index ---------------------------------------------------------------------------
@dataclass
class ExclusionIndex:
    match: tuple[str, ...] = MATCH_KINDS
    max_distance: int = DEFAULT_MAX_DISTANCE
    max_colour: float = DEFAULT_MAX_COLOUR
    max_cell: float = DEFAULT_MAX_CELL
    exact: dict = field(default_factory=dict)          # exact hash -> where
    dhashes: list = field(default_factory=list)
    phashes: list = field(default_factory=list)
    colours: list = field(default_factory=list)
    cells: list = field(default_factory=list)
    where: list = field(default_factory=list)           # per perceptual entry
    questions: dict = field(default_factory=dict)       # normalised question -> where
    files: list = field(default_factory=list)           # {"file", "format", "items", "images", "questions"}
    counts: Counter = field(default_factory=Counter)    # reason -> items dropped
    question_matches: int = 0                           # items whose question matched (dropped or not)
    _d: Optional[np.ndarray] = None
    _p: Optional[np.ndarray] = None
    _c: Optional[np.ndarray] = None
    _t: Optional[np.ndarray] = None

    @classmethod
    def build(cls, specs: Sequence[str], image_root: Optional[PathLike] = None,
              match: Iterable[str] = MATCH_KINDS, max_distance: int = DEFAULT_MAX_DISTANCE,
              max_colour: float = DEFAULT_MAX_COLOUR, max_cell: float = DEFAULT_MAX_CELL) -> "ExclusionIndex":
        match = tuple(match)
        for m in match:
            if m not in MATCH_KINDS:
                raise ValueError(f"unknown exclusion match {m!r}; expected some of {MATCH_KINDS}")
        idx = cls(match=match, max_distance=int(max_distance), max_colour=float(max_colour),
                  max_cell=float(max_cell))
        for spec in specs:
            idx._add_spec(str(spec), image_root)
        return idx.freeze()

    def freeze(self) -> "ExclusionIndex":
        """Stack the added images' hashes and thumbnails for `image_match` (after the last `add_image`)."""
        self._d = np.array(self.dhashes, dtype=np.uint64)
        self._p = np.array(self.phashes, dtype=np.uint64)
        self._c = np.array(self.colours, dtype=np.float32).reshape(len(self.colours), 48)
        self._t = np.array(self.cells, dtype=np.float32).reshape(len(self.cells), 768)
        return self

    def add_image(self, image: np.ndarray, where: str) -> None:
        self.exact.setdefault(exact_hash(image), where)
        self.dhashes.append(dhash(image))
        self.phashes.append(phash(image))
        self.colours.append(colour_signature(image))
        self.cells.append(cell_signature(image))
        self.where.append(where)

    def _add_spec(self, spec: str, image_root: Optional[PathLike]) -> None:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "", spec
        path_ = Path(path)
        if not path_.is_file():
            raise FileNotFoundError(f"--exclude {spec}: no such file")
        n_img0, n_q0 = len(self.where), len(self.questions)
        if name:
            n_items = self._add_benchmark(name, path_, image_root)
            fmt = name
        else:
            n_items = self._add_llava(path_, image_root)
            fmt = "llava"
        self.files.append({"file": str(path_), "format": fmt, "items": n_items,
                           "images": len(self.where) - n_img0, "questions": len(self.questions) - n_q0})

    def _add_llava(self, path: Path, image_root: Optional[PathLike]) -> int:
        from megatron_sicog.data.image import load_image
        from megatron_sicog.generation.candidates import record_question
        from megatron_sicog.io import RecordError, iter_records

        root = Path(image_root) if image_root is not None else path.parent
        n = 0
        seen_images: set = set()
        for line, rec in iter_records(path):
            where = f"{path}:{line}"
            if isinstance(rec, RecordError) or not isinstance(rec, dict):
                raise ValueError(f"{where}: not a record ({getattr(rec, 'reason', type(rec).__name__)})")
            n += 1
            q = normalize_question(record_question(rec))
            if q:
                self.questions.setdefault(q, where)
            image = rec.get("image")
            for p in ([image] if isinstance(image, str) else image if isinstance(image, list) else []):
                if p in seen_images:
                    continue
                seen_images.add(p)
                full = Path(p) if Path(p).is_absolute() else root / p
                try:
                    arr = np.asarray(load_image(full), dtype=np.uint8)
                except (OSError, ValueError) as e:
                    raise ValueError(f"{where}: excluded image {full} does not load ({e})") from None
                self.add_image(arr, where)
        return n

    def _add_benchmark(self, name: str, path: Path, image_root: Optional[PathLike]) -> int:
        from megatron_sicog.evaluation.benchmarks import load_benchmark

        bench = load_benchmark(name, path, image_root)  # BenchmarkError names file and row
        seen: set = set()
        for it in bench.items:
            q = normalize_question(it.get("raw_question") or it.get("question"))
            if q:
                self.questions.setdefault(q, it["where"])
            for ref in it["images"]:
                if ref in seen:
                    continue
                seen.add(ref)
                self.add_image(ref.decode(), ref.where)
        return len(bench.items)

    # -- checking ------------------------------------------------------------------------
    def image_match(self, image: np.ndarray) -> Optional[tuple[str, str]]:
        """("exact_image" | "near_image", where) of the excluded image `image` copies, or None."""
        hit = self.exact.get(exact_hash(image))
        if hit is not None:
            return "exact_image", hit
        if self._d is None or not len(self._d):
            return None
        d = _popcount64(self._d ^ np.uint64(dhash(image)))
        p = _popcount64(self._p ^ np.uint64(phash(image)))
        c = np.abs(self._c - colour_signature(image)[None]).mean(axis=1)
        close = np.nonzero((d <= self.max_distance) & (p <= self.max_distance) & (c <= self.max_colour))[0]
        if len(close):
            cell = np.abs(self._t[close] - cell_signature(image)[None]).max(axis=1)
            close = close[cell <= self.max_cell]
        if len(close):
            return "near_image", self.where[int(close[np.argmin(d[close] + p[close])])]
        return None

    def check(self, images: Sequence[np.ndarray], question: Optional[str]) -> Optional[tuple[str, str]]:
        """(reason, where of the excluded item) when the item must be dropped, else None (counted)."""
        qhit = self.questions.get(normalize_question(question)) if question else None
        if qhit is not None:
            self.question_matches += 1
        if "image" in self.match:
            for im in images:
                hit = self.image_match(im)
                if hit is not None:
                    self.counts[hit[0]] += 1
                    return hit
        if qhit is not None and "question" in self.match:
            self.counts["question"] += 1
            return "question", qhit
        return None

    def summary(self) -> dict:
        return {"files": self.files, "match": list(self.match), "max_distance": self.max_distance,
                "max_colour": self.max_colour, "max_cell": self.max_cell,
                "excluded_images": len(self.where), "excluded_questions": len(self.questions),
                "dropped": {k: int(self.counts.get(k, 0))
                            for k in ("exact_image", "near_image", "question", "unverifiable_image")},
                "dropped_total": int(sum(self.counts.values())), "question_matches": int(self.question_matches)}
