"""Writing benchmark files in the published formats (the demo's exports, test fixtures).

`image_base64(image)` is a PNG as VLMEvalKit stores it in a TSV cell;
`write_tsv(path, rows)` writes rows (dicts) under the union of their keys in
first-seen order, tab-separated with a header, atomically.
"""
from __future__ import annotations

import base64
import csv
import io
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from megatron_sicog.io import atomic_path

MCQ_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "l2-category", "split")


def image_base64(image) -> str:
    """Base64 PNG of a PIL image or an HxWx3 uint8 array."""
    from megatron_sicog.data.image import encode_image_bytes

    if not isinstance(image, np.ndarray):
        image = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return base64.b64encode(encode_image_bytes(image, "PNG")).decode("ascii")


def write_tsv(path: Union[str, Path], rows: Iterable[dict], columns: Iterable[str] = ()) -> int:
    rows = list(rows)
    header = list(columns)
    for r in rows:
        header.extend(k for k in r if k not in header)
    header = [h for h in header if any(h in r for r in rows)] or header
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if r.get(h) is None else r[h] for h in header])
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buf.getvalue(), encoding="utf-8")
    return len(rows)
