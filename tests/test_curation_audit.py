"""--audit: precision of the kept labels and kept fraction at each threshold, on a hand-made case."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_sicog.curation import curate
from megatron_sicog.curation.audit import AuditLabels, unigram_precision
from megatron_sicog.guards import UsageError
from megatron_sicog.io import iter_records, write_jsonl_atomic
from megatron_sicog.prompts import build_prompt, format_cot
from tests.helpers import REPO, load_tool

Q = build_prompt("cot", "What colour is the car? (A) red (B) blue (C) green")
GRAPH = {"background": "white", "marginal": {"colour": "yellow", "side": "top", "offset": 0.5, "shape": "dot"},
         "objects": [{"shape": "circle", "colour": "red", "size": "large", "texture": "solid", "row": 0, "col": 0,
                      "position": "top left"}]}
RIGHT = "A large red circle at the top left on a white background."
WRONG_COLOUR = "A large blue circle at the top left on a white background."


def cot(ans):
    return format_cot("Identify the car colour.", "A car parked by the kerb.", "The body has one colour.", ans)


def reasoning(rid, answers):
    return {"id": rid, "image": f"{rid}.jpg", "task": "reasoning", "prompt": Q,
            "candidates": [cot(a) if a else "I cannot tell." for a in answers]}


def caption(cid, cands):
    return {"id": cid, "image": f"{cid}.jpg", "task": "caption", "prompt": build_prompt("caption"), "candidates": cands}


# scores by hand: the winning share of 6 (abstentions count); the lexical MBR of identical
# texts is 1, of two identical texts beside one sharing no content word (1 + 0) / 2
ITEMS = [
    reasoning("r1", ["A"] * 6),                                 # 1.0,  voted a; known "red" = a: right
    reasoning("r2", ["A", "A", "A", "A", "B", "B"]),             # 4/6,  voted a; known "B": wrong
    reasoning("r3", ["B", "B", "B", "C", "C", "A"]),             # 0.5,  voted b; known "(B)": right
    reasoning("r4", ["C", "C", "A", "B", None, None]),           # 2/6,  voted c; known "green" = c: right
    reasoning("r5", ["A"] * 6),                                 # no label: not audited
    reasoning("r6", [None] * 6),                                # no answer at all: not audited
    caption("c1", [RIGHT] * 3),                                 # 1.0,  fact precision 7/7
    caption("c2", [WRONG_COLOUR, WRONG_COLOUR, "boat lake"]),   # 0.5,  fact precision 6/7 (the colour)
    caption("c3", ["two dogs and a cat on grass"] * 2 + ["boat"]),  # 0.5, words 3 of 4 in the known caption
    caption("c4", [RIGHT] * 3),                                 # no label
]
LABELS = [
    {"id": "r1", "answer": "red"}, {"id": "r2", "answer": "B"}, {"id": "r3", "answer": "(B)"},
    {"id": "r4", "answer": "green"}, {"id": "r6", "answer": "A"},
    {"id": "c1", "scene_graph": GRAPH}, {"id": "c2", "scene_graph": GRAPH},
    {"id": "c3", "caption": "Two dogs lie on the grass."},
    {"id": "nowhere", "answer": "A"},              # not among the items: ignored
    {"id": "r1"},                                  # no label field: an error record
    {"answer": "A"},                               # no id: an error record
]


def audited(tmp_path, **kw):
    write_jsonl_atomic(tmp_path / "cands.jsonl", ITEMS)
    write_jsonl_atomic(tmp_path / "labels.jsonl", LABELS)
    return curate(tmp_path / "cands.jsonl", tmp_path / "out.jsonl", scorer="lexical", progress=False,
                  report_dir=tmp_path / "rep", audit=[tmp_path / "labels.jsonl"], **kw)


def point(audit, t):
    i = audit["thresholds"].index(t)
    return audit["kept"][i], audit["kept_fraction"][i], audit["precision"][i]


def test_reasoning_precision_and_kept_fraction_by_hand(tmp_path):
    res = audited(tmp_path, reasoning_threshold=0.5)
    a = res.summary["tasks"]["reasoning"]["audit"]
    assert a["labelled"] == 4 and a["measure"].startswith("answer: ")
    # kept labelled items at t: score >= t; precision = right ones / kept ones
    assert point(a, 0.0) == (4, 1.0, 0.75)                    # r1 r2 r3 r4: 3 of 4 right
    assert point(a, 0.4) == (3, 0.75, round(2 / 3, 4))        # r1 r2 r3
    assert point(a, 0.6) == (2, 0.5, 0.5)                     # r1 r2
    assert point(a, 0.7) == (1, 0.25, 1.0)                    # r1
    assert point(a, 1.0) == (1, 0.25, 1.0)
    assert a["at_threshold"] == {"threshold": 0.5, "kept": 3, "kept_fraction": 0.75, "precision": round(2 / 3, 4)}


def test_caption_precision_by_hand(tmp_path):
    a = audited(tmp_path).summary["tasks"]["caption"]["audit"]
    assert a["labelled"] == 3 and "scene_graph" in a["measure"] and "caption" in a["measure"]
    assert point(a, 0.5) == (3, 1.0, round((1 + 6 / 7 + 3 / 4) / 3, 4))
    assert point(a, 0.6) == (1, round(1 / 3, 4), 1.0)
    assert a["at_threshold"]["threshold"] == 0.0 and a["at_threshold"]["kept"] == 3


def test_label_files_report_and_plot(tmp_path):
    res = audited(tmp_path, reasoning_threshold=0.5)
    s = res.summary
    assert s["audit"] == {"files": [str(tmp_path / "labels.jsonl")], "labels": 9, "matched": 7, "errors": 2}
    errors = [r for _, r in iter_records(tmp_path / "out.errors.jsonl")]
    assert [e["line"] for e in errors] == [10, 11] and all(e["reason"].startswith("audit_invalid_record") for e in errors)
    png = Path(res.report["audit"])
    assert png.name == "audit.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "rep" / "summary.json").read_text())["tasks"]["reasoning"]["audit"] == \
        s["tasks"]["reasoning"]["audit"]
    # the known labels are compared with, never written into, the curated records
    out = (tmp_path / "out.jsonl").read_text()
    assert "lie on the grass" not in out and "scene_graph" not in out


def test_audit_follows_the_keep_fraction_cut(tmp_path):
    a = audited(tmp_path, keep_fraction=0.5).summary["tasks"]["reasoning"]["audit"]
    # scored reasoning items r1 r2 r3 r4 r5: the best half (ceil 2.5 = 3) ends at 4/6
    assert a["at_threshold"] == {"threshold": pytest.approx(4 / 6), "kept": 2, "kept_fraction": 0.5, "precision": 0.5}


def test_no_audit_no_audit_entries(tmp_path):
    write_jsonl_atomic(tmp_path / "cands.jsonl", ITEMS)
    res = curate(tmp_path / "cands.jsonl", tmp_path / "out.jsonl", scorer="lexical", progress=False,
                 report_dir=tmp_path / "rep")
    assert res.summary["audit"] is None and "audit" not in res.report
    assert all("audit" not in t for t in res.summary["tasks"].values())


def test_unigram_precision():
    assert unigram_precision("two dogs and a cat on grass", "Two dogs lie on the grass.") == 0.75
    assert unigram_precision("dog dog dog", "a dog") == pytest.approx(1 / 3)   # counts are clipped
    assert unigram_precision("", "a dog") == 0.0


def test_duplicate_label_keeps_the_first(tmp_path):
    write_jsonl_atomic(tmp_path / "a.jsonl", [{"id": "x", "answer": "1"}])
    write_jsonl_atomic(tmp_path / "b.jsonl", [{"id": "x", "answer": "2", "caption": "a dog"}])
    labels = AuditLabels.load([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert labels.labels == {"x": {"answer": "1", "caption": "a dog"}}
    assert [e["reason"].split(":")[0] for e in labels.errors] == ["audit_duplicate"]


def test_cli_audit_flag_and_usage_errors(tmp_path):
    write_jsonl_atomic(tmp_path / "cands.jsonl", ITEMS)
    write_jsonl_atomic(tmp_path / "labels.jsonl", LABELS)
    tool = load_tool("curate")
    base = ["--input", str(tmp_path / "cands.jsonl"), "--output", str(tmp_path / "o.jsonl"), "--scorer", "lexical"]
    for extra, msg in [(["--audit", str(tmp_path / "none.jsonl")], "--audit"),
                       (["--keep-fraction", "0"], "--keep-fraction"),
                       (["--keep-fraction", "0.5", "--threshold", "0.5"], "one or the other")]:
        with pytest.raises(UsageError, match=msg):
            tool.check_args(tool.build_parser().parse_args(base + extra))
    p = subprocess.run([sys.executable, "tools/curate.py", *base, "--no-progress", "--reasoning-threshold", "0.5",
                        "--report-dir", str(tmp_path / "rep"), "--audit", str(tmp_path / "labels.jsonl")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    line = json.loads(p.stdout.strip().splitlines()[-1])
    assert line["reasoning_audit_precision"] == round(2 / 3, 4)
    assert (tmp_path / "rep" / "audit.png").stat().st_size > 0


def test_answer_audit_agrees_with_the_reference_accuracy(tmp_path):
    """Labels equal to the candidate records' references: the audit's precision at 0 and at the
    threshold in effect are the summary's reference accuracy over all and over kept items."""
    from megatron_sicog.curation.synthetic import synthetic_records

    recs = list(synthetic_records(200, 6, seed=4))
    write_jsonl_atomic(tmp_path / "cands.jsonl", recs)
    write_jsonl_atomic(tmp_path / "labels.jsonl", [{"id": r["id"], "answer": r["reference"]} for r in recs
                                                   if r["task"] == "reasoning"])
    res = curate(tmp_path / "cands.jsonl", tmp_path / "out.jsonl", scorer="lexical", progress=False,
                 reasoning_threshold=0.6, audit=[tmp_path / "labels.jsonl"])
    t = res.summary["tasks"]["reasoning"]
    acc, a = t["reference_accuracy"], t["audit"]
    assert a["labelled"] == acc["with_reference"] > 0
    assert a["precision"][0] == acc["accuracy"] and a["at_threshold"]["precision"] == acc["kept_accuracy"]
    assert a["at_threshold"]["kept"] == acc["kept_with_reference"] == t["kept"]
