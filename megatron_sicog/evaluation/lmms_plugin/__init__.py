"""lmms-eval model `megatron_sicog`: evaluate a checkpoint of this project with lmms-eval's tasks.

Registered through lmms-eval's entry-point group ``lmms_eval.models`` (see
setup.py), so once the project is pip-installed next to ``lmms-eval``::

    python -m lmms_eval --model megatron_sicog --model_args load=ckpt/sicog \\
        --tasks pope --batch_size 8 --output_path eval/lmms

Without an installed entry point (PYTHONPATH checkouts), the launcher
registers the model first and then runs lmms-eval's own command line with the
same arguments: ``python -m megatron_sicog.evaluation.lmms_plugin ...``.

Only `manifest` / `register` live here (no lmms-eval import at module load);
the model class is `model.MegatronSicog`.
"""
from __future__ import annotations

MODEL_NAME = "megatron_sicog"
CLASS_PATH = "megatron_sicog.evaluation.lmms_plugin.model.MegatronSicog"


def manifest():
    """The entry point's payload: lmms-eval's ModelManifest of `megatron_sicog` (a simple model)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=CLASS_PATH)


def register() -> None:
    """Add `megatron_sicog` to lmms-eval's model registry of this process."""
    from lmms_eval.models import MODEL_REGISTRY_V2

    MODEL_REGISTRY_V2.register_manifest(manifest(), overwrite=True)
