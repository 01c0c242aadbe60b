"""Stages and steps of a graph, and the dependencies between them (a stage reads what an earlier one wrote).

A ``Stage`` is one command-line tool of this repository with its arguments (strings, paths absolute or
relative to the repository root); a ``Step`` is a small in-process function between tools (named by
"module:function" and JSON-able keyword arguments, so any runner can call it). A graph is a list of both in
an order that runs (every input is written by an earlier member or exists before the graph runs).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union


@dataclass(frozen=True)
class Shard:
    """How a stage splits into independent tasks: task i of n writes ``<output>`` with ``.shard<i>`` before
    its suffix and takes ``--shard-index i --num-shards n``; ``gather`` joins the shards into ``output``
    ("jsonl": concatenated records, "mmap": tools/merge_datasets.py)."""
    output: str
    gather: str


@dataclass(frozen=True)
class Stage:
    name: str  # unique in the graph: marker, log and job name
    tool: str  # the program, relative to the repository root
    args: tuple[str, ...]
    inputs: tuple[str, ...] = ()  # files, directories or dataset prefixes it reads
    outputs: tuple[str, ...] = ()  # what it writes
    nproc: int = 1  # processes; > 1 runs under torchrun (data parallel)
    kind: str = "tool"  # "train" (a launcher with nodes, preemption and resume) or "tool"
    shard: Optional[Shard] = None

    @property
    def argv(self) -> list[str]:
        """The tool and its arguments: the command without the launcher (python, torchrun, srun)."""
        return [self.tool, *self.args]

    def sharded(self, index: str, count: str) -> list[str]:
        """argv of one shard task (``index`` / ``count`` may be shell words such as $SLURM_ARRAY_TASK_ID)."""
        assert self.shard is not None, f"{self.name} is not sharded"
        out = shard_path(self.shard.output, index)
        return [out if a == self.shard.output else a for a in self.argv] + [
            "--shard-index", index, "--num-shards", count]


@dataclass(frozen=True)
class Step:
    name: str
    func: str  # "package.module:function"
    kwargs: dict = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    def call(self):
        module, name = self.func.split(":")
        return getattr(importlib.import_module(module), name)(**self.kwargs)


Member = Union[Stage, Step]


def shard_path(path: str, index: str) -> str:
    """``gen/cod.jsonl`` -> ``gen/cod.shard<index>.jsonl``; a prefix without suffix gets ``.shard<index>``."""
    head, dot, suffix = path.rpartition(".")
    if not dot or "/" in suffix:
        return f"{path}.shard{index}"
    return f"{head}.shard{index}.{suffix}"


def _reads(inp: str, out: str) -> bool:
    return inp == out or inp.startswith(out.rstrip("/") + "/")


def dependencies(graph: Sequence[Member]) -> dict[str, list[str]]:
    """For each member, the earlier members that wrote one of its inputs (the last writer of each)."""
    deps: dict[str, list[str]] = {}
    writers: list[Member] = []
    names = set()
    for m in graph:
        if m.name in names:
            raise ValueError(f"two members of the graph are named {m.name!r}")
        names.add(m.name)
        found = []
        for inp in m.inputs:
            w = next((w.name for w in reversed(writers) if any(_reads(inp, o) for o in w.outputs)), None)
            if w is not None and w not in found:
                found.append(w)
        deps[m.name] = found
        writers.append(m)
    return deps


def external_inputs(graph: Sequence[Member]) -> list[str]:
    """Inputs no member writes: what must exist before the graph runs."""
    out, seen = [], set()
    for i, m in enumerate(graph):
        for inp in m.inputs:
            if inp not in seen and not any(_reads(inp, o) for w in graph[:i] for o in w.outputs):
                seen.add(inp)
                out.append(inp)
    return out
