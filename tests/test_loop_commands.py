"""The tiny loop's commands, pinned: commands.sh of a whole run (tools stood in) equals the copy in tests/data.

The pinned copies were written by the loop before its stages became a graph (megatron_sicog/recipe); any
change to a command the loop runs shows here as a diff. Rewrite them only for an intended change:
``python -m tests.test_loop_commands --write``.
"""
import sys
from pathlib import Path

import pytest

from megatron_sicog.loop import LoopConfig, TrainPhase
from tests.loop_recorder import run_recorded

DATA = Path(__file__).resolve().parent / "data"


def _variant_cfg(out: str) -> LoopConfig:
    """Every branch of the command builders the default leaves out."""
    return LoopConfig(output_dir=out, base_model="", nproc=2, sft_align_mix=0.25, repretrain_from="base", benchmark_images=0,
                      align_template="qwen2", pack_sequences=False, scaling_fractions=(0.5, 1.0),
                      base=TrainPhase(iters=40, lr=1e-3, vision_lr=2e-4, freeze_projector=True))


CASES = {
    "default": (lambda out: LoopConfig(output_dir=out), {}),
    # the base trained in the loop (--train-base): the commands of the default before the shipped base
    "train_base": (lambda out: LoopConfig(output_dir=out, base_model=""), {}),
    "dpo_scaling_rounds2": (lambda out: LoopConfig(output_dir=out), {"dpo": True, "scaling": True, "rounds": 2}),
    "variant": (_variant_cfg, {"scaling": True}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_commands_equal_the_pinned_copy(case, tmp_path, monkeypatch):
    make_cfg, kw = CASES[case]
    text = run_recorded(monkeypatch, make_cfg(str(tmp_path / "out")), **kw)
    assert text == (DATA / f"loop_commands_{case}.sh").read_text()


def _write() -> None:
    import tempfile

    mp = pytest.MonkeyPatch()
    try:
        for case, (make_cfg, kw) in CASES.items():
            with tempfile.TemporaryDirectory() as d:
                (DATA / f"loop_commands_{case}.sh").write_text(run_recorded(mp, make_cfg(f"{d}/out"), **kw))
    finally:
        mp.undo()


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    _write()


def test_every_evaluated_model_has_its_benchmark_results(tmp_path, monkeypatch):
    """summary.json's benchmarks cover round 1, the later rounds and the scaling points alike."""
    import subprocess

    from megatron_sicog.loop import Loop
    from tests.loop_recorder import fake_tool, stub_analysis

    monkeypatch.setattr(subprocess, "run", fake_tool)
    stub_analysis(monkeypatch)
    results = Loop(LoopConfig(output_dir=str(tmp_path / "out")), dpo=True, scaling=True, rounds=2).execute()
    assert sorted(results["benchmarks"]) == sorted(
        ["base", "stage1", "sicog", "baseline", "stage1_dpo", "sicog_r2", "baseline_r2", "sicog_25pct", "sicog_50pct"])
