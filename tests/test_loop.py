"""The SICOG loop: config parsing, report, and (slow) the whole loop on the smoke config."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_sicog.loop import (Loop, LoopConfig, TrainPhase, format_benchmarks, format_comparisons, format_table,
                                 save_plots)
from tests.helpers import REPO


def test_config_file_parses_and_rejects_unknown_keys(tmp_path):
    cfg = LoopConfig.from_json(str(REPO / "examples" / "tiny" / "config.json"))
    assert isinstance(cfg.base, TrainPhase) and cfg.num_candidates == 6
    assert cfg.temperature == 0.7 and cfg.top_p == 0.9  # the paper's sampling
    assert cfg == LoopConfig()  # the shipped config is the documented default, field by field
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"num_seeds": 3}))
    with pytest.raises(ValueError, match="unknown settings"):
        LoopConfig.from_json(str(bad))
    bad.write_text(json.dumps({"repretrain_from": "stage2"}))
    with pytest.raises(ValueError, match="bad.json: repretrain_from must be 'base' or 'stage1'"):
        LoopConfig.from_json(str(bad))


def test_phase_freezing_and_align_template_reach_the_commands(tmp_path, monkeypatch):
    cfg = LoopConfig(output_dir=str(tmp_path / "out"), align_template="qwen2",
                     sft=TrainPhase(iters=5, lr=1e-3, freeze_vision=True),
                     repretrain=TrainPhase(iters=5, lr=1e-3, freeze_vision=True, freeze_projector=True),
                     base=TrainPhase(iters=5, lr=1e-3, vision_lr=2e-4))
    loop = Loop(cfg)
    ran = {}
    monkeypatch.setattr(loop, "run", lambda name, cmd, nproc=1: ran.__setitem__(name, cmd))
    loop.train("base", "pretrain", cfg.base, ["idx/align"], None)
    loop.train("stage1", "sft", cfg.sft, ["idx/seed"], tmp_path)
    loop.train("sicog_pretrain", "pretrain", cfg.repretrain, ["idx/align"], tmp_path)
    assert "--freeze-vision" not in ran["train_base"]
    assert ran["train_base"][ran["train_base"].index("--vision-lr") + 1] == "0.0002"
    assert "--vision-lr" not in ran["train_stage1"]
    assert "--freeze-vision" in ran["train_stage1"] and "--freeze-projector" not in ran["train_stage1"]
    assert {"--freeze-vision", "--freeze-projector"} <= set(ran["train_sicog_pretrain"])
    loop.preprocess("align", [tmp_path / "align.jsonl"], cfg.align_template)
    cmd = ran["preprocess_align"]
    assert cmd[cmd.index("--chat-template") + 1] == "qwen2"


def test_comparison_lines():
    res = {"comparisons": {"sicog-stage1": {
        "accuracy": {"n": 600, "difference": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p_not_ahead": 0.01},
        "caption_score": None}}}
    text = format_comparisons(res)
    assert "sicog-stage1" in text and "accuracy +0.050 [+0.010, +0.090]" in text
    assert format_comparisons({}) == ""


def test_table_and_plots(tmp_path):
    res = {k: {"accuracy": a, "caption_score": c} for k, a, c in
           [("base", 0.1, 0.2), ("stage1", 0.4, 0.5), ("baseline", 0.45, 0.55), ("sicog", 0.5, 0.6)]}
    res.update(curated_samples=10, candidates=60,
               scaling=[{"fraction": 0.0, "curated_samples": 0, "accuracy": 0.45, "caption_score": 0.55},
                        {"fraction": 1.0, "curated_samples": 10, "accuracy": 0.5, "caption_score": 0.6}])
    table = format_table(res)
    assert table.splitlines()[2].startswith("base") and "0.500" in table.splitlines()[-1]
    paths = save_plots(res, tmp_path)
    assert [p.name for p in paths] == ["metrics_per_stage.png", "scaling.png"]
    assert all(p.stat().st_size > 5000 for p in paths)


@pytest.mark.slow
def test_smoke_loop_end_to_end_and_resume(tmp_path):
    out = tmp_path / "loop"
    cmd = [sys.executable, str(REPO / "examples" / "tiny" / "run_sicog_loop.py"),
           "--config", str(REPO / "examples" / "tiny" / "smoke.json"), "--output-dir", str(out), "--dpo"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    s = json.loads((out / "summary.json").read_text())
    for k in ("base", "stage1", "stage1_dpo", "sicog", "baseline"):
        assert set(s[k]) == {"accuracy", "caption_score"}
        assert set(s["benchmarks"][k]) == {"MMBench_tiny", "POPE_tiny"}
    assert s["candidates"] > 0 and s["curated_samples"] > 0 and s["seconds"] > 0
    cmp = s["comparisons"]["sicog-stage1"]["accuracy"]
    assert cmp["n"] > 0 and cmp["ci_low"] <= cmp["difference"] <= cmp["ci_high"]
    commands = (out / "commands.sh").read_text()
    training = [ln for ln in commands.splitlines() if "pretrain_sicog.py" in ln or "preprocess_data.py" in ln]
    assert training and not any("eval" in ln or "unlabelled_answers" in ln for ln in training)
    assert "unlabelled_answers" not in commands  # hidden answers are never an input of any command
    # a second run finds every stage done and only re-reports
    p2 = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p2.returncode == 0 and "[skip] train_sicog" in p2.stdout
    assert json.loads((out / "summary.json").read_text())["sicog"] == s["sicog"]


def test_main_seed_and_output_dir_override_the_config(tmp_path, monkeypatch):
    import megatron_sicog.loop as loop_mod

    seen = {}

    class Stop(Exception):
        pass

    def fake_loop(cfg, **kw):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(loop_mod, "Loop", fake_loop)
    with pytest.raises(Stop):
        loop_mod.main(["--seed", "4321", "--output-dir", str(tmp_path / "s4321")])
    assert seen["cfg"].seed == 4321 and seen["cfg"].output_dir == str(tmp_path / "s4321")
    assert seen["cfg"].num_seed == LoopConfig().num_seed  # everything else from the config


def test_benchmark_stage_command_and_table(tmp_path, monkeypatch):
    loop = Loop(LoopConfig(output_dir=str(tmp_path / "out")))
    ran = {}
    res = {"MMBench_tiny": {"overall": 0.25, "per_row": 0.5, "unmatched_rate": 0.1, "n": 80},
           "POPE_tiny": {"accuracy": 0.75, "f1": 0.8, "yes_ratio": 0.6, "n": 240}}

    def fake_run(name, cmd, nproc=1):
        ran[name] = cmd
        out = Path(cmd[cmd.index("--output-dir") + 1])
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps(res))

    monkeypatch.setattr(loop, "run", fake_run)
    assert loop.benchmark("sicog", tmp_path / "ckpt") == res
    cmd = ran["benchmarks_sicog"]
    assert cmd[1] == "tools/evaluate_benchmarks.py" and cmd[cmd.index("--mode") + 1] == "cot-open"
    assert any(c.startswith("MMBench_tiny=") for c in cmd) and any(c.startswith("POPE_tiny=") for c in cmd)
    table = format_benchmarks({"benchmarks": {"sicog": res}})
    assert table.splitlines()[-1].split() == ["sicog", "0.250", "0.500", "0.100", "0.750", "0.800", "0.600"]
    assert format_benchmarks({}) == ""
