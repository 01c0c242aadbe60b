"""Runs the tiny loop with every tool replaced by a stand-in that writes the files the loop reads back.

The stand-in records nothing itself: the loop's own runner writes ``commands.sh`` as it would for real.
``run_recorded`` returns that file with the output directory written ``$OUT``, the interpreter ``$PYTHON``,
the repository ``$REPO`` (where the shipped base model lies),
so that a run can be compared with a pinned copy (tests/data/loop_commands_*.sh).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _tool_of(cmd: list[str]) -> str:
    return next(c for c in cmd if c.endswith(".py"))


def fake_tool(cmd, **_kw) -> subprocess.CompletedProcess:
    """Write the outputs the loop reads in-process, per tool (shapes only, no real content)."""
    cmd = [str(c) for c in cmd]
    tool = Path(_tool_of(cmd)).name
    if tool == "make_synthetic_data.py":
        d = Path(_flag(cmd, "--output-dir"))
        _jsonl(d / "eval.jsonl", [{"id": f"e{i}", "image": f"e{i}.png",
                                   "questions": [{"id": f"e{i}-q", "question": "What colour?"}]} for i in range(2)])
        _jsonl(d / "unlabelled_answers.jsonl", [{"id": "u0-q", "answer": "red"}])
        _jsonl(d / "unlabelled_images.jsonl", [{"id": "u0", "image": "u0.png"}])
        _jsonl(d / "unlabelled_questions.jsonl", [{"id": "u0-q", "image": "u0.png", "question": "What colour?"}])
    elif tool == "generate_candidates.py":
        n = int(_flag(cmd, "--num-candidates"))
        rows = [{"id": r["id"], "image": r.get("image"), "candidates": ["Step 1: x"] * n}
                for r in (json.loads(ln) for ln in Path(_flag(cmd, "--input")).read_text().splitlines() if ln)]
        _jsonl(Path(_flag(cmd, "--output")), rows)
    elif tool == "curate.py":
        rows = [{"id": f"u{i}", "image": f"u{i}.png", "task": "caption" if i % 2 else "reasoning",
                 "conversations": []} for i in range(4)]
        _jsonl(Path(_flag(cmd, "--output")), rows)
        _jsonl(Path(_flag(cmd, "--preference-output")), rows[:2])
    elif tool == "evaluate.py":
        items = [{"id": "e0", "task": "caption", "f1": 0.5}, {"id": "e0-q", "task": "reasoning", "correct": 1}]
        Path(_flag(cmd, "--output")).write_text(json.dumps(
            {"reasoning": {"accuracy": 0.5}, "caption": {"f1": 0.5}, "items": items}))
    elif tool == "evaluate_benchmarks.py":
        out = Path(_flag(cmd, "--output-dir"))
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"MMBench_tiny": {}, "POPE_tiny": {}}))
    return subprocess.CompletedProcess(cmd, 0)


def stub_analysis(monkeypatch) -> None:
    """The demo's analysis of hidden truths (synthetic scene graphs) is not what these tests are about."""
    import megatron_sicog.evaluation.consistency as consistency

    monkeypatch.setattr(consistency, "caption_candidate_quality", lambda *a, **k: {})
    monkeypatch.setattr(consistency, "answer_vote_quality", lambda *a, **k: {})
    monkeypatch.setattr(consistency, "mean_step_consistency", lambda *a, **k: {})


def normalise(text: str, out: Path) -> str:
    from megatron_sicog.loop import REPO

    return text.replace(str(out), "$OUT").replace(sys.executable, "$PYTHON").replace(str(REPO), "$REPO")


def run_recorded(monkeypatch, cfg, **loop_kw) -> str:
    """commands.sh of a whole loop run on ``cfg`` with stand-in tools, normalised."""
    from megatron_sicog.loop import Loop

    monkeypatch.setattr(subprocess, "run", fake_tool)
    stub_analysis(monkeypatch)
    loop = Loop(cfg, **loop_kw)
    loop.execute()
    return normalise(loop.commands.read_text(), loop.out)
