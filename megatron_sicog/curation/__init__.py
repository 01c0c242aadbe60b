"""Self-consistency curation (SICOG stage 2): keep what the candidates agree on.

* `answers`: final-answer extraction / normalisation (shared with evaluation).
* `vote`: majority vote over reasoning answers.
* `scorers`: minimum-Bayes-risk caption scoring (embedding / lexical).
* `pipeline`: `curate(...)`, the whole stage as one call (`tools/curate.py`).
* `report`: counts, score histogram, kept-fraction-vs-threshold curve.
* `decontaminate`: drop items whose image or question is in excluded files.
* `audit`: precision of the kept labels vs threshold, against known labels.

Heavy modules load on first use, so importing `answers` stays cheap.
"""
from megatron_sicog.curation.answers import extract_answer, normalize_answer

__all__ = ["extract_answer", "normalize_answer", "curate", "CurationResult"]


def __getattr__(name):
    if name in ("curate", "CurationResult", "Curator", "CurationConfig", "Item"):
        from megatron_sicog.curation import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
