"""Reading benchmark files: TSV (VLMEvalKit) and JSONL / JSON lists, with row-exact errors.

Every reader yields ``(where, row)`` pairs where ``where`` is ``"FILE:row N"``
(``N`` is the 1-based data row of a TSV, the line of a JSONL file, the index
in a JSON list), so an error can name the file and row. `BenchmarkError` is
the one exception type of the benchmark code: its message is what the user
sees.

Images: a VLMEvalKit TSV stores them as base64 in ``image``; a cell of at
most 64 characters is the ``index`` of another row whose image it shares, and
a cell holding a JSON list (``["...", "..."]``) is several images. JSON rows
name image files relative to an image root (default: the benchmark file's
folder). `ImageRef` keeps the encoded form; `decode` turns it into an
``HxWx3`` uint8 array and raises `BenchmarkError` naming the row when it does
not decode.
"""
from __future__ import annotations

import base64
import binascii
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from megatron_sicog.io import RecordError, iter_records

PathLike = Union[str, Path]
REFERENCE_MAX_LEN = 64  # VLMEvalKit: a shorter image cell is another row's index


class BenchmarkError(ValueError):
    """Bad benchmark input; the message names the file and row."""


@dataclass(frozen=True)
class ImageRef:
    """One image of a benchmark row: base64 data or a file path."""

    where: str = field(compare=False)  # the row it came from (equal data = one image)
    base64: Optional[str] = None
    path: Optional[Path] = None

    def decode(self) -> np.ndarray:
        from megatron_sicog.data.image import decode_image, load_image

        try:
            if self.path is not None:
                return np.asarray(load_image(self.path), dtype=np.uint8)
            try:
                data = base64.b64decode(self.base64, validate=False)
            except (binascii.Error, ValueError) as e:
                raise ValueError(f"invalid base64: {e}") from None
            return decode_image(data)
        except ValueError as e:
            raise BenchmarkError(f"{self.where}: image does not decode ({e})") from None


def read_rows(path: PathLike) -> Iterator[tuple[str, dict]]:
    """(where, row dict) of a .tsv (header row; cells as strings, empty = missing) or JSONL / JSON list."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such benchmark file")
    if path.suffix.lower() in (".tsv", ".csv"):
        yield from _read_tsv(path, "," if path.suffix.lower() == ".csv" else "\t")
        return
    for n, rec in iter_records(path):
        if isinstance(rec, RecordError):
            raise BenchmarkError(f"{path}:{'line' if n else 'row'} {n}: {rec.reason}")
        yield f"{path}:row {n}", rec


def _read_tsv(path: Path, delimiter: str) -> Iterator[tuple[str, dict]]:
    csv.field_size_limit(sys.maxsize)  # base64 images are long cells
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise BenchmarkError(f"{path}: empty file (no header row)") from None
        except csv.Error as e:
            raise BenchmarkError(f"{path}: header row: {e}") from None
        header = [h.strip() for h in header]
        n = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise BenchmarkError(f"{path}:row {n + 1}: {e}") from None
            n += 1
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise BenchmarkError(f"{path}:row {n}: {len(cells)} cells, the header has {len(header)}")
            yield f"{path}:row {n}", {h: c for h, c in zip(header, cells) if c != ""}


def require(row: dict, where: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if row.get(c) in (None, "")]
    if missing:
        raise BenchmarkError(f"{where}: missing column(s) {', '.join(repr(c) for c in missing)} "
                             f"(has {', '.join(sorted(row)) or 'none'})")


def first(row: dict, names: Sequence[str]):
    """The value of the first of `names` present in `row`, else None."""
    for n in names:
        if row.get(n) not in (None, ""):
            return row[n]
    return None


def row_id(value) -> str:
    """Ids as VLMEvalKit compares them: ``3``, ``3.0`` and ``"3"`` are one id."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    s = str(value).strip()
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if f.is_integer() and "." in s else s


def tsv_images(rows: list[tuple[str, dict]]) -> dict[str, list[ImageRef]]:
    """index -> images for the rows of a TSV, following index references (<= 64 chars)."""
    cells = {row_id(r["index"]): (w, r.get("image", "")) for w, r in rows}
    out: dict[str, list[ImageRef]] = {}
    for idx, (where, cell) in cells.items():
        cell = cell.strip()
        if cell and len(cell) <= REFERENCE_MAX_LEN:
            target = cells.get(row_id(cell))
            if target is None or len(target[1].strip()) <= REFERENCE_MAX_LEN:
                raise BenchmarkError(f"{where}: image {cell!r} is neither base64 data nor the index of a row "
                                     "with an image")
            where, cell = target[0], target[1].strip()
        if not cell:
            raise BenchmarkError(f"{where}: missing column 'image'")
        if cell.startswith("["):
            try:
                datas = json.loads(cell)
            except json.JSONDecodeError as e:
                raise BenchmarkError(f"{where}: image list is not valid JSON ({e})") from None
            out[idx] = [ImageRef(where, base64=d) for d in datas]
        else:
            out[idx] = [ImageRef(where, base64=cell)]
    return out


def path_images(value, where: str, root: Path) -> list[ImageRef]:
    paths = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise BenchmarkError(f"{where}: 'image' must be a file name or a list of them, got {value!r}")
    return [ImageRef(where, path=root / p) for p in paths]


def attach_tsv_images(items: list[dict], rows: list[tuple[str, dict]], id_columns: Sequence[str]) -> None:
    """Set each item's ``images`` from the base64 cells of its TSV row (id from the first of `id_columns`)."""
    images = tsv_images([(w, dict(r, index=first(r, id_columns))) for w, r in rows])
    for it in items:
        it["images"] = images[it["id"]]


def mean(flags) -> Optional[float]:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else None


def breakdown(rows: list[dict], key: str, hit: str = "hit") -> dict:
    """{value of `key`: mean of `hit`} over the rows that have a `key`."""
    by: dict = {}
    for r in rows:
        if r.get(key) is not None:
            by.setdefault(r[key], []).append(r[hit])
    return {k: mean(v) for k, v in sorted(by.items())}
