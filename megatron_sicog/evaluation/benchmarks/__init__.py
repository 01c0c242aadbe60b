"""Standard benchmarks from local files in their published formats (nothing is downloaded).

A benchmark is named on the command line as ``NAME=FILE``; the name's family
(case-insensitive prefix) picks the format and the metric:

=====================================  ========  ==============================================
family (name starts with)              format    metric
=====================================  ========  ==============================================
mmbench, ccbench                       mcq       CircularEval accuracy (+ per-row accuracy)
mmstar, ai2d, scienceqa, seedbench     mcq       accuracy
pope                                   yesno     accuracy, precision, recall, F1, yes ratio
chartqa                                vqa       relaxed accuracy
=====================================  ========  ==============================================

(`mcq`, `yesno`, `vqa` describe the files.) `load_benchmark` reads and
checks a file (every bad row is a `BenchmarkError` naming file and row),
`check_images` decodes every image once, `request_text` is the question a
model is asked, `read_predictions` reads saved predictions (JSONL of
``{"index" or "question_id", "prediction"}``) and `score` computes the
figures: ``{"overall": ..., "n": ..., per-category / per-split ...}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

from megatron_sicog.io import RecordError, iter_records
from megatron_sicog.prompts import IMAGE_PLACEHOLDER, build_prompt

from . import mcq, vqa, yesno
from .table import BenchmarkError, ImageRef, read_rows, row_id

__all__ = ["Benchmark", "BenchmarkError", "FAMILIES", "ImageRef", "check_images", "format_table",
           "load_benchmark", "read_predictions", "request_text", "resolve", "score"]

# name prefix -> (format, CircularEval)
FAMILIES = {
    "mmbench": ("mcq", True), "ccbench": ("mcq", True),
    "mmstar": ("mcq", False), "ai2d": ("mcq", False), "scienceqa": ("mcq", False),
    "seedbench": ("mcq", False), "seed_bench": ("mcq", False), "seed-bench": ("mcq", False),
    "pope": ("yesno", False), "chartqa": ("vqa", False),
}
ID_FIELD = {"mcq": "index", "yesno": "question_id", "vqa": "index"}
PROMPT_MODES = ("benchmark", "answer", "cot", "cot-open")


@dataclass
class Benchmark:
    name: str
    kind: str  # mcq | yesno | vqa
    circular: bool
    path: Path
    items: list[dict]  # id, where, question, answer, images, category, ...

    @property
    def id_field(self) -> str:
        return ID_FIELD[self.kind]


def resolve(name: str) -> tuple[str, bool]:
    """(format, circular) of a benchmark name; BenchmarkError for an unknown family."""
    low = name.lower()
    for prefix in sorted(FAMILIES, key=len, reverse=True):
        if low.startswith(prefix):
            return FAMILIES[prefix]
    raise BenchmarkError(f"unknown benchmark {name!r}: the name must start with one of "
                         f"{', '.join(sorted(FAMILIES))} (it picks the file format and the metric)")


def load_benchmark(name: str, path: Union[str, Path], image_root: Optional[Union[str, Path]] = None) -> Benchmark:
    kind, circular = resolve(name)
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    tsv = path.suffix.lower() in (".tsv", ".csv")
    rows = read_rows(path)
    if kind == "mcq":
        if not tsv:
            raise BenchmarkError(f"{path}: {name} is a multiple-choice benchmark: give VLMEvalKit's TSV")
        items = mcq.load(rows, name, circular)
    elif kind == "yesno":
        items = yesno.load(rows, root, tsv)
    else:
        items = vqa.load(rows, root, tsv)
    if not items:
        raise BenchmarkError(f"{path}: no rows")
    return Benchmark(name, kind, circular, path, items)


def check_images(bench: Benchmark) -> int:
    """Decode every distinct image once (BenchmarkError names the first bad row); returns the count."""
    seen: set[ImageRef] = set()
    for it in bench.items:
        for ref in it["images"]:
            if ref not in seen:
                ref.decode()
                seen.add(ref)
    return len(seen)


def request_text(bench: Benchmark, item: dict, mode: str = "benchmark") -> str:
    """The human turn for `item` (one ``<image>`` per image, first).

    ``benchmark``: the prompt VLMEvalKit / lmms-eval use (the options and
    "Please select ..." for multiple choice; "Answer the question using a single
    word or phrase." otherwise); ``answer`` / ``cot``: that question inside the
    project's own short-answer or structured-CoT prompt (`prompts.build_prompt`);
    ``cot-open``: the CoT prompt over the question alone, a multiple-choice
    question without its options (the reply is then matched by option text: for
    models that never saw lettered options, like the tiny demo's).
    """
    if mode not in PROMPT_MODES:
        raise ValueError(f"unknown prompt mode {mode!r}; expected one of {PROMPT_MODES}")
    q = item["question"]
    if mode == "benchmark":
        text = q if bench.kind == "mcq" else f"{q}\n{yesno.PROMPT_TAIL}"
    elif mode == "cot-open":
        text = build_prompt("cot", item.get("open_question", q).removeprefix("Question: "), with_image=False)
    else:
        text = build_prompt(mode, q, with_image=False)
    return IMAGE_PLACEHOLDER * len(item["images"]) + "\n" + text if item["images"] else text


def read_predictions(path: Union[str, Path], bench: Benchmark) -> dict[str, str]:
    """{id: prediction} from a JSONL file; every benchmark row must have exactly one prediction."""
    known = {it["id"]: it for it in bench.items}
    out: dict[str, str] = {}
    where_of: dict[str, str] = {}
    for n, rec in iter_records(path):
        where = f"{path}:line {n}"
        if isinstance(rec, RecordError):
            raise BenchmarkError(str(rec))
        rid = rec.get(bench.id_field, rec.get("index", rec.get("question_id")))
        if rid is None:
            raise BenchmarkError(f"{where}: no {bench.id_field!r} field")
        rid = row_id(rid)
        if rid not in known:
            raise BenchmarkError(f"{where}: {bench.id_field} {rid} is not a row of {bench.name} ({bench.path})")
        if rid in out:
            raise BenchmarkError(f"{where}: second prediction for {bench.id_field} {rid} (first at {where_of[rid]})")
        pred = rec.get("prediction")
        if not isinstance(pred, str):
            raise BenchmarkError(f"{where}: 'prediction' must be a string, got {type(pred).__name__}")
        out[rid], where_of[rid] = pred, where
    missing = [i for i in known if i not in out]
    if missing:
        raise BenchmarkError(f"{path}: no prediction for {len(missing)} of {len(known)} rows of {bench.name} "
                             f"(first: {bench.id_field} {missing[0]}, {known[missing[0]]['where']})")
    return out


def score(bench: Benchmark, predictions: Mapping[str, str]) -> tuple[dict, list[dict]]:
    """(results, per-row records) of `predictions` ({id: text}, one per row)."""
    if bench.kind == "mcq":
        return mcq.score(bench.items, predictions, bench.circular)
    if bench.kind == "yesno":
        return yesno.score(bench.items, predictions)
    return vqa.score(bench.items, predictions)


def _pct(x) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}"


def format_table(results: Mapping[str, dict]) -> str:
    """One line per benchmark: overall, n, and the figures each format adds."""
    lines = [f"{'benchmark':<24} {'overall':>7} {'n':>6}  details"]
    for name, r in results.items():
        extra = []
        if "per_row" in r:
            extra.append(f"per-row {_pct(r['per_row']).strip()}")
        if "unmatched" in r:
            extra.append(f"unmatched {r['unmatched']}/{r['n_rows']}")
        for k in ("precision", "recall", "f1", "yes_ratio"):
            if k in r:
                extra.append(f"{k} {_pct(r[k]).strip()}")
        lines.append(f"{name:<24} {_pct(r['overall']):>7} {r['n']:>6}  {', '.join(extra)}")
    return "\n".join(lines)
