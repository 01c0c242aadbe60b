"""Evaluation of the tiny demo on the synthetic world.

`metrics` (answer accuracy, caption fidelity against scene graphs), `facts`
(scene-graph facts and the description parser), `scoring` (predictions file
vs eval.jsonl; `tools/evaluate.py` is the CLI).
"""
from .facts import graph_facts, text_facts
from .metrics import aggregate_accuracy, aggregate_fidelity, answer_correct, caption_fidelity, fact_fidelity
from .scoring import eval_requests, load_ground_truth, score_predictions, summary_line

__all__ = [
    "aggregate_accuracy", "aggregate_fidelity", "answer_correct", "caption_fidelity", "eval_requests",
    "fact_fidelity", "graph_facts", "load_ground_truth", "score_predictions", "summary_line", "text_facts",
]
