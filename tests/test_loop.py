"""The SICOG loop: config parsing, report, and (slow) the whole loop on the smoke config."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_sicog.loop import Loop, LoopConfig, TrainPhase
from megatron_sicog.loop_report import format_benchmarks, format_comparisons, format_table, save_plots
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


def _stages(loop) -> dict:
    """The loop's graph by member name: the argv (tool + arguments) of each stage."""
    return {m.name: m.argv for m in loop.graph() if hasattr(m, "argv")}


def test_phase_freezing_and_align_template_reach_the_commands(tmp_path):
    cfg = LoopConfig(output_dir=str(tmp_path / "out"), base_model="", align_template="qwen2",
                     sft=TrainPhase(iters=5, lr=1e-3, freeze_vision=True),
                     repretrain=TrainPhase(iters=5, lr=1e-3, freeze_vision=True, freeze_projector=True),
                     base=TrainPhase(iters=5, lr=1e-3, vision_lr=2e-4))
    ran = _stages(Loop(cfg))
    assert "--freeze-vision" not in ran["train_base"]
    assert ran["train_base"][ran["train_base"].index("--vision-lr") + 1] == "0.0002"
    assert "--vision-lr" not in ran["train_stage1"]
    assert "--freeze-vision" in ran["train_stage1"] and "--freeze-projector" not in ran["train_stage1"]
    assert {"--freeze-vision", "--freeze-projector"} <= set(ran["train_sicog_pretrain"])
    cmd = ran["preprocess_align"]
    assert cmd[cmd.index("--chat-template") + 1] == "qwen2"


def test_repretraining_blend_is_a_setting(tmp_path):
    """repretrain_curated_mix: 0.5 (the demo) blends align and curated; 1.0 is curated only (the SLURM round)."""
    def data_path(**kw):
        cmd = _stages(Loop(LoopConfig(output_dir=str(tmp_path / "out"), **kw)))["train_sicog_pretrain"]
        i = cmd.index("--data-path")
        return cmd[i + 1:cmd.index("--split")]

    out = tmp_path / "out"
    assert data_path() == ["0.5", f"{out}/idx/align", "0.5", f"{out}/idx/curated"]
    assert data_path(repretrain_curated_mix=1.0) == [f"{out}/idx/curated"]
    assert data_path(repretrain_curated_mix=0.25) == ["0.75", f"{out}/idx/align", "0.25", f"{out}/idx/curated"]
    with pytest.raises(ValueError, match="repretrain_curated_mix"):
        LoopConfig(repretrain_curated_mix=0.0)


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
        assert set(s[k]) == {"accuracy", "caption_score", "step_consistency"}
        assert set(s["benchmarks"][k]) == {"MMBench_tiny", "POPE_tiny"}
    q = s["self_generated_quality"]  # with --dpo: the DPO model's candidates against the curated set from them
    assert q["caption"]["images"] > 0 and 0.0 <= q["answers"]["one_sample_accuracy"] <= 1.0
    assert s["candidates"] > 0 and s["curated_samples"] > 0 and s["seconds"] > 0
    cmp = s["comparisons"]["sicog-stage1"]["accuracy"]
    assert cmp["n"] > 0 and cmp["ci_low"] <= cmp["difference"] <= cmp["ci_high"]
    commands = (out / "commands.sh").read_text()
    training = [ln for ln in commands.splitlines() if "pretrain_sicog.py" in ln or "preprocess_data.py" in ln]
    assert training and not any("eval" in ln or "unlabelled_answers" in ln for ln in training)
    # hidden answers are an input of the audit stage only, the last command, after every training and eval
    assert [ln for ln in commands.splitlines() if "unlabelled_answers" in ln] == [commands.strip().splitlines()[-1]]
    assert (out / "curation_audit" / "audit.png").exists()
    # a second run finds every stage done and only re-reports
    p2 = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p2.returncode == 0 and "[skip] train_sicog" in p2.stdout
    assert json.loads((out / "summary.json").read_text())["sicog"] == s["sicog"]


def _main_config(monkeypatch, argv: list[str]) -> LoopConfig:
    """The config run_sicog_loop.py's main() builds from `argv` (the loop itself is not run)."""
    import megatron_sicog.loop as loop_mod

    seen = {}

    class Stop(Exception):
        pass

    def fake_loop(cfg, **kw):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(loop_mod, "Loop", fake_loop)
    with pytest.raises(Stop):
        loop_mod.main(argv)
    return seen["cfg"]


def test_main_seed_and_output_dir_override_the_config(tmp_path, monkeypatch):
    cfg = _main_config(monkeypatch, ["--seed", "4321", "--output-dir", str(tmp_path / "s4321")])
    assert cfg.seed == 4321 and cfg.output_dir == str(tmp_path / "s4321")
    assert cfg.num_seed == LoopConfig().num_seed  # everything else from the config


