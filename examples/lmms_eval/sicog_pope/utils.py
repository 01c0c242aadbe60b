"""lmms-eval task functions of sicog_pope: POPE rows from local files, scored as POPE scores them.

The reading of a reply as yes/no and the figures are the project's
(`megatron_sicog.evaluation.benchmarks.yesno`), so this task and
tools/evaluate_benchmarks.py agree on the same file.
"""
from PIL import Image

from megatron_sicog.evaluation.benchmarks.yesno import PROMPT_TAIL, pope_metrics, read_yes_no


def doc_to_visual(doc):
    with Image.open(doc["image"]) as im:
        return [im.convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return f"{doc['text'].strip()}\n{PROMPT_TAIL}"


def process_results(doc, results):
    pair = (read_yes_no(results[0]), str(doc["label"]).strip().lower())
    return {"pope_accuracy": pair, "pope_f1": pair, "pope_yes_ratio": pair}


def aggregate_accuracy(pairs):
    return pope_metrics(pairs)["accuracy"]


def aggregate_f1(pairs):
    return pope_metrics(pairs)["f1"]


def aggregate_yes_ratio(pairs):
    return pope_metrics(pairs)["yes_ratio"]
