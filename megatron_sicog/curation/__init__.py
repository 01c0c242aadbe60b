"""Self-consistency curation: keep what the model's own candidates agree on.

* `answers`: final-answer extraction / normalisation (shared with evaluation).
"""
from megatron_sicog.curation.answers import extract_answer, normalize_answer

__all__ = ["extract_answer", "normalize_answer"]
