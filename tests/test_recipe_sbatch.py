"""The sbatch runner: the same tool commands as the local runner (launcher aside), dependencies, arrays, and
examples/slurm/run_sicog_loop.sh over it (with a stand-in sbatch: no SLURM needed)."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_sicog.recipe.stages import blend

from megatron_sicog.loop import Loop, LoopConfig
from megatron_sicog.recipe.graph import Step
from megatron_sicog.recipe.round import RoundConfig, sicog_round
from megatron_sicog.recipe.sbatch import SbatchRunner
from tests.helpers import REPO
from tests.loop_recorder import run_recorded


def local_commands(commands_sh: str) -> dict[str, list[str]]:
    """commands.sh -> {stage: its command without the interpreter}."""
    out, name = {}, None
    for line in commands_sh.splitlines():
        if line.startswith("# ") and not line.startswith("# Every"):
            name = line[2:]
        elif name and line.strip():
            out[name] = shlex.split(line)[1:]
            name = None
    return out


def sbatch_jobs(script: str) -> dict[str, dict]:
    """The submit lines of a written chain -> {job: {"options", "recipe", "args", "after"}}."""
    jobs = {}
    for line in script.splitlines():
        if not line.startswith("submit J_"):
            continue
        words = shlex.split(line)[3:]
        i = next(k for k, w in enumerate(words) if w.endswith((".sbatch",)))
        opts = words[:i]
        after = []
        if "--dependency" in opts:
            dep = opts[opts.index("--dependency") + 1]
            after = [v[len("${J_"):-1] for v in dep[len("afterok:"):].split(":")]
        jobs[words[opts.index("--job-name") + 1]] = {"options": opts, "recipe": Path(words[i]).name,
                                                      "args": words[i + 1:], "after": after}
    return jobs


def tool_command(job: dict) -> list[str]:
    """A job's tool command as the local runner writes it (train.sbatch is given the trainer's arguments)."""
    return (["pretrain_sicog.py"] if job["recipe"] == "train.sbatch" else []) + job["args"]


@pytest.mark.parametrize("kw", [{}, {"dpo": True, "scaling": True, "rounds": 2}], ids=["default", "all"])
def test_the_same_config_gives_the_same_commands_on_both_launchers(kw, tmp_path, monkeypatch):
    cfg = LoopConfig(output_dir=str(tmp_path / "out"), base_model="")  # every stage, the base's training too
    local = local_commands(run_recorded(monkeypatch, cfg, **kw).replace("$OUT", str(tmp_path / "out"))
                           .replace("$REPO", str(REPO)))
    loop = Loop(cfg, **kw)
    graph = loop.graph()
    jobs = sbatch_jobs(SbatchRunner(loop.out).script(graph))
    steps = {m.name for m in graph if isinstance(m, Step)}
    assert {name: tool_command(j) for name, j in jobs.items() if name not in steps} == local
    assert list(local) == [n for n in jobs if n not in steps]  # in the same order
    for name in steps:  # the in-process glue runs as a job of its own
        assert jobs[name]["args"][:2] == ["-m", "megatron_sicog.recipe.step"]
    assert jobs["train_stage1"]["recipe"] == "train.sbatch" and jobs["curate"]["recipe"] == "stage.sbatch"
    # the seed SFT blends in the alignment captions (sft_align_mix): it waits for both
    assert jobs["train_stage1"]["after"] == ["preprocess_seed", "preprocess_align", "train_base", "tokenizer"]
    assert jobs["score_sicog"]["after"] == ["predictions_sicog", "data"]


def _round_cfg(out: Path, **kw) -> RoundConfig:
    return RoundConfig(output_dir=str(out), base_checkpoint="ckpt/base", seed_data=["data/seed"],
                       caption_input="data/img.jsonl", qa_input="data/qa.jsonl", image_root="data/images",
                       tokenizer_model="tok/", **kw)


def test_sharded_stages_become_arrays_with_a_gather(tmp_path):
    graph = sicog_round(_round_cfg(tmp_path / "run"))
    run = (tmp_path / "run").resolve()
    runner = SbatchRunner(run, shards={"tools/generate_candidates.py": 3, "tools/preprocess_data.py": 2},
                          train_nodes=2)
    jobs = sbatch_jobs(runner.script(graph))
    assert list(jobs) == ["train_stage1", "generate_cod", "generate_cod_gather", "generate_cot",
                          "generate_cot_gather", "curate", "preprocess_curated", "preprocess_curated_gather",
                          "train_sicog_pretrain", "train_sicog"]
    cod = jobs["generate_cod"]
    assert cod["options"][cod["options"].index("--array") + 1] == "0-2" and cod["after"] == ["train_stage1"]
    assert cod["args"][cod["args"].index("--output") + 1] == f"{run}/gen/cod.shard{{shard}}.jsonl"
    assert cod["args"][-4:] == ["--shard-index", "{shard}", "--num-shards", "{num_shards}"]
    assert str(run / "gen" / "cod.shard2.jsonl") in jobs["generate_cod_gather"]["args"][-1]
    assert jobs["curate"]["after"] == ["generate_cod_gather", "generate_cot_gather"]
    merge = jobs["preprocess_curated_gather"]["args"]
    assert merge == ["tools/merge_datasets.py", "--input", f"{run}/idx/curated.shard0", f"{run}/idx/curated.shard1",
                     "--output-prefix", f"{run}/idx/curated"]
    assert jobs["train_sicog_pretrain"]["after"] == ["preprocess_curated_gather"]
    assert "--nodes" in jobs["train_sicog"]["options"]
    # the commands of the stages after the gathers are the unsharded ones
    unsharded = sbatch_jobs(SbatchRunner(run).script(graph))
    for name in ("curate", "train_sicog_pretrain", "train_sicog"):
        assert jobs[name]["args"] == unsharded[name]["args"]


def test_the_cluster_round_and_the_demo_are_one_recipe(tmp_path):
    """A round configured as the demo configures its round gives the demo's commands, stage for stage."""
    c = LoopConfig(output_dir=str(tmp_path / "out"), repretrain_from="stage1")
    loop = Loop(c)
    out, data = loop.out, loop.data
    demo = {m.name: m.argv for m in loop.graph() if not isinstance(m, Step)}
    rc = RoundConfig(
        output_dir=str(out), base_checkpoint=str(loop.base_model or out / "ckpt" / "base"),
        seed_data=blend([(1.0 - c.sft_align_mix, str(out / "idx" / "seed")),
                         (c.sft_align_mix, str(out / "idx" / "align"))]),  # the demo's seed SFT blend
        scorer=c.scorer, caption_threshold=c.caption_threshold,
        caption_input=str(data / "unlabelled_images.jsonl"), qa_input=str(data / "unlabelled_questions.jsonl"),
        image_root=str(data), tokenizer_type="SentencePieceTokenizer", tokenizer_model=str(loop.tok),
        chat_template=c.chat_template, model_preset=c.model_preset, seq_length=c.seq_length, seed=c.seed,
        stage1=c.sft, repretrain_from="stage1", align_data=str(out / "idx" / "align"),
        repretrain_curated_mix=c.repretrain_curated_mix, repretrain=c.repretrain, final=c.final_sft,
        pack_sequences=c.pack_sequences, num_candidates=c.num_candidates, temperature=c.temperature,
        top_p=c.top_p, max_new_tokens_cod=c.max_new_tokens_cod, max_new_tokens_cot=c.max_new_tokens_cot,
        generation_micro_batch=c.generation_micro_batch, exclude=[str(data / "eval.jsonl")])
    cluster = {m.name: m.argv for m in sicog_round(rc)}
    assert list(cluster) == ["train_stage1", "generate_cod", "generate_cot", "curate", "preprocess_curated",
                             "train_sicog_pretrain", "train_sicog"]
    for name, argv in cluster.items():
        assert argv == demo[name], name


