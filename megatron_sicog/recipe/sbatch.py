"""Renders a stage graph as a chain of SLURM jobs: a bash script that submits one job per stage.

Each job starts when the jobs that wrote its inputs succeeded (``--dependency=afterok:...`` with
``--kill-on-invalid-dep=yes``, so a failure cancels the rest). A training stage runs
``examples/slurm/train.sbatch`` (srun + torchrun per node, preemption and requeue) with the trainer's
arguments; any other stage runs ``examples/slurm/stage.sbatch`` with the tool and its arguments; a step
runs as ``-m megatron_sicog.recipe.step``. A stage whose tool is given a shard count becomes an array (task
i writes ``<output>.shard<i>``, ``--shard-index i --num-shards n``) followed by a gather job that joins
the shards into the stage's output, so every later command is the local runner's. The script prints
``<job>=<id>`` per job, then ``jobs: ...`` and ``logs: <dir>``.

    python -m megatron_sicog.recipe.sbatch --round-config round.json --set base_checkpoint=ckpt/base ...
    python -m megatron_sicog.recipe.sbatch --tiny-config examples/tiny/config.json   # the demo, as jobs
    (--write FILE: the script only; --submit: run it; neither: print it)
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from megatron_sicog.recipe.graph import Member, Stage, Step, dependencies, shard_path

REPO = Path(__file__).resolve().parent.parent.parent
RECIPES = "examples/slurm"


@dataclass
class Job:
    """One sbatch submission: its name, sbatch options, recipe and the recipe's arguments (the command)."""
    name: str
    options: list[str]
    recipe: str
    args: list[str]
    after: list[str] = field(default_factory=list)  # names of the jobs it waits for


def _var(name: str) -> str:
    return "J_" + re.sub(r"\W", "_", name)


