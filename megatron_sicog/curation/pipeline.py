"""Self-consistency curation: candidate files in, curated LLaVA records out.

`curate(...)` is the whole stage as one library call (``tools/curate.py`` is a
thin CLI over it, and the end-to-end loop and the sbatch recipe run that CLI):

1. read candidate records ``{"id", "image", "task", "prompt", "candidates",
   "reference"?}`` from one or more JSONL / JSON-list files; malformed lines,
   invalid records, duplicate ids, empty candidate lists and non-string
   candidates go to an errors JSONL (file + line) and are skipped;
2. optionally drop candidates that do not follow the CoD / CoT step format
   (``require_format``);
3. score chunks of items: captions by minimum-Bayes-risk over the final
   description of each candidate (`scorers`, the chosen scorer), reasoning by
   majority vote over normalised final answers (`vote`; the kept CoT among the
   winner's supporters is the one closest to all candidates by the lexical
   MBR score, whatever the caption scorer), kept response = the best candidate;
4. keep items whose best score >= the task's threshold, write them (and the
   optional preference pairs) atomically, and write the report.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from megatron_sicog.curation.report import CurationStats, summary_dict, write_report
from megatron_sicog.curation.scorers import BaseScorer, LexicalScorer, Scorer, as_scorer, make_scorer
from megatron_sicog.curation.answers import same_answer
from megatron_sicog.curation.vote import candidate_answer, candidate_answers, parse_options, surface_answer, vote
from megatron_sicog.io import RecordError, atomic_path, dumps, iter_records
from megatron_sicog.records import PROVENANCE_KEY, curated_provenance, error_record
from megatron_sicog.prompts import IMAGE_PLACEHOLDER, conclusion, final_description, follows_format

__all__ = [
    "Item",
    "Outcome",
    "CurationConfig",
    "Curator",
    "CurationResult",
    "curate",
    "parse_item",
    "pick_rejected",
    "errors_path_for",
]

TASK_FORMAT = {"caption": "cod", "reasoning": "cot"}
PathLike = Union[str, os.PathLike]


@dataclass
class Item:
    """One valid candidate record, ready to score."""

    id: Any
    task: str
    prompt: str
    candidates: list[str]
    image: Any = None
    reference: Any = None
    source: tuple[str, int] = ("<memory>", 0)
    provenance: Optional[dict] = None  # the candidate record's (records.generation_provenance)
    original_index: Optional[list[int]] = None  # candidates[i] was entry original_index[i] of the file's list


@dataclass
class Outcome:
    item: Item
    record: Optional[dict] = None         # the curated record when kept
    preference: Optional[dict] = None
    dropped: Optional[str] = None         # item-level drop reason
    score: Optional[float] = None         # best score (None when never scored)
    preference_skipped: Optional[str] = None
    reference_correct: Optional[bool] = None
    audit: Optional[tuple[float, str]] = None  # (label precision, label field) when --audit knows this id


@dataclass
class CurationConfig:
    caption_threshold: float = 0.0
    reasoning_threshold: float = 0.0
    require_format: bool = False
    min_candidates: int = 2
    seed: int = 0
    preferences: bool = False
    reasoning_scorer: str = "vote"         # or "mbr": embedding MBR on the conclusion step (the reference's)
    keep_fraction: Optional[float] = None  # keep the best-scoring share of each task instead of a threshold

    def threshold(self, task: str) -> float:
        return self.caption_threshold if task == "caption" else self.reasoning_threshold


def errors_path_for(output: PathLike) -> Path:
    """``curated.jsonl`` -> ``curated.errors.jsonl`` (next to the output)."""
    p = Path(output)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.errors.jsonl")


def _err(path: str, line: int, reason: str, rec: Optional[dict] = None) -> dict:
    return error_record(path, line, rec.get("id") if isinstance(rec, dict) else None, reason)


def parse_item(rec: dict, path: str = "<memory>", line: int = 0) -> tuple[Optional[Item], list[dict], Counter]:
    """Validate one candidate record.

    Returns (item or None, error dicts, candidate counters). Non-string
    candidates are reported and left out; blank strings are counted (a
    generation that produced nothing) and left out. The item is None when the
    record itself is unusable (the first error says why).
    """
    errors: list[dict] = []
    counts: Counter = Counter()
    rid = rec.get("id")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or (isinstance(rid, str) and not rid.strip()):
        return None, [_err(path, line, "invalid_record: missing or invalid 'id'", rec)], counts
    task = rec.get("task")
    if task not in TASK_FORMAT:
        return None, [_err(path, line, f"invalid_record: task must be 'caption' or 'reasoning', got {task!r}", rec)], counts
    prompt = rec.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return None, [_err(path, line, "invalid_record: missing or non-string 'prompt'", rec)], counts
    cands = rec.get("candidates")
    if not isinstance(cands, list):
        return None, [_err(path, line, f"invalid_record: 'candidates' must be a list, got {type(cands).__name__}", rec)], counts
    if not cands:
        return None, [_err(path, line, "no_candidates: empty candidate list", rec)], counts
    kept: list[str] = []
    for k, c in enumerate(cands):
        counts["total"] += 1
        if not isinstance(c, str):
            counts["non_string"] += 1
            errors.append(_err(path, line, f"non_string_candidate: candidate {k} is {type(c).__name__}", rec))
        elif not c.strip():
            counts["empty"] += 1
        else:
            kept.append(c)
    # blank / non-string candidates are left out: candidate_index counts among the kept ones,
    # so the original position is recorded beside it
    item = Item(rid, task, prompt, kept, rec.get("image"), rec.get("reference"), (path, line),
                rec.get(PROVENANCE_KEY) if isinstance(rec.get(PROVENANCE_KEY), dict) else None,
                [k for k, c in enumerate(cands) if isinstance(c, str) and c.strip()])
    return item, errors, counts


def pick_rejected(scores: Sequence[float], chosen: int, texts: Sequence[str], rng: random.Random) -> Optional[int]:
    """A candidate drawn with `rng` from the lower-scoring half (n // 2 lowest).

    Only candidates scoring strictly below the chosen one and differing from
    its text qualify; None when none does (no contrast to learn from).
    """
    n = len(scores)
    lower = sorted(range(n), key=lambda i: (scores[i], i))[: n // 2]
    pool = [i for i in lower if i != chosen and scores[i] < scores[chosen] and texts[i] != texts[chosen]]
    return rng.choice(pool) if pool else None


def _human_turn(prompt: str, image: Any) -> str:
    if image is not None and IMAGE_PLACEHOLDER not in prompt:
        return f"{IMAGE_PLACEHOLDER}\n{prompt}"
    return prompt


class Curator:
    """Scores chunks of `Item`s; holds the scorer so a loaded model is reused."""

    def __init__(self, config: CurationConfig, scorer: Optional[Scorer] = None, audit: Optional[Any] = None):
        self.config = config
        self.audit = audit  # audit.AuditLabels: judges the label kept for each scored item
        self.scorer: BaseScorer = as_scorer(scorer) if scorer is not None else LexicalScorer()
        self.lexical = self.scorer if isinstance(self.scorer, LexicalScorer) else LexicalScorer()
        self.scoring_seconds: Counter = Counter()
        self.candidate_counts: Counter = Counter()

    # -- candidate checks ------------------------------------------------
    def _usable(self, item: Item) -> Optional[str]:
        """Apply format checks in place; returns a drop reason or None."""
        if self.config.require_format:
            kind = TASK_FORMAT[item.task]
            ok = [i for i, c in enumerate(item.candidates) if follows_format(c, kind)]
            good = [item.candidates[i] for i in ok]
            if item.original_index is not None:
                item.original_index = [item.original_index[i] for i in ok]
            self.candidate_counts["bad_format"] += len(item.candidates) - len(good)
            if item.candidates and not good:
                item.candidates = good
                return "bad_format"
            item.candidates = good
        if not item.candidates:
            return "no_candidates"
        if len(item.candidates) < self.config.min_candidates:
            return "too_few_candidates"
        return None

    # -- scoring ---------------------------------------------------------
    def process(self, items: Sequence[Item]) -> list[Outcome]:
        outcomes = [Outcome(it) for it in items]
        live: dict[str, list[int]] = {"caption": [], "reasoning": []}
        for k, o in enumerate(outcomes):
            reason = self._usable(o.item)
            if reason:
                o.dropped = reason
            else:
                live[o.item.task].append(k)
        if live["caption"]:
            t0 = time.perf_counter()
            chain = self.scorer.reads_chain  # scene-facts reads every CoD step
            groups = [[c if chain else final_description(c) for c in outcomes[k].item.candidates]
                      for k in live["caption"]]
            all_scores = self.scorer.score(groups)
            for k, sc in zip(live["caption"], all_scores):
                self._finish_caption(outcomes[k], [float(x) for x in sc])
            self.scoring_seconds["caption"] += time.perf_counter() - t0
        if live["reasoning"]:
            t0 = time.perf_counter()
            if self.config.reasoning_scorer == "mbr":
                groups = [[conclusion(c) for c in outcomes[k].item.candidates] for k in live["reasoning"]]
                for k, sc in zip(live["reasoning"], self.scorer.score(groups)):
                    self._finish_reasoning_mbr(outcomes[k], [float(x) for x in sc])
            else:
                closeness = self.lexical.score([outcomes[k].item.candidates for k in live["reasoning"]])
                for k, close in zip(live["reasoning"], closeness):
                    self._finish_reasoning(outcomes[k], [float(x) for x in close])
            self.scoring_seconds["reasoning"] += time.perf_counter() - t0
        return outcomes

    def _finish_caption(self, o: Outcome, scores: list[float]) -> None:
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        o.score = scores[best]
        self._keep(o, best, scores, {})

    def _finish_reasoning_mbr(self, o: Outcome, scores: list[float]) -> None:
        """The reference's reasoning score: embedding MBR over the conclusion steps."""
        it = o.item
        options = parse_options(it.prompt)
        answers, raws = candidate_answers(it.candidates, options)
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        o.score = scores[best]
        if it.reference is not None and answers[best] is not None:
            ref = it.reference if isinstance(it.reference, str) else str(it.reference)
            o.reference_correct = same_answer(candidate_answer(ref, options) or "", answers[best])
        self._keep(o, best, scores, {"answer": raws[best], "answer_key": answers[best], "answers": answers})

    def _finish_reasoning(self, o: Outcome, closeness: list[float]) -> None:
        it = o.item
        options = parse_options(it.prompt)
        answers, raws = candidate_answers(it.candidates, options)
        if self._finish_by_perception(o, answers, raws):
            return
        v = vote(answers, closeness, lambda i: follows_format(it.candidates[i], "cot"))
        self.candidate_counts["abstentions"] += v.abstentions
        if it.reference is not None and v.answer is not None:
            ref = it.reference if isinstance(it.reference, str) else str(it.reference)
            o.reference_correct = same_answer(candidate_answer(ref, options) or "", v.answer)
        if v.answer is None:
            o.dropped = "no_answer"
            o.score = 0.0
            return
        o.score = v.score
        self._keep(o, v.kept_index, v.scores,
                   {"answer": surface_answer(raws, answers, v.answer, v.kept_index), "answer_key": v.answer,
                    "answers": v.answers, "abstentions": v.abstentions})

    def _finish_by_perception(self, o: Outcome, answers: list, raws: list) -> bool:
        """A question the image's perceived facts answer (`BaseScorer.answer_for`, scene-facts) keeps the
        first candidate reaching that answer (score 1.0) or is dropped (0.0); False when perception does
        not settle it (every other scorer)."""
        it = o.item
        perceived = self.scorer.answer_for(it.image, it.prompt)
        if perceived is None:
            return False
        agree = [a is not None and same_answer(perceived, a) for a in answers]
        self.candidate_counts["perception_checked"] += 1
        if it.reference is not None:
            ref = it.reference if isinstance(it.reference, str) else str(it.reference)
            o.reference_correct = same_answer(ref, perceived)
        if not any(agree):
            o.dropped, o.score = "contradicts_perception", 0.0
            return True
        best = agree.index(True)
        o.score = 1.0
        self._keep(o, best, [float(x) for x in agree],
                   {"answer": raws[best], "answer_key": answers[best], "answers": answers,
                    "perceived_answer": perceived, "agreeing_candidates": sum(agree)})
        return True

    def _keep(self, o: Outcome, best: int, scores: list[float], extra: dict) -> None:
        it = o.item
        if self.audit is not None:  # judged whatever the threshold: the audit curves need every score
            o.audit = self.audit.judge(it, it.candidates[best], extra.get("answer_key"))
        if o.score < self.config.threshold(it.task) - 1e-9:
            o.dropped = "below_threshold"
            return
        scores = [round(s, 6) for s in scores]  # as written; the rejected draw uses the same numbers
        rec = {
            "id": it.id,
            "image": it.image,
            "task": it.task,
            "conversations": [
                {"from": "human", "value": _human_turn(it.prompt, it.image)},
                {"from": "gpt", "value": it.candidates[best]},
            ],
            "score": round(o.score, 6),
            "kept_index": best,
            "candidates": it.candidates,
            "scores": scores,
        }
        rec.update(extra)
        if it.reference is not None:
            rec["reference"] = it.reference
        o.record = rec
        if self.config.preferences:
            if len(scores) < 2:
                o.preference_skipped = "single_candidate"
                return
            rng = random.Random(f"{self.config.seed}\x1f{it.id}")
            rej = pick_rejected(scores, best, it.candidates, rng)
            if rej is None:
                o.preference_skipped = "no_contrast"
                return
            o.preference = dict(rec, chosen=it.candidates[best], rejected=it.candidates[rej],
                                chosen_score=scores[best], rejected_score=scores[rej],
                                rejected_index=rej)


@dataclass
class CurationResult:
    summary: dict
    output: str
    errors_output: str
    preference_output: Optional[str] = None
    report: dict = field(default_factory=dict)   # name -> path of the report files


def _count_lines(paths: Sequence[Path]) -> Optional[int]:
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            head = f.read(1 << 16)
            if head.lstrip()[:1] == b"[":
                return None
            total += head.count(b"\n")
            for buf in iter(lambda: f.read(1 << 22), b""):
                total += buf.count(b"\n")
    return total


def _read(paths: Sequence[Path], stats: CurationStats, errors: list[dict]) -> Iterator[Item]:
    seen: set = set()
    for p in paths:
        for line, rec in iter_records(p):
            stats.records += 1
            if isinstance(rec, RecordError):
                errors.append(rec.as_dict())
                stats.dropped["malformed"] += 1
                continue
            rid = rec.get("id")
            if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid) in seen:
                errors.append(_err(str(p), line, "duplicate_id: id seen before (first kept)", rec))
                stats.dropped["duplicate_id"] += 1
                continue
            item, errs, counts = parse_item(rec, str(p), line)
            stats.candidates.update(counts)
            errors.extend(errs)
            if item is None:
                reason = errs[0]["reason"].split(":", 1)[0]
                stats.dropped[reason] += 1
                if rec.get("task") in stats.tasks:
                    stats.tasks[rec["task"]].items += 1
                    stats.tasks[rec["task"]].dropped[reason] += 1
                continue
            seen.add(str(item.id))
            yield item


