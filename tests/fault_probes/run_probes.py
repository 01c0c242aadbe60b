#!/usr/bin/env python
"""Run every fault probe of issue 22 and write the pass/fail table beside this file (results.md).

    python tests/fault_probes/run_probes.py            # writes tests/fault_probes/results.md
    python tests/fault_probes/run_probes.py --output /tmp/r.md

The probes are tests: tests/test_fault_probes.py (bad flags, bad files,
reruns onto existing outputs, paths outside the root, truncated and foreign
checkpoints, stale temp files, schedule changes on resume) plus the kill and
SIGTERM tests that live with their tools. Each row of the table is one probe,
what it asks, and whether it held. Exit status 0 when every probe held.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# probes kept with their tools' tests: the kill / SIGTERM / resume paths
ELSEWHERE = [
    ("tests/test_trainer.py::test_sigterm_then_resume_equals_uninterrupted_run",
     "SIGTERM mid-training -> a usable checkpoint, exit 0; resume is bit-identical"),
    ("tests/test_generation_tool.py::test_killed_run_resumes_with_every_id_once",
     "kill -9 mid-generation, then --resume: every id exactly once"),
    ("tests/test_preprocess.py::test_sigterm_leaves_nothing",
     "SIGTERM mid-preprocessing: no partial output, exit 143"),
    ("tests/test_preprocess.py::test_interrupt_leaves_nothing",
     "Ctrl-C mid-preprocessing: no partial output"),
    ("tests/test_preprocess.py::test_bad_input_fail",
     "--on-error fail: file:line of the bad record, the earlier output untouched"),
    ("tests/test_trainer.py::test_impossible_configurations_fail_before_work",
     "impossible parallel / batch configuration named before any work"),
    ("tests/test_checkpoint_layout.py::test_missing_tracker_is_a_clear_error",
     "a folder without a tracker is named as not a checkpoint"),
    ("tests/test_conversion.py::test_errors_name_what_is_missing_unexpected_or_impossible",
     "conversion errors name what is missing, unexpected or impossible"),
]


def doc_of(nodeid: str) -> str:
    """The probe's question: its docstring's first line, else its name in words."""
    import ast

    path, _, name = nodeid.partition("::")
    func = name.split("[")[0]
    tree = ast.parse((REPO / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == func:
            doc = ast.get_docstring(node)
            if doc:
                return doc.splitlines()[0]
    words = func.removeprefix("test_").replace("_", " ")
    return words + (f" [{name.split('[', 1)[1]}" if "[" in name else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=str(HERE / "results.md"))
    args = ap.parse_args(argv)
    nodes = ["tests/test_fault_probes.py"] + [n for n, _ in ELSEWHERE]
    about = dict(ELSEWHERE)
    with tempfile.TemporaryDirectory() as d:
        xml = Path(d) / "junit.xml"
        t0 = time.time()
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"--junitxml={xml}", *nodes], cwd=REPO, env=env)
        secs = time.time() - t0
        rows = []
        for case in ET.parse(xml).iter("testcase"):
            path = case.get("classname", "").replace(".", "/") + ".py"
            nodeid = f"{path}::{case.get('name')}"
            outcome = ("FAILED" if case.find("failure") is not None or case.find("error") is not None
                       else "skipped" if case.find("skipped") is not None else "held")
            base = nodeid.split("[")[0]
            rows.append((nodeid, about.get(base) or doc_of(nodeid), outcome, float(case.get("time", 0))))
    held = sum(r[2] == "held" for r in rows)
    lines = [f"# Fault probes (issue 22): {held} of {len(rows)} held",
             "",
             f"`python tests/fault_probes/run_probes.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{secs:.0f} s on {os.cpu_count()} CPU core(s); pytest exit status {proc.returncode}.",
             "",
             "| probe | what must hold | result | s |",
             "| --- | --- | --- | --- |"]
    lines += [f"| `{n}` | {a} | {o} | {t:.1f} |" for n, a, o, t in rows]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"{held}/{len(rows)} probes held; table in {args.output}")
    return 0 if held == len(rows) and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
