"""megatron-sicog: SICOG (self-improving multimodal cognition) on megatron-core."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements(name):
    lines = (HERE / name).read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


setup(
    name="megatron-sicog",
    version="0.1.0",
    description="SICOG self-improving MLLM training on megatron-core",
    packages=find_packages(include=["megatron_sicog", "megatron_sicog.*"]),
    python_requires=">=3.10,<3.13",
    # ranges only: exact pins (constraints.txt) would make pip replace a container's torch
    install_requires=_requirements("requirements.txt"),
    extras_require={"dev": _requirements("requirements-dev.txt"),
                    "lmms-eval": _requirements("requirements-lmms-eval.txt")},
    # `python -m lmms_eval --model megatron_sicog ...` (lmms-eval's model entry points)
    entry_points={"lmms_eval.models": ["megatron_sicog = megatron_sicog.evaluation.lmms_plugin:manifest"]},
)
