"""The one shape of an error record, written by every tool: ``{"file", "line", "id", "reason"}``.

``file`` is the input file (or folder) the record came from, ``line`` its
1-based line (or list index), ``id`` the record's id when it has one (else
None) and ``reason`` one human sentence. `error_record` builds it;
`split_where` turns a ``"path:line"`` location into (file, line).
"""
from __future__ import annotations

from typing import Any, Optional

ERROR_KEYS = ("file", "line", "id", "reason")


def error_record(file: Optional[str], line: Optional[int], id: Any, reason: str) -> dict:  # noqa: A002
    return {"file": None if file is None else str(file), "line": None if line is None else int(line),
            "id": id, "reason": str(reason)}


def split_where(where: str) -> tuple[str, Optional[int]]:
    """``"data/a.jsonl:12"`` -> ("data/a.jsonl", 12); a location without a line -> (where, None)."""
    head, sep, tail = str(where).rpartition(":")
    if sep and tail.isdigit():
        return head, int(tail)
    return str(where), None
