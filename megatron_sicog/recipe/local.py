"""Runs a graph on this machine: one subprocess per stage, in order, resumable.

Each stage's command is printed and appended to ``<out>/commands.sh`` (runnable by hand from the repository
root), its output goes to ``<out>/logs/<name>.log``, its seconds to ``timings``, and a finished stage leaves
``<out>/.done/<name>``, so an interrupted run resumes at the first unfinished stage. Steps (in-process
glue) run every time: they are cheap and rewrite their outputs whole.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

from megatron_sicog.recipe.graph import Member, Stage, Step

REPO = Path(__file__).resolve().parent.parent.parent
HEADER = ("#!/usr/bin/env bash\n# Every command of the SICOG loop, in order (run from the repository root).\n"
          "set -euo pipefail\n")


class StageFailed(RuntimeError):
    pass


def local_command(stage: Stage, python: str = sys.executable) -> list[str]:
    """The stage's command here: python, or torchrun --standalone for nproc > 1."""
    if stage.nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(stage.nproc),
                *stage.argv]
    return [python, *stage.argv]


def command_text(cmd: Iterable[str]) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd)


class LocalRunner:
    def __init__(self, out: Path, python: str = sys.executable):
        self.out, self.python = Path(out), python
        for sub in ("logs", ".done"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.commands = self.out / "commands.sh"
        if not self.commands.exists():
            self.commands.write_text(HEADER)
        self.timings: dict[str, float] = {}

    def run_all(self, graph: Iterable[Member]) -> None:
        for m in graph:
            self.run(m)

    def run(self, m: Member) -> None:
        if isinstance(m, Step):
            m.call()
            return
        marker = self.out / ".done" / m.name
        cmd = local_command(m, self.python)
        text = command_text(cmd)
        if marker.exists():
            print(f"[skip] {m.name} (done)", flush=True)
            return
        print(f"\n[{m.name}] $ {text}", flush=True)
        with open(self.commands, "a") as f:
            f.write(f"\n# {m.name}\n{text}\n")
        log = self.out / "logs" / f"{m.name}.log"
        t0 = time.perf_counter()
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        with open(log, "w") as lf:
            proc = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env, stdout=lf, stderr=subprocess.STDOUT)
        dt = time.perf_counter() - t0
        self.timings[m.name] = dt
        tail = log.read_text().splitlines()[-6:]
        summary = [ln for ln in tail if ln.strip() and "it/s" not in ln and "%|" not in ln][-2:]
        for ln in summary:
            print(f"    {ln.strip()[:220]}", flush=True)
        if proc.returncode != 0:
            raise StageFailed(f"stage {m.name} failed (exit {proc.returncode}); see {log}:\n" + "\n".join(tail))
        print(f"    {m.name} done in {dt:.1f}s", flush=True)
        marker.write_text(f"{dt:.3f}\n")
