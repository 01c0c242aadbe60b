"""Score a predictions file against the synthetic eval ground truth.

Ground truth is ``eval.jsonl`` of `tools/make_synthetic_data.py`: one record
per image with its ``scene_graph`` and ``questions`` (``id``, ``question``,
``answer``, ``type``). Predictions are JSONL records ``{"id", "task":
"caption"|"reasoning", "prediction"}``: a caption prediction's id is the image
id, a reasoning prediction's id the question id.

`eval_requests(path)` lists what a model must answer (id, task, image,
prompt), so the runner and this scorer agree on ids and prompts.
`score_predictions(pred_path, gt_path)` returns the metrics dict written by
`tools/evaluate.py`: aggregates per task (with the share of responses in
CoD / CoT format and, for reasoning, the share stating an answer at all),
per-item results, and the ids
that were missing, unknown, duplicated or malformed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

from .. import prompts
from ..curation.answers import extract_answer
from ..io import RecordError, iter_records
from .metrics import aggregate_accuracy, aggregate_fidelity, answer_correct, caption_fidelity

TASKS = ("caption", "reasoning")


@dataclass
class GroundTruth:
    graphs: dict[str, dict] = field(default_factory=dict)       # image id -> scene graph
    questions: dict[str, dict] = field(default_factory=dict)    # question id -> question record
    images: dict[str, str] = field(default_factory=dict)        # image id -> image path


def load_ground_truth(path: Union[str, Path]) -> GroundTruth:
    """Read eval.jsonl; a malformed line raises ValueError naming file and line."""
    gt = GroundTruth()
    for _, rec in iter_records(path):
        if isinstance(rec, RecordError):
            raise ValueError(str(rec))
        if "scene_graph" not in rec or "id" not in rec:
            raise ValueError(f"{path}: record {rec.get('id')!r} has no id/scene_graph")
        gt.graphs[rec["id"]] = rec["scene_graph"]
        gt.images[rec["id"]] = rec.get("image", "")
        for q in rec.get("questions", []):
            gt.questions[q["id"]] = dict(q, image=rec.get("image", ""))
    return gt


def eval_requests(path: Union[str, Path]) -> Iterator[dict]:
    """What to predict: one caption request (CoD prompt) per image, one reasoning request (CoT prompt) per question."""
    gt = load_ground_truth(path)
    for image_id, image in gt.images.items():
        yield {"id": image_id, "task": "caption", "image": image, "prompt": prompts.build_prompt("cod")}
    for qid, q in gt.questions.items():
        yield {"id": qid, "task": "reasoning", "image": q["image"], "question": q["question"],
               "prompt": prompts.build_prompt("cot", q["question"])}


def score_predictions(pred_path: Union[str, Path], gt_path: Union[str, Path]) -> dict:
    """Metrics of every prediction in `pred_path` against `gt_path` (see module docstring)."""
    gt = load_ground_truth(gt_path)
    items: list[dict] = []
    fidelities, answers, answered = [], [], []
    formats: dict[str, list[bool]] = {"caption": [], "reasoning": []}
    seen: set[tuple[str, str]] = set()
    problems: dict[str, list] = {"malformed": [], "unknown_ids": [], "duplicates": [], "bad_task": []}
    for _, rec in iter_records(pred_path):
        if isinstance(rec, RecordError):
            problems["malformed"].append(str(rec))
            continue
        rid, task, text = rec.get("id"), rec.get("task"), rec.get("prediction")
        if task not in TASKS or not isinstance(text, str):
            problems["bad_task"].append(rid)
            continue
        if (rid, task) in seen:
            problems["duplicates"].append(rid)
            continue
        seen.add((rid, task))
        if task == "caption" and rid in gt.graphs:
            fid = caption_fidelity(text, gt.graphs[rid])
            fidelities.append(fid)
            formats["caption"].append(prompts.follows_format(text, "cod"))
            items.append({"id": rid, "task": task, **fid.as_dict(), "follows_format": formats["caption"][-1]})
        elif task == "reasoning" and rid in gt.questions:
            q = gt.questions[rid]
            ok = answer_correct(text, q["answer"])
            answers.append((q["type"], ok))
            formats["reasoning"].append(prompts.follows_format(text, "cot"))
            answered.append(extract_answer(text) is not None)
            items.append({"id": rid, "task": task, "type": q["type"], "answer": q["answer"], "correct": ok,
                          "follows_format": formats["reasoning"][-1]})
        else:
            problems["unknown_ids"].append(rid)
    done = {rid for rid, _ in seen}
    return {
        "caption": dict(aggregate_fidelity(fidelities), format_rate=_rate(formats["caption"])),
        "reasoning": dict(aggregate_accuracy(answers), format_rate=_rate(formats["reasoning"]),
                          answered_rate=_rate(answered)),
        "missing": {
            "caption": sorted(set(gt.graphs) - done),
            "reasoning": sorted(set(gt.questions) - done),
        },
        **problems,
        "items": items,
    }


def _rate(flags: list[bool]) -> Optional[float]:
    return sum(flags) / len(flags) if flags else None


def summary_line(metrics: dict) -> str:
    """'caption F1 0.812 (n=200)  reasoning accuracy 0.655 (n=400)  missing 0/0'."""
    cap, rea = metrics["caption"], metrics["reasoning"]

    def num(x):
        return "n/a" if x is None else f"{x:.3f}"

    return (f"caption F1 {num(cap['f1'])} (n={cap['n']})  reasoning accuracy {num(rea['accuracy'])} "
            f"(n={rea['n']})  missing {len(metrics['missing']['caption'])}/{len(metrics['missing']['reasoning'])}"
            f"  unknown {len(metrics['unknown_ids'])}  malformed {len(metrics['malformed'])}")
