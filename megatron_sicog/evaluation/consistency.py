"""How good the self-generated data is, and how self-consistent one description is.

Analysis of a SICOG round, read after training (the hidden answers and scene
graphs of the unlabelled split are never seen by a training command):

* `step_consistency(text)` — does a CoD description agree with itself? The
  shapes listed in step 1 (salient content) against the shapes described in
  step 5 (the coherent description): Jaccard overlap of the two shape sets,
  and whether step 1's count word equals the number of shapes in step 5.
* `caption_candidate_quality(...)` — fact F1 of the captions a model sampled
  on the unlabelled images: one sample (the first), the one curation kept,
  the best of the N (an oracle: the ceiling of any selection rule), and the
  mean over all N.
* `answer_vote_quality(...)` — accuracy of one sampled answer against the
  majority vote over the N, per question, against the hidden answers.
"""
from __future__ import annotations

import re
from pathlib import Path
from statistics import fmean
from typing import Iterable, Optional, Union

from megatron_sicog import prompts
from megatron_sicog.curation.answers import normalize_answer
from megatron_sicog.curation.vote import candidate_answer, parse_options, vote
from megatron_sicog.evaluation.metrics import caption_fidelity
from megatron_sicog.io import iter_records
from megatron_sicog.synthetic import vocab

PathLike = Union[str, Path]
_NUMBER = vocab.WORD_NUMBERS
_WORD = re.compile(r"[a-z]+")


def _shapes(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w in vocab.SHAPES]


def step_consistency(text: str) -> Optional[dict]:
    """Step 1 vs step 5 of one CoD response; None when either step is missing."""
    steps = prompts.split_steps(text or "")
    first, last = steps.get(1), steps.get(len(prompts.COD_STEP_TITLES))
    if not first or not last:
        return None
    a, b = set(_shapes(first)), set(_shapes(last))
    jaccard = len(a & b) / len(a | b) if a | b else 1.0
    words = _WORD.findall(first.lower())
    # a step 1 that states a count ("Three shapes: ...") is held to it; one that lists the objects
    # ("A large red circle and a small blue square ...") counts what it names
    count = next((_NUMBER[w] for w in words if w in _NUMBER), None)
    if count is None and _shapes(first):
        count = len(_shapes(first))
    return {"jaccard": jaccard, "count_agrees": count is not None and count == len(b)}


def mean_step_consistency(texts: Iterable[str]) -> dict:
    """Mean Jaccard and count agreement over descriptions; unparsable ones count as 0."""
    rows = [step_consistency(t) for t in texts]
    n = len(rows)
    if not n:
        return {"n": 0, "jaccard": None, "count_agrees": None, "parsed": None}
    ok = [r for r in rows if r is not None]
    return {"n": n, "parsed": len(ok) / n,
            "jaccard": sum(r["jaccard"] for r in ok) / n,
            "count_agrees": sum(r["count_agrees"] for r in ok) / n}


def _graphs(scene_graphs: PathLike, split: str = "unlabelled") -> dict[str, dict]:
    return {r["id"]: r["scene_graph"] for _, r in iter_records(scene_graphs)
            if isinstance(r, dict) and r.get("split") == split}


def caption_candidate_quality(candidates: PathLike, curated: Optional[PathLike], scene_graphs: PathLike) -> dict:
    """Fact F1 of sampled CoD captions: first sample, curated pick, best-of-N, mean of N."""
    graphs = _graphs(scene_graphs)
    kept: dict[str, str] = {}
    if curated is not None:
        for _, r in iter_records(curated):
            if isinstance(r, dict) and r.get("task", "caption") == "caption" and "conversations" in r:
                kept[str(r["id"])] = r["conversations"][-1]["value"]
    one, best, mean, picked, picked_one = [], [], [], [], []
    for _, rec in iter_records(candidates):
        if not isinstance(rec, dict) or rec.get("id") not in graphs or not rec.get("candidates"):
            continue
        g = graphs[rec["id"]]
        f1 = [caption_fidelity(prompts.final_description(c), g).f1 for c in rec["candidates"]]
        one.append(f1[0])
        best.append(max(f1))
        mean.append(fmean(f1))
        if rec["id"] in kept:
            picked.append(caption_fidelity(prompts.final_description(kept[rec["id"]]), g).f1)
            picked_one.append(f1[0])
    return {"images": len(one),
            "one_sample_f1": fmean(one) if one else None,
            "mean_of_n_f1": fmean(mean) if mean else None,
            "best_of_n_f1": fmean(best) if best else None,
            "curated_images": len(picked),
            "curated_f1": fmean(picked) if picked else None,
            # the same images' first samples: what curation's choice adds on the images it kept
            "curated_images_one_sample_f1": fmean(picked_one) if picked_one else None}


def answer_vote_quality(candidates: PathLike, answers: PathLike) -> dict:
    """Accuracy of one sampled answer, the mean over the N, and the majority vote, vs hidden answers."""
    truth = {r["id"]: normalize_answer(str(r["answer"])) for _, r in iter_records(answers)
             if isinstance(r, dict) and "answer" in r}
    first, each, voted = [], [], []
    for _, rec in iter_records(candidates):
        if not isinstance(rec, dict) or rec.get("id") not in truth or not rec.get("candidates"):
            continue
        options = parse_options(rec.get("prompt"))
        keys = [candidate_answer(c, options) for c in rec["candidates"]]
        t = truth[rec["id"]]
        hits = [k is not None and k == t for k in keys]
        first.append(hits[0])
        each.append(fmean(hits))
        v = vote(keys)
        voted.append(v.answer is not None and v.answer == t)
    n = len(first)
    return {"questions": n,
            "one_sample_accuracy": sum(first) / n if n else None,
            "mean_sample_accuracy": fmean(each) if n else None,
            "vote_accuracy": sum(voted) / n if n else None}