def test_round_settings_defaults_and_errors(tmp_path):
    graph = {m.name: m.argv for m in sicog_round(_round_cfg(tmp_path / "run"))}
    pt = graph["train_sicog_pretrain"]
    assert pt[pt.index("--data-path") + 1:pt.index("--split")] == [f"{(tmp_path / 'run').resolve()}/idx/curated"]
    assert pt[pt.index("--pretrained-checkpoint") + 1] == "ckpt/base"  # the base model, as the paper
    blended = {m.name: m.argv for m in sicog_round(_round_cfg(tmp_path / "run", align_data="data/align",
                                                               repretrain_curated_mix=0.7))}["train_sicog_pretrain"]
    assert blended[blended.index("--data-path") + 1:blended.index("--split")][:2] == [str(1.0 - 0.7), "data/align"]
    cfg = RoundConfig.load(None, ["stage1.iters=7", "seed_data=a 0.5 b", "final_stage=none", "seed=3"])
    assert cfg.stage1.iters == 7 and cfg.stage1.lr == RoundConfig().stage1.lr and cfg.seed_data == ["a", "0.5", "b"]
    with pytest.raises(ValueError, match="missing: base_checkpoint"):
        sicog_round(cfg)
    with pytest.raises(ValueError, match="unknown round settings"):
        RoundConfig.load(None, ["stage_one=sft"])
    with pytest.raises(ValueError, match="needs align_data"):
        sicog_round(_round_cfg(tmp_path, repretrain_curated_mix=0.5))
    with pytest.raises(ValueError, match="final_stage must be one of"):
        sicog_round(_round_cfg(tmp_path, final_stage="rl"))
    assert "train_sicog" not in {m.name for m in sicog_round(_round_cfg(tmp_path, final_stage="none"))}


