"""The input and output files of candidate generation (``tools/generate_candidates.py``).

`iter_inputs` reads the records to generate for (LLaVA records, or every image under a folder);
`shard` keeps one shard's share of them; `done_ids` reads back what an interrupted run already wrote
(``--resume``), repairing a damaged output file first.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

from megatron_sicog.io import atomic_path, iter_records, loads

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
log = logging.getLogger("generate_candidates")


def iter_inputs(inputs: Optional[Sequence[str]], image_root: str) -> Iterator[tuple[str, object]]:
    """(where, record | RecordError) over the ``inputs`` files, or without them one record
    ``{"id", "image"}`` per image file under ``image_root`` (id = its relative path), in name order."""
    if inputs:
        for path in inputs:
            for line, rec in iter_records(path):
                yield f"{path}:{line}", rec
        return
    root = Path(image_root)
    if not root.is_dir():
        raise SystemExit(f"--image-root {root} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    for i, f in enumerate(files, start=1):
        rel = f.relative_to(root).as_posix()
        yield f"{root}:{i}", {"id": rel, "image": rel}


def shard(stream, index: int, count: int, limit: Optional[int] = None):
    """Item i of ``stream`` goes to shard ``i % count``: this shard's items, at most ``limit`` of them."""
    n = 0
    for i, item in enumerate(stream):
        if i % count == index:
            yield item
            n += 1
            if limit is not None and n >= limit:
                return


def done_ids(path: Path) -> set:
    """Ids already written. Damaged lines (a partial last line of a killed run, a line that is not a
    candidate record) are removed from the file, atomically, and their records are redone."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    lines = data.split(b"\n")
    out, keep, damaged = set(), [], []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = loads(line)
            rid = str(rec["id"])
            if not isinstance(rec.get("candidates"), list):
                raise ValueError("no 'candidates' list")
        except Exception as e:  # noqa: BLE001 - a damaged line: its record is generated again
            damaged.append(f"{lineno} ({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})")
            continue
        out.add(rid)
        keep.append(line)
    if damaged or (data and not data.endswith(b"\n")):
        _write_lines_atomic(path, keep)
        if damaged:
            log.warning(f"{path}: removed {len(damaged)} damaged line(s) (line {', '.join(damaged[:5])}); "
                        "their records will be generated again")
    return out


def _write_lines_atomic(path: Path, lines: list) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for line in lines:
                f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
