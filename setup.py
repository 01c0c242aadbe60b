"""megatron-sicog: SICOG (self-improving multimodal cognition) on megatron-core."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _pins(name):
    lines = (HERE / name).read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


setup(
    name="megatron-sicog",
    version="0.1.0",
    description="SICOG self-improving MLLM training on megatron-core",
    packages=find_packages(include=["megatron_sicog", "megatron_sicog.*"]),
    python_requires=">=3.10,<3.12",
    install_requires=_pins("requirements.txt"),
    extras_require={"dev": _pins("requirements-dev.txt"), "lmms-eval": _pins("requirements-lmms-eval.txt")},
    # `python -m lmms_eval --model megatron_sicog ...` (lmms-eval's model entry points)
    entry_points={"lmms_eval.models": ["megatron_sicog = megatron_sicog.evaluation.lmms_plugin:manifest"]},
)
