"""Preference pairs for DPO from curated JSONL (``tools/curate.py --preference-output``).

Record: ``{"id", "image"?, "conversations": [human turn(s), ...], "chosen": str,
"rejected": str}``. The prompt is every turn up to the last human turn; chosen
and rejected become the assistant reply. Bad records are reported with file
and line and skipped; an empty result is an error.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from megatron_sicog.data.chat_template import encode_conversation
from megatron_sicog.data.image import decode_image
from megatron_sicog.guards import confined_path
from megatron_sicog.io import RecordError, iter_records

log = logging.getLogger(__name__)


class PreferenceDataset:
    def __init__(self, paths: list[str], tokenizer, template: str, image_root: Optional[str] = None):
        self.items: list[dict] = []
        self.errors: list[str] = []
        for path in paths:
            for line, rec in iter_records(path):
                if isinstance(rec, RecordError):
                    self.errors.append(str(rec))
                    continue
                try:
                    self.items.append(self._encode(rec, tokenizer, template, image_root))
                except (KeyError, ValueError, OSError, TypeError) as e:
                    self.errors.append(f"{path}:{line}: {e}")
        for e in self.errors[:20]:
            log.warning("skipped preference record: %s", e)
        if not self.items:
            raise ValueError(f"no usable preference pairs in {paths} ({len(self.errors)} bad records)")

    @staticmethod
    def _encode(rec: dict, tokenizer, template: str, image_root: Optional[str]) -> dict:
        if not isinstance(rec.get("chosen"), str) or not isinstance(rec.get("rejected"), str):
            raise ValueError("record needs string 'chosen' and 'rejected'")
        turns = [t for t in rec["conversations"] if t.get("from") != "gpt"] or rec["conversations"][:1]
        images = []
        if rec.get("image"):
            path = Path(confined_path(image_root, rec["image"]))  # ValueError when it leaves --image-root
            images = [decode_image(path.read_bytes())]
        out = {}
        for side in ("chosen", "rejected"):
            ids, mask = encode_conversation(tokenizer, turns + [{"from": "gpt", "value": rec[side]}], template)
            out[side] = {"tokens": np.asarray(ids, np.int64), "loss_mask": np.asarray(mask, np.uint8),
                         "images": images}
        return out

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]