def test_benchmark_stage_command_and_table(tmp_path):
    loop = Loop(LoopConfig(output_dir=str(tmp_path / "out")))
    res = {"MMBench_tiny": {"overall": 0.25, "per_row": 0.5, "unmatched_rate": 0.1, "n": 80},
           "POPE_tiny": {"accuracy": 0.75, "f1": 0.8, "yes_ratio": 0.6, "n": 240}}
    cmd = _stages(loop)["benchmarks_sicog"]
    assert cmd[0] == "tools/evaluate_benchmarks.py" and cmd[cmd.index("--mode") + 1] == "cot-open"
    assert cmd[cmd.index("--load") + 1] == str(loop.out / "ckpt" / "sicog")
    assert any(c.startswith("MMBench_tiny=") for c in cmd) and any(c.startswith("POPE_tiny=") for c in cmd)
    out = Path(cmd[cmd.index("--output-dir") + 1])
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(res))
    assert loop.benchmark_results("sicog") == res
    table = format_benchmarks({"benchmarks": {"sicog": res}})
    assert table.splitlines()[-1].split() == ["sicog", "0.250", "0.500", "0.100", "0.750", "0.800", "0.600"]
    assert format_benchmarks({}) == ""
    # --rounds 2 / --scaling: every evaluated model has a row, in the main table's order, then the scaling points
    scores = {"accuracy": 0.5, "caption_score": 0.5}
    many = {k: dict(scores) for k in ("base", "stage1", "baseline", "sicog", "sicog_r2", "baseline_r2")}
    many.update(rounds=[{"round": 2}], benchmarks={k: res for k in ("sicog_r2", "sicog", "sicog_25pct", "stage1")})
    rows = [ln.split()[0] for ln in format_benchmarks(many).splitlines()[2:]]
    assert rows == ["base", "stage1", "baseline", "sicog", "baseline_r2", "sicog_r2", "sicog_25pct"]
    assert "(no benchmark results)" in format_benchmarks(many).splitlines()[2]
    assert "benchmarks_sicog" not in _stages(Loop(LoopConfig(output_dir=str(tmp_path / "o2"), benchmark_images=0)))


def test_rounds_chain_generators_and_baselines(tmp_path):
    """--rounds 3: round r samples with round r-1's SICOG model, re-pretrains from it on its own curated set
    (+ align), and the baseline chain continues from the previous baseline on align only."""
    with pytest.raises(ValueError, match="rounds"):
        Loop(LoopConfig(output_dir=str(tmp_path / "x")), rounds=0)
    loop = Loop(LoopConfig(output_dir=str(tmp_path / "out")), rounds=3)
    ran = _stages(loop)
    ckpt, idx = loop.out / "ckpt", loop.out / "idx"

    def flag(name, f):
        return ran[name][ran[name].index(f) + 1]

    assert flag("generate_cod_r2", "--load") == str(ckpt / "sicog")
    assert flag("generate_cot_r3", "--load") == str(ckpt / "sicog_r2")
    assert flag("curate_r3", "--output") == str(loop.out / "gen" / "curated_r3.jsonl")
    pt = ran["train_sicog_pretrain_r3"]
    assert pt[pt.index("--data-path") + 1:pt.index("--split")] == ["0.5", str(idx / "align"), "0.5",
                                                                    str(idx / "curated_r3")]
    assert flag("train_sicog_pretrain_r3", "--pretrained-checkpoint") == str(ckpt / "sicog_r2")
    assert flag("train_baseline_pretrain_r3", "--data-path") == str(idx / "align")
    assert flag("train_baseline_pretrain_r3", "--pretrained-checkpoint") == str(ckpt / "baseline_r2")
    assert flag("train_sicog_r3", "--pretrained-checkpoint") == str(ckpt / "sicog_pretrain_r3")
    assert flag("generate_eval_sicog_r3_cod", "--load") == str(ckpt / "sicog_r3")
    res = {k: {"accuracy": 0.5, "caption_score": 0.5} for k in ("base", "stage1", "baseline", "sicog")}
    res.update({k: {"accuracy": 0.5, "caption_score": 0.5} for k in ("sicog_r2", "baseline_r2", "sicog_r3",
                                                                      "baseline_r3")},
               rounds=[{"round": 2}, {"round": 3}])
    rows = [ln.split()[0] for ln in format_table(res).splitlines()[2:]]
    assert rows == ["base", "stage1", "baseline", "sicog", "baseline_r2", "sicog_r2", "baseline_r3", "sicog_r3"]


