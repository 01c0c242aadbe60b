"""The embedded synthetic shapes world of the tiny SICOG demo.

Seeded scene graphs (`scene`), their images (`render`), ground-truth CoD / CoT /
caption texts (`text`), the disjoint data splits (`splits`) and a preview
figure (`preview`), all over the
small closed vocabulary in `vocab`. `tools/make_synthetic_data.py` is the CLI.
"""
from .render import render_scene
from .scene import Layout, Marginal, Scene, SceneObject, SceneSampler, scene_key
from .splits import DEFAULT_SIZES, sample_splits, write_splits
from .text import QUESTION_TYPES, Question, align_caption, caption, cod_text, make_questions

__all__ = [
    "DEFAULT_SIZES", "Layout", "Marginal", "QUESTION_TYPES", "Question", "Scene", "SceneObject",
    "SceneSampler", "align_caption", "caption", "cod_text", "make_questions", "render_scene",
    "sample_splits", "scene_key", "write_splits",
]