def _perceive(scorer: BaseScorer, paths: Sequence[Path], require_format: bool) -> None:
    """One pass over the caption items (their format-following candidates with `require_format`),
    handing each image's candidates to `scorer.perceive`; invalid records are reported by the main pass."""
    for item in _read(paths, CurationStats(), []):
        if item.task == "caption":
            cands = [c for c in item.candidates if follows_format(c, "cod")] if require_format else item.candidates
            if cands:
                scorer.perceive(item.image, cands)


def curate(
    inputs: Union[PathLike, Sequence[PathLike]],
    output: PathLike,
    *,
    preference_output: Optional[PathLike] = None,
    report_dir: Optional[PathLike] = None,
    errors_output: Optional[PathLike] = None,
    scorer: Union[str, Scorer] = "embedding",
    embedding_model: Any = None,
    threshold: Optional[float] = None,
    caption_threshold: Optional[float] = None,
    reasoning_threshold: Optional[float] = None,
    require_format: bool = False,
    min_candidates: int = 2,
    seed: int = 0,
    batch_size: int = 64,
    chunk_items: int = 1024,
    device: Optional[str] = None,
    progress: Optional[bool] = None,
    mbr_include_self: bool = False,
    reasoning_scorer: str = "vote",
    keep_fraction: Optional[float] = None,
    exclude: Sequence[str] = (),
    image_root: Optional[PathLike] = None,
    exclude_image_root: Optional[PathLike] = None,
    exclude_match: Sequence[str] = ("image", "question"),
    exclude_max_distance: Optional[int] = None,
    exclude_max_colour: Optional[float] = None,
    exclude_max_cell: Optional[float] = None,
    audit: Sequence[PathLike] = (),
) -> CurationResult:
    """Curate candidate files into LLaVA records; returns the summary and paths.

    `scorer`: 'embedding' (sentence-transformers; `embedding_model` is a local
    path or a loaded model, default the offline MiniLM package), 'lexical', or
    a `Scorer` instance (reuse a loaded model across calls). `threshold` sets
    both tasks; `caption_threshold` / `reasoning_threshold` override it (an
    item is kept when its best score >= the threshold). `batch_size` is the
    encoder batch; `chunk_items` items are scored per call (one ``encode`` for
    all their candidates). `progress`: a tqdm bar (None: only on a terminal).
    Input problems never stop the run: they are written, with file and line,
    to `errors_output` (default ``<output stem>.errors.jsonl``).

    Reference-compatible options: `mbr_include_self` averages each
    candidate's similarity over all candidates, itself included (the
    reference's convention; scores are higher, 1/n + (n-1)/n x ours);
    `reasoning_scorer='mbr'` scores reasoning by MBR over the conclusion
    steps with the caption scorer instead of the answer vote;
    `keep_fraction` keeps the best-scoring share of each task (ties at the
    cut are all kept; the absolute threshold it implies is reported; the
    scored items are held in memory until the cut is known).

    Decontamination (`decontaminate`): `exclude` lists LLaVA JSONL files
    (images relative to `exclude_image_root`, default each file's folder) and
    ``NAME=FILE`` benchmark files; an item whose image (relative to
    `image_root`) is an exact or perceptual copy of an excluded image, or
    whose question matches an excluded one after normalisation, is dropped
    before scoring (reason ``excluded_<why>``), when `exclude_match` names
    that kind of match. The summary's ``decontamination`` counts them.

    Audit (`audit`): files of known labels ``{"id", "answer" | "caption" |
    "scene_graph"}`` for a slice of the items; each task's summary entry gets
    ``audit`` (label precision and kept fraction of the labelled items at
    each threshold, `audit.audit_curve`) and the report an ``audit.png``.
    Labels are only compared with, never written into, the curated records.
    """
    if reasoning_scorer not in ("vote", "mbr"):
        raise ValueError(f"reasoning_scorer must be 'vote' or 'mbr', got {reasoning_scorer!r}")
    if keep_fraction is not None and not 0.0 < float(keep_fraction) <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if keep_fraction is not None and any(t is not None for t in (threshold, caption_threshold, reasoning_threshold)):
        raise ValueError("give either keep_fraction or a threshold, not both")
    t_start = time.perf_counter()
    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"curate: input file not found: {p}")
    base = 0.0 if threshold is None else float(threshold)
    config = CurationConfig(
        caption_threshold=base if caption_threshold is None else float(caption_threshold),
        reasoning_threshold=base if reasoning_threshold is None else float(reasoning_threshold),
        require_format=require_format,
        min_candidates=max(1, int(min_candidates)),
        seed=seed,
        preferences=preference_output is not None,
        reasoning_scorer=reasoning_scorer,
        keep_fraction=None if keep_fraction is None else float(keep_fraction),
    )
    if keep_fraction is not None:  # keep everything scored, cut once all scores are known
        config.caption_threshold = config.reasoning_threshold = float("-inf")
    if isinstance(scorer, str):
        scorer_obj = make_scorer(scorer, embedding_model, batch_size=batch_size, device=device,
                                 include_self=mbr_include_self)
    else:
        scorer_obj = as_scorer(scorer)
        if mbr_include_self != scorer_obj.include_self:
            raise ValueError("mbr_include_self differs from the given scorer's include_self")
    labels = None
    if audit:
        from megatron_sicog.curation.audit import AuditLabels

        labels = AuditLabels.load(list(audit))
    curator = Curator(config, scorer_obj, labels)
    exclusion = None
    if exclude:
        from megatron_sicog.curation.decontaminate import (DEFAULT_MAX_CELL, DEFAULT_MAX_COLOUR,
                                                           DEFAULT_MAX_DISTANCE, ExclusionIndex)

        exclusion = ExclusionIndex.build(
            list(exclude), exclude_image_root, exclude_match,
            DEFAULT_MAX_DISTANCE if exclude_max_distance is None else exclude_max_distance,
            DEFAULT_MAX_COLOUR if exclude_max_colour is None else exclude_max_colour,
            DEFAULT_MAX_CELL if exclude_max_cell is None else exclude_max_cell)
    if scorer_obj.perceives:  # every image's perception before any question, whatever the files' order
        _perceive(scorer_obj, paths, config.require_format)
    excluded_examples: list[dict] = []
    stats = CurationStats()
    errors: list[dict] = list(labels.errors) if labels is not None else []
    errors_output = Path(errors_output) if errors_output else errors_path_for(output)

    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = tqdm(total=_count_lines(paths) if show else None, unit="item", desc="curate", disable=not show,
               file=sys.stderr, mininterval=0.5)

    with contextlib.ExitStack() as stack:
        out_tmp = stack.enter_context(atomic_path(output))
        out_f = stack.enter_context(open(out_tmp, "w"))
        pref_f = None
        if preference_output is not None:
            pref_tmp = stack.enter_context(atomic_path(preference_output))
            pref_f = stack.enter_context(open(pref_tmp, "w"))

        pending: Optional[list[Outcome]] = [] if config.keep_fraction is not None else None

        def emit(o: Outcome) -> None:
            _account(o, stats)
            if o.record is not None:
                o.record[PROVENANCE_KEY] = record_provenance(o, provenance(config, scorer_obj, o.item.task))
                out_f.write(dumps(o.record) + "\n")
            if o.preference is not None and pref_f is not None:
                o.preference[PROVENANCE_KEY] = o.record[PROVENANCE_KEY]
                pref_f.write(dumps(o.preference) + "\n")

        def flush(chunk: list[Item]) -> None:
            for o in curator.process(chunk):
                if pending is not None:
                    pending.append(o)
                else:
                    emit(o)

        chunk: list[Item] = []
        last = 0
        for item in _read(paths, stats, errors):
            if exclusion is not None:
                why = _contamination(item, exclusion, image_root, errors)
                if why is not None:
                    if len(excluded_examples) < 20:
                        excluded_examples.append({"id": item.id, "reason": why[0], "matches": why[1]})
                    emit(Outcome(item, dropped=f"excluded_{why[0]}"))
                    continue
            chunk.append(item)
            if len(chunk) >= chunk_items:
                flush(chunk)
                chunk = []
                bar.update(stats.records - last)
                last = stats.records
        if chunk:
            flush(chunk)
        if pending is not None:
            for task, t in fraction_thresholds(pending, config.keep_fraction).items():
                setattr(config, f"{task}_threshold", t)
            for o in pending:
                if o.record is not None and o.score < config.threshold(o.item.task) - 1e-9:
                    o.record = o.preference = o.preference_skipped = None
                    o.dropped = "below_threshold"
                emit(o)
        bar.update(stats.records - last)
        bar.close()
        for f in (out_f, pref_f):
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
        # the errors file is written with the outputs, so none is left stale
        with atomic_path(errors_output) as err_tmp:
            with open(err_tmp, "w") as ef:
                for e in errors:
                    ef.write(dumps(e) + "\n")

    stats.candidates.update(curator.candidate_counts)
    stats.errors = len(errors)
    stats.scoring_seconds.update(curator.scoring_seconds)
    stats.seconds = time.perf_counter() - t_start
    thresholds = {"caption": config.caption_threshold, "reasoning": config.reasoning_threshold}
    meta = {
        "inputs": [str(p) for p in paths],
        "output": str(output),
        "preference_output": str(preference_output) if preference_output is not None else None,
        "errors_output": str(errors_output),
        "scorer": scorer_obj.name,
        "embedding_model": scorer_obj.model_name,
        "require_format": require_format,
        "min_candidates": config.min_candidates,
        "seed": seed,
        "reasoning_scorer": config.reasoning_scorer,
        "mbr_convention": mbr_convention(scorer_obj),
        "threshold_rule": (f"keep_fraction {config.keep_fraction:g} (threshold = score of the last kept item)"
                           if config.keep_fraction is not None else "absolute"),
        "keep_fraction": config.keep_fraction,
    }
    if exclusion is not None:
        meta["decontamination"] = dict(exclusion.summary(), examples=excluded_examples)
    else:
        meta["decontamination"] = None
    meta["audit"] = labels.summary() if labels is not None else None
    summary = summary_dict(stats, meta, thresholds)
    report_paths = write_report(report_dir, summary, thresholds) if report_dir is not None else {}
    return CurationResult(summary, str(output), str(errors_output),
                          str(preference_output) if preference_output is not None else None, report_paths)


