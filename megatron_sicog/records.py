"""The record formats the tools exchange, in one place: what each JSONL line holds, who writes it, who reads it.

=================  ==========================================  ====================================  =========================
record             keys (``?``: optional)                       written by                            read by
=================  ==========================================  ====================================  =========================
conversation       ``id``, ``image``? (a path or a list, one    the user; the demo's                  tools/preprocess_data.py
                   per ``<image>`` in the human turns),         ``make_synthetic_data.py``
                   ``conversations``: [{``from``, ``value``}]
plain document     ``text``                                     the user                              tools/preprocess_data.py
candidate          `CANDIDATE_KEYS` + ``reference``?,           tools/generate_candidates.py          tools/curate.py
                   ``provenance``                               (`generation.candidates`)
curated            `CURATED_KEYS` (a conversation: the prompt   tools/curate.py                       tools/preprocess_data.py
                   and the kept candidate) + ``reference``?,    (`curation.pipeline`)
                   ``provenance``; reasoning items also
                   ``answer``, ``answer_key``, ``answers``,
                   ``abstentions``
preference pair    `PREFERENCE_KEYS`: a curated record +        tools/curate.py                       preprocess_data.py
                   the chosen and the rejected candidate        ``--preference-output``               ``--preference`` (two
                                                                                                      documents a pair)
error record       `ERROR_KEYS`                                 every tool, for a record it skips     the user
=================  ==========================================  ====================================  =========================

``task`` is "caption" (CoD) or "reasoning" (CoT); ``candidates`` are the sampled responses, candidate k
the k-th entry; ``kept_index`` and ``rejected_index`` index that list, ``scores`` hold curation's score of
each candidate and ``score`` the kept one's.

The one shape of an error record, written by every tool: ``{"file", "line", "id", "reason"}``.

``file`` is the input file (or folder) the record came from, ``line`` its
1-based line (or list index), ``id`` the record's id when it has one (else
None) and ``reason`` one human sentence. `error_record` builds it;
`split_where` turns a ``"path:line"`` location into (file, line).

Provenance (``"provenance"`` on candidate, curated and preference records): see the
block comment above `PROVENANCE_KEY`.
"""
from __future__ import annotations

from typing import Any, Optional

ERROR_KEYS = ("file", "line", "id", "reason")
CANDIDATE_KEYS = ("id", "image", "task", "prompt", "candidates")
CURATED_KEYS = ("id", "image", "task", "conversations", "score", "kept_index", "candidates", "scores")
PREFERENCE_KEYS = CURATED_KEYS + ("chosen", "rejected", "chosen_score", "rejected_score", "rejected_index")


def error_record(file: Optional[str], line: Optional[int], id: Any, reason: str) -> dict:  # noqa: A002
    return {"file": None if file is None else str(file), "line": None if line is None else int(line),
            "id": id, "reason": str(reason)}


def split_where(where: str) -> tuple[str, Optional[int]]:
    """``"data/a.jsonl:12"`` -> ("data/a.jsonl", 12); a location without a line -> (where, None)."""
    head, sep, tail = str(where).rpartition(":")
    if sep and tail.isdigit():
        return head, int(tail)
    return str(where), None


# -- provenance ----------------------------------------------------------------------
# Every candidate record carries ``"provenance"`` (what produced it), and every curated
# (and preference) record carries the same dict plus the index of the kept candidate and
# what curation decided (scorer, threshold, convention)::
#
#   candidate: {"checkpoint": {"kind", "path", "iteration", "meta_sha256"}, "mode",
#               "prompt_template", "chat_template", "sampling": {"temperature", "top_p", "top_k"},
#               "max_new_tokens", "num_candidates", "seed", "candidate_seed_rule"}
#   curated:   candidate's provenance (or {} when the candidate file had none) +
#              {"candidate_index", "source": {"file", "line"}, "curation": {"scorer", "embedding_model",
#               "on", "threshold", "threshold_rule", "convention"}, "decontamination"?: {...}}
#
# ``checkpoint.kind`` is "load" (a checkpoint of this project: meta_sha256 hashes its
# iteration's meta.json), "hf" (a Hugging Face directory: config.json is hashed) or
# "random_init" (no weights; path is the preset name). A candidate k of record `id` was
# sampled with `generation.sampling.row_seed(seed, id, k)`, so (provenance, id, k) reproduces it.
PROVENANCE_KEY = "provenance"
CANDIDATE_SEED_RULE = "row_seed(seed, id, candidate_index)"


def file_sha256(path) -> Optional[str]:
    """Hex SHA-256 of a file's bytes, None when it cannot be read."""
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def checkpoint_provenance(load=None, iteration: Optional[int] = None, hf_path=None,
                          random_init: Optional[str] = None) -> dict:
    """Identity of the weights a generation ran with (see the block comment above)."""
    from pathlib import Path

    if load is not None:
        from megatron_sicog.training.checkpointing import iteration_dir

        d = iteration_dir(load, iteration)
        name = d.name
        it = int(name.rsplit("_", 1)[-1]) if name.rsplit("_", 1)[-1].isdigit() else iteration
        return {"kind": "load", "path": str(Path(load).resolve()), "iteration": it,
                "meta_sha256": file_sha256(d / "meta.json")}
    if hf_path is not None:
        return {"kind": "hf", "path": str(Path(hf_path).resolve()), "iteration": None,
                "meta_sha256": file_sha256(Path(hf_path) / "config.json")}
    return {"kind": "random_init", "path": random_init, "iteration": None, "meta_sha256": None}


def generation_provenance(checkpoint: Optional[dict], *, mode: str, prompt_template: str, chat_template: str,
                          temperature: float, top_p: float, top_k: int, max_new_tokens: int,
                          num_candidates: int, seed: int) -> dict:
    return {"checkpoint": checkpoint, "mode": mode, "prompt_template": prompt_template,
            "chat_template": chat_template,
            "sampling": {"temperature": float(temperature), "top_p": float(top_p), "top_k": int(top_k)},
            "max_new_tokens": int(max_new_tokens), "num_candidates": int(num_candidates), "seed": int(seed),
            "candidate_seed_rule": CANDIDATE_SEED_RULE}


def curated_provenance(candidate_provenance: Optional[dict], candidate_index: int, source: tuple,
                       curation: dict) -> dict:
    out = dict(candidate_provenance) if isinstance(candidate_provenance, dict) else {}
    out.update({"candidate_index": int(candidate_index),
                "source": {"file": str(source[0]), "line": int(source[1])}, "curation": curation})
    return out


def without_checkpoint(record: dict) -> dict:
    """`record` with provenance.checkpoint removed: two runs of the same weights from different
    files (a checkpoint and its HF export) compare equal on everything else."""
    prov = record.get(PROVENANCE_KEY)
    if not isinstance(prov, dict):
        return record
    return dict(record, **{PROVENANCE_KEY: {k: v for k, v in prov.items() if k != "checkpoint"}})