def test_every_stage_reads_what_an_earlier_one_wrote(tmp_path):
    """The graph runs in its order: nothing is read before it is written, except the repository's own files."""
    from megatron_sicog.recipe.graph import dependencies, external_inputs

    loop = Loop(LoopConfig(output_dir=str(tmp_path / "out"), base_model=""), dpo=True, scaling=True, rounds=2)
    graph = loop.graph()
    assert external_inputs(graph) == []
    deps = dependencies(graph)
    assert deps["train_stage1"] == ["preprocess_seed", "preprocess_align", "train_base", "tokenizer"]
    assert deps["curate_dpo"] == ["generate_cod_dpo", "generate_cot_dpo", "data"]
    assert deps["score_sicog"] == ["predictions_sicog", "data"]


@pytest.mark.slow
def test_two_rounds_each_scored(tmp_path):
    out = tmp_path / "loop"
    cmd = [sys.executable, str(REPO / "examples" / "tiny" / "run_sicog_loop.py"),
           "--config", str(REPO / "examples" / "tiny" / "smoke.json"), "--output-dir", str(out), "--rounds", "2"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    s = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in s["rounds"]] == [2] and s["rounds"][0]["generator"] == "sicog"
    for k in ("sicog_r2", "baseline_r2"):
        assert 0.0 <= s[k]["accuracy"] <= 1.0 and "step_consistency" in s[k]
    assert {"sicog_r2-baseline_r2", "sicog_r2-sicog"} <= set(s["comparisons"])
    commands = (out / "commands.sh").read_text()
    assert "--load " + str(out / "ckpt" / "sicog") + " " in commands  # round 2 samples with round 1's SICOG
    assert "sicog_r2" in p.stdout


def test_report_prints_tables_analysis_and_plots(tmp_path, capsys):
    from megatron_sicog.loop_report import print_report

    res = {k: {"accuracy": 0.5, "caption_score": 0.25, "step_consistency": {"jaccard": 0.75, "count_agrees": 1.0}}
           for k in ("base", "stage1", "baseline", "sicog")}
    res.update(curated_samples=3, candidates=12, curated_reasoning_pseudo_label_accuracy=0.5, seconds=7.0,
               comparisons={}, self_generated_quality={"caption": {"one_sample_f1": 0.4}, "answers": {}},
               decontamination={"excluded_images": 300, "dropped_total": 0,
                                "dropped": {"exact_image": 0, "near_image": 0, "question": 0}})
    print_report(res, tmp_path, tmp_path / "commands.sh")
    text = capsys.readouterr().out
    assert "3 curated samples from 12 candidates" in text and "one sample 0.400, curated n/a" in text
    assert "vs the 300 held-out images): 0 dropped (exact_image 0, near_image 0, question 0)" in text
    assert "shape Jaccard 0.750" in text and (tmp_path / "metrics_per_stage.png").exists()


def test_shipped_base_replaces_base_training_and_tokenizer(tmp_path):
    """With the shipped base (the default): no base training, no tokenizer training, its tokenizer in every
    command, stage 1 from its checkpoint, and the world excludes the scenes it was trained on."""
    base = REPO / "examples" / "tiny" / "base"
    ran = _stages(Loop(LoopConfig(output_dir=str(tmp_path / "out"))))
    assert "train_base" not in ran and "tokenizer" not in ran
    data = ran["data"]
    assert data[data.index("--exclude-scenes") + 1] == str(base / "scene_keys.txt.gz")
    s1 = ran["train_stage1"]
    assert s1[s1.index("--pretrained-checkpoint") + 1] == str(base)
    for name, argv in ran.items():
        if "--tokenizer-model" in argv:
            assert argv[argv.index("--tokenizer-model") + 1] == str(base / "tokenizer.model"), name
    with pytest.raises(FileNotFoundError, match="make base-model"):
        Loop(LoopConfig(output_dir=str(tmp_path / "o2"), base_model=str(tmp_path / "nowhere")))


def test_train_base_flag_trains_the_base_in_the_loop(tmp_path, monkeypatch):
    assert _main_config(monkeypatch, ["--output-dir", str(tmp_path / "o"), "--train-base"]).base_model == ""
    assert _main_config(monkeypatch, ["--output-dir", str(tmp_path / "o")]).base_model == "examples/tiny/base"

def test_hidden_truth_only_in_the_final_audit_stage(tmp_path):
    """unlabelled_answers / scene_graphs are read by one stage, the last: round 1's curation with --audit."""
    graph = [m for m in Loop(LoopConfig(output_dir=str(tmp_path / "out")), dpo=True, rounds=2).graph()
             if hasattr(m, "argv")]
    readers = [m.name for m in graph if any("unlabelled_answers" in a or "scene_graphs" in a for a in m.argv)]
    assert readers == ["curate_audit"] and graph[-1].name == "curate_audit"
    argv = graph[-1].argv
    assert argv[argv.index("--input") + 1].endswith("gen/cod_dpo.jsonl")  # the candidates curated for training
    audit = argv[argv.index("--audit") + 1:argv.index("--audit") + 3]
    assert [Path(a).name for a in audit] == ["unlabelled_answers.jsonl", "scene_graphs.jsonl"]