def test_run_sicog_loop_sh_submits_the_chain_with_a_standin_sbatch(tmp_path):
    """The wrapper maps its variables to round settings and submits the graph's jobs in order."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    (bin_dir / "sbatch").write_text(
        "#!/usr/bin/env bash\n"
        f"n=$(wc -l < {log} 2>/dev/null || echo 0)\n"
        f"printf '%q ' \"$@\" >> {log}; echo >> {log}\n"
        "echo $((100 + n))\n")
    (bin_dir / "sbatch").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHON=sys.executable, SICOG_ROOT=str(REPO),
               RUN_DIR=str(tmp_path / "run"), BASE_CKPT="ckpt/base", SEED_DATA_PATH="data/seed",
               CAPTION_INPUT="data/img.jsonl", QA_INPUT="data/qa.jsonl", IMAGE_ROOT="data/images",
               TOKENIZER_MODEL="tok/", GEN_SHARDS="2", PREP_SHARDS="1", TRAIN_NODES="1",
               ALIGN_DATA_PATH="data/align", SBATCH_ARGS="--partition=cpu", ROUND_SETTINGS="stage1.iters=20")
    proc = subprocess.run(["bash", str(REPO / "examples" / "slurm" / "run_sicog_loop.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = dict(ln.split("=", 1) for ln in proc.stdout.splitlines() if "=" in ln and " " not in ln)
    assert list(ids) == ["train_stage1", "generate_cod", "generate_cod_gather", "generate_cot",
                         "generate_cot_gather", "curate", "preprocess_curated", "train_sicog_pretrain", "train_sicog"]
    calls = [shlex.split(ln) for ln in log.read_text().splitlines()]
    assert all(c[:4] == ["--parsable", "--chdir", str(REPO), "--partition=cpu"] for c in calls)
    by_name = {c[c.index("--job-name") + 1]: c for c in calls}
    assert by_name["curate"][by_name["curate"].index("--dependency") + 1] == \
        f"afterok:{ids['generate_cod_gather']}:{ids['generate_cot_gather']}"
    stage1 = by_name["train_stage1"]
    assert stage1[stage1.index("--train-iters") + 1] == "20"
    pt = by_name["train_sicog_pretrain"]
    assert pt[pt.index("--data-path") + 1:pt.index("--split")] == ["0.5", "data/align", "0.5",
                                                                    f"{tmp_path}/run/idx/curated"]
    written = sbatch_jobs((tmp_path / "run" / "submit.sh").read_text())
    assert [tool_command(written[n]) for n in ("curate",)] == [by_name["curate"][by_name["curate"].index(
        str(REPO / "examples" / "slurm" / "stage.sbatch")) + 1:]]
