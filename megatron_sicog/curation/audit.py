"""Label-quality audit of curation: precision of the kept labels at each threshold.

A user who holds known labels for a slice of the unlabelled data passes them
(``tools/curate.py --audit FILE...``, JSONL or a JSON list) as records
``{"id", "answer"}`` (reasoning items) and/or ``{"id", "caption"}`` or
``{"id", "scene_graph"}`` (caption items). Every scored item whose id has a
label of its task gets a label precision in [0, 1] for the label curation
would keep for it (whatever the threshold):

* ``answer``: 1 when the kept answer is the known one (`same_answer` on the
  vote keys, option text read as its letter as in the vote), else 0 (also
  when the kept candidate states no answer);
* ``scene_graph`` (the synthetic world's graph): the fact precision of the
  kept caption's final description, correct claims / claims
  (`evaluation.metrics.caption_fidelity`);
* ``caption``: the clipped unigram precision of the kept final description
  against the known caption's, content words only (stop words of
  `scorers.STOP_WORDS` left out): sum_w min(kept_w, known_w) / sum_w kept_w.

`audit_curve` turns the (score, precision) pairs of one task into, at each
threshold t: the labelled items kept (score >= t), their share of the labelled
items and their mean precision (None when none is kept). A caption scene graph
is preferred to a caption text when an id has both. Items that never reach a
label (dropped before scoring, or reasoning items where every candidate
abstained) are not in the audit.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from megatron_sicog.io import RecordError, iter_records
from megatron_sicog.records import error_record

__all__ = ["AuditLabels", "audit_curve", "unigram_precision", "LABEL_FIELDS", "MEASURES"]

LABEL_FIELDS = {"answer": "reasoning", "scene_graph": "caption", "caption": "caption"}
MEASURES = {
    "answer": "kept answer equals the known answer (1/0)",
    "scene_graph": "fact precision of the kept caption against the scene graph",
    "caption": "clipped unigram precision (content words) of the kept caption against the known caption",
}


def unigram_precision(kept: str, known: str) -> float:
    """Share of the kept text's content words found in the known text (counts clipped)."""
    from megatron_sicog.curation.scorers import STOP_WORDS, lexical_tokens

    k = Counter(t for t in lexical_tokens(kept or "") if t not in STOP_WORDS)
    r = Counter(t for t in lexical_tokens(known or "") if t not in STOP_WORDS)
    total = sum(k.values())
    return sum(min(c, r[w]) for w, c in k.items()) / total if total else 0.0


@dataclass
class AuditLabels:
    """Known labels by id, read from the audit files."""

    files: list[str]
    labels: dict[str, dict] = field(default_factory=dict)   # str(id) -> {field: value}
    errors: list[dict] = field(default_factory=list)
    seen: set = field(default_factory=set)                  # ids matched by a scored item

    @classmethod
    def load(cls, paths: Sequence[Union[str, Path]]) -> "AuditLabels":
        """Read the label files; a record without an id or a label field is an error record,
        a field given twice for one id keeps the first."""
        out = cls([str(p) for p in paths])
        for p in paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"audit file not found: {p}")
            for line, rec in iter_records(p):
                if isinstance(rec, RecordError):
                    out.errors.append(rec.as_dict())
                    continue
                rid = rec.get("id")
                if not isinstance(rid, (str, int)) or isinstance(rid, bool):
                    out.errors.append(error_record(p, line, None, "audit_invalid_record: missing or invalid 'id'"))
                    continue
                given = {f: rec[f] for f in LABEL_FIELDS if rec.get(f) is not None}
                if "scene_graph" in given and not isinstance(given["scene_graph"], dict):
                    out.errors.append(error_record(p, line, rid, "audit_invalid_record: 'scene_graph' is not an object"))
                    given.pop("scene_graph")
                if not given:
                    out.errors.append(error_record(p, line, rid, "audit_invalid_record: no 'answer', 'caption' "
                                                                 "or 'scene_graph'"))
                    continue
                have = out.labels.setdefault(str(rid), {})
                for f, v in given.items():
                    if f in have:
                        out.errors.append(error_record(p, line, rid, f"audit_duplicate: '{f}' of this id given "
                                                                     "before (first kept)"))
                    else:
                        have[f] = v
        return out

    def judge(self, item: Any, kept_text: str, answer_key: Optional[str]) -> Optional[tuple[float, str]]:
        """(label precision, label field) of the label kept for `item`, None when it has no label."""
        have = self.labels.get(str(item.id))
        if not have:
            return None
        if item.task == "reasoning" and "answer" in have:
            from megatron_sicog.curation.answers import same_answer
            from megatron_sicog.curation.vote import candidate_answer, parse_options

            self.seen.add(str(item.id))
            truth = candidate_answer(str(have["answer"]), parse_options(item.prompt))
            return float(bool(answer_key) and bool(truth) and same_answer(truth, answer_key)), "answer"
        if item.task == "caption" and ("scene_graph" in have or "caption" in have):
            from megatron_sicog.prompts import final_description

            self.seen.add(str(item.id))
            text = final_description(kept_text or "")
            if "scene_graph" in have:
                from megatron_sicog.evaluation.metrics import caption_fidelity

                return caption_fidelity(text, have["scene_graph"]).precision, "scene_graph"
            return unigram_precision(text, final_description(str(have["caption"]))), "caption"
        return None

    def summary(self) -> dict:
        return {"files": self.files, "labels": len(self.labels), "matched": len(self.seen),
                "errors": len(self.errors)}


def audit_curve(pairs: Sequence[tuple[float, float]], thresholds: Sequence[float],
                threshold: Optional[float], kinds: Counter) -> dict:
    """Kept count, kept fraction and mean label precision of the labelled items at each threshold.

    `pairs`: (best score, label precision) per labelled scored item; an item is
    kept at t when its score >= t (the pipeline's rule, 1e-9 tolerance).
    `threshold`: the one in effect, reported on its own as ``at_threshold``.
    """
    scores = np.asarray([s for s, _ in pairs], dtype=np.float64)
    quality = np.asarray([q for _, q in pairs], dtype=np.float64)
    n = scores.size

    def at(t: float) -> dict:
        mask = scores >= t - 1e-9
        k = int(mask.sum())
        return {"threshold": float(t), "kept": k, "kept_fraction": round(k / n, 4) if n else None,
                "precision": round(float(quality[mask].mean()), 4) if k else None}

    points = [at(t) for t in thresholds]
    return {
        "labelled": int(n),
        "measure": "; ".join(f"{f}: {MEASURES[f]} ({c} items)" for f, c in sorted(kinds.items())),
        "thresholds": [p["threshold"] for p in points],
        "kept": [p["kept"] for p in points],
        "kept_fraction": [p["kept_fraction"] for p in points],
        "precision": [p["precision"] for p in points],
        "at_threshold": at(threshold if threshold is not None and np.isfinite(threshold) else 0.0),
    }