def _contamination(item: Item, exclusion: Any, image_root: Optional[PathLike],
                   errors: list[dict]) -> Optional[tuple[str, str]]:
    """(reason, excluded item's location) when `item` copies an excluded image or question."""
    import numpy as np

    from megatron_sicog.curation.decontaminate import question_of_prompt
    from megatron_sicog.data.image import load_image

    images = []
    if "image" in exclusion.match:
        paths = [item.image] if isinstance(item.image, str) else item.image if isinstance(item.image, list) else []
        for p in paths:
            full = Path(p) if image_root is None or Path(p).is_absolute() else Path(image_root) / p
            try:
                images.append(np.asarray(load_image(full), dtype=np.uint8))
            except (OSError, ValueError) as e:
                errors.append(_err(item.source[0], item.source[1], f"image_unreadable: {full} ({e}); "
                                   "cannot check it against --exclude", {"id": item.id}))
                exclusion.counts["unverifiable_image"] += 1
                return "unverifiable_image", str(full)
    return exclusion.check(images, question_of_prompt(item.prompt))


def mbr_convention(scorer: BaseScorer) -> str:
    if scorer.reads_chain:
        return "chain: final-description facts vs the facts most candidates' step 1 state (no MBR)"
    if scorer.include_self:
        return "include_self: mean cosine over all N candidates, itself included (the reference's)"
    return "exclude_self: mean cosine over the other N-1 candidates"