class SbatchRunner:
    def __init__(self, out: Path, shards: Optional[dict[str, int]] = None, train_nodes: Optional[int] = None,
                 sbatch_args: Sequence[str] = (), root: Path = REPO):
        self.out, self.root = Path(out), Path(root)
        self.shards = dict(shards or {})  # tool -> number of shards (> 1: an array job)
        self.train_nodes, self.sbatch_args = train_nodes, list(sbatch_args)

    def jobs(self, graph: Sequence[Member]) -> list[Job]:
        deps = dependencies(graph)
        last: dict[str, str] = {}  # member name -> the job later jobs wait for (a sharded stage's gather)
        jobs: list[Job] = []
        logs = self.out / "logs"
        for m in graph:
            after = [last[d] for d in deps[m.name]]
            opts = ["--job-name", m.name]
            if isinstance(m, Step):
                jobs.append(Job(m.name, opts + ["--output", f"{logs}/%x-%j.out"], f"{RECIPES}/stage.sbatch",
                                ["-m", "megatron_sicog.recipe.step", m.func, json.dumps(m.kwargs)], after))
            elif m.kind == "train":
                nodes = ["--nodes", str(self.train_nodes)] if self.train_nodes else []
                jobs.append(Job(m.name, opts + nodes + ["--output", f"{logs}/%x-%j.out"],
                                f"{RECIPES}/train.sbatch", list(m.args), after))
            elif self.shards.get(m.tool, 1) > 1 and m.shard is not None:
                n = self.shards[m.tool]
                jobs.append(Job(m.name, opts + ["--array", f"0-{n - 1}", "--output", f"{logs}/%x-%A_%a.out"],
                                f"{RECIPES}/stage.sbatch", m.sharded("{shard}", "{num_shards}"), after))
                jobs.append(self._gather(m, n, logs))
                m_name = jobs[-1].name
                last[m.name] = m_name
                continue
            else:
                jobs.append(Job(m.name, opts + ["--output", f"{logs}/%x-%j.out"], f"{RECIPES}/stage.sbatch",
                                m.argv, after))
            last[m.name] = m.name
        return jobs

    def _gather(self, m: Stage, n: int, logs: Path) -> Job:
        parts = [shard_path(m.shard.output, str(i)) for i in range(n)]
        if m.shard.gather == "mmap":
            args = ["tools/merge_datasets.py", "--input", *parts, "--output-prefix", m.shard.output]
        else:
            args = ["-m", "megatron_sicog.recipe.step", "megatron_sicog.recipe.step:concat_files",
                    json.dumps({"inputs": parts, "output": m.shard.output})]
        name = f"{m.name}_gather"
        return Job(name, ["--job-name", name, "--output", f"{logs}/%x-%j.out"], f"{RECIPES}/stage.sbatch", args,
                   [m.name])

    def script(self, graph: Sequence[Member]) -> str:
        q = shlex.quote
        lines = ["#!/usr/bin/env bash",
                 "# The SICOG stage graph as SLURM jobs (written by megatron_sicog.recipe.sbatch; run from anywhere).",
                 "# shellcheck disable=SC2154  # the job-id variables are set by submit (printf -v)",
                 "set -euo pipefail",
                 f"export SICOG_ROOT=${{SICOG_ROOT:-{q(str(self.root))}}}",
                 f"mkdir -p {q(str(self.out / 'logs'))}",
                 "read -r -a SBATCH_COMMON <<<\"${SBATCH_ARGS:-}\"",
                 "JOB_IDS=()",
                 "submit() {  # submit VAR NAME SBATCH-ARGS...: sets VAR to the job id, prints NAME=<id>",
                 "  local var=$1 name=$2 out",
                 "  shift 2",
                 "  out=$(sbatch --parsable --chdir \"$SICOG_ROOT\" \"${SBATCH_COMMON[@]}\" \"$@\") "
                 "|| { echo \"sbatch for $name failed\" >&2; exit 1; }",
                 "  printf -v \"$var\" '%s' \"${out%%;*}\"",
                 "  JOB_IDS+=(\"$name=${out%%;*}\")",
                 "  echo \"$name=${out%%;*}\"",
                 "}"]
        for job in self.jobs(graph):
            dep = []
            if job.after:
                dep = ["--dependency", '"afterok:' + ":".join(f"${{{_var(a)}}}" for a in job.after) + '"',
                       "--kill-on-invalid-dep=yes"]
            words = [*map(q, job.options + self.sbatch_args), *dep, '"$SICOG_ROOT"/' + q(job.recipe),
                     *map(q, job.args)]
            lines.append(f"submit {_var(job.name)} {q(job.name)} " + " ".join(words))
        lines += ["echo \"jobs: ${JOB_IDS[*]}\"", f"echo {q('logs: ' + str(self.out / 'logs'))}"]
        return "\n".join(lines) + "\n"

    def submit(self, graph: Sequence[Member]) -> str:
        proc = subprocess.run(["bash", "-c", self.script(graph)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"submitting the chain failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Write (or submit) a SICOG stage graph as a chain of sbatch jobs.")
    p.add_argument("--round-config", default=None, help="a round's settings (JSON, megatron_sicog/recipe/round.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a round setting (repeatable): base_checkpoint=ckpt/base, stage1.iters=50, ...")
    p.add_argument("--tiny-config", default=None, help="the tiny demo's config instead: the whole demo as jobs")
    p.add_argument("--dpo", action="store_true", help="(--tiny-config) the demo's DPO variant")
    p.add_argument("--scaling", action="store_true", help="(--tiny-config) the demo's scaling curve")
    p.add_argument("--rounds", type=int, default=1, help="(--tiny-config) the demo's rounds")
    p.add_argument("--output-dir", default=None, help="(--tiny-config) the demo's output directory")
    p.add_argument("--gen-shards", type=int, default=1, help="array size of each candidate generation (1: one job)")
    p.add_argument("--prep-shards", type=int, default=1, help="array size of each preprocessing (1: one job)")
    p.add_argument("--train-nodes", type=int, default=None, help="--nodes of each training job (train.sbatch's)")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--write", default=None, metavar="FILE", help="write the script to FILE")
    act.add_argument("--submit", action="store_true", help="run the script: submit the chain now")
    a = p.parse_args(argv)
    try:
        if a.tiny_config:
            from megatron_sicog.loop import Loop, LoopConfig

            loop = Loop(LoopConfig.from_json(a.tiny_config, output_dir=a.output_dir), dpo=a.dpo, scaling=a.scaling,
                        rounds=a.rounds)
            graph, out = loop.graph(), loop.out
        else:
            from megatron_sicog.recipe.round import RoundConfig, sicog_round

            cfg = RoundConfig.load(a.round_config, a.set)
            graph, out = sicog_round(cfg), Path(cfg.output_dir).resolve()
    except ValueError as e:
        p.error(str(e))
    runner = SbatchRunner(out, shards={"tools/generate_candidates.py": a.gen_shards,
                                       "tools/preprocess_data.py": a.prep_shards}, train_nodes=a.train_nodes)
    if a.submit:
        print(runner.submit(graph), end="")
    elif a.write:
        Path(a.write).write_text(runner.script(graph))
    else:
        print(runner.script(graph), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