def provenance(config: CurationConfig, scorer: BaseScorer, task: str) -> dict:
    """What curation adds to a record's provenance: scorer, threshold and convention."""
    by_vote = task == "reasoning" and config.reasoning_scorer == "vote"
    return {
        "scorer": "answer_vote" if by_vote else scorer.name,
        "embedding_model": None if by_vote else scorer.model_name,
        "on": "final answer" if by_vote else ("conclusion step" if task == "reasoning" else
                                              "steps 1 and 5" if scorer.reads_chain
                                              else "final description"),
        "threshold": round(config.threshold(task), 6),
        "threshold_rule": "absolute" if config.keep_fraction is None else f"keep_fraction {config.keep_fraction:g}",
        "convention": "winning share of N (abstentions count)" if by_vote else mbr_convention(scorer).split(":")[0],
    }


def record_provenance(o: Outcome, curation: dict) -> dict:
    """The curated record's provenance: the candidate's, the kept candidate's index in the
    candidate file's list, the source line and what curation decided."""
    it = o.item
    k = o.record["kept_index"]
    orig = it.original_index
    return curated_provenance(it.provenance, orig[k] if orig is not None and k < len(orig) else k, it.source,
                              curation)


def fraction_thresholds(outcomes: Sequence[Outcome], fraction: float) -> dict[str, float]:
    """Per task, the score of the last item within the best `fraction` of the scored items."""
    out: dict[str, float] = {}
    for task in ("caption", "reasoning"):
        scores = sorted((o.score for o in outcomes if o.item.task == task and o.record is not None), reverse=True)
        if scores:
            k = min(len(scores), max(1, math.ceil(fraction * len(scores) - 1e-9)))
            out[task] = scores[k - 1]
        else:
            out[task] = 0.0
    return out


def _account(o: Outcome, stats: CurationStats) -> None:
    ts = stats.tasks[o.item.task]
    ts.items += 1
    if o.score is not None:
        ts.scores.append(o.score)
    if o.audit is not None:
        ts.audit.append((o.score, o.audit[0]))
        ts.audit_kinds[o.audit[1]] += 1
    if o.reference_correct is not None:
        ts.reference_total += 1
        ts.reference_correct += int(o.reference_correct)
    if o.record is not None:
        stats.kept += 1
        ts.kept += 1
        if o.reference_correct is not None:
            ts.reference_kept_total += 1
            ts.reference_kept_correct += int(o.reference_correct)
    else:
        stats.dropped[o.dropped] += 1
        ts.dropped[o.dropped] += 1
    if o.preference is not None:
        stats.preference_pairs += 1
    elif o.preference_skipped:
        stats.preference_skipped[o.preference_skipped] += 1
