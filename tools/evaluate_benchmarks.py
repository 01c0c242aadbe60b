#!/usr/bin/env python
"""Score a model on standard benchmarks read from local files (nothing is downloaded).

    # a checkpoint of this project on MMBench (CircularEval), POPE and ChartQA files
    python tools/evaluate_benchmarks.py --load ckpt/sicog \\
        --benchmark MMBench_DEV_EN=MMBench_DEV_EN.tsv --benchmark POPE=coco_pope_random.json \\
        --benchmark ChartQA_TEST=ChartQA_TEST.tsv --image-root coco/val2014 --output-dir eval/sicog

    # a Hugging Face LLaVA directory, on 2 tensor-parallel ranks
    torchrun --nproc-per-node 2 tools/evaluate_benchmarks.py --hf-path llava-hf/ \\
        --tensor-model-parallel-size 2 --benchmark MMStar=MMStar.tsv --output-dir eval/llava

    # re-score saved predictions (of this tool, or any model's) with no model
    python tools/evaluate_benchmarks.py --benchmark MMStar=MMStar.tsv \\
        --predictions MMStar=other_model.jsonl --output-dir eval/other

Formats (`megatron_sicog.evaluation.benchmarks`; the name's prefix picks one):
VLMEvalKit's multiple-choice TSV for MMBench / CCBench (CircularEval), MMStar,
AI2D, ScienceQA, SEEDBench; POPE's yes/no JSONL; ChartQA (relaxed accuracy).
Image files named by JSON rows are looked up under ``--image-root`` (default:
the benchmark file's folder).

Output (``--output-dir``): ``results.json`` (``{NAME: {"overall", "n", ...}}``),
``NAME.predictions.jsonl`` (per row: id, prediction, what it was read as, hit)
and the printed table. Answers are greedy, batched, and appended batch by
batch to ``.partial/NAME.jsonl``: a killed run resumes where it stopped. Bad
input (a missing column, an image that does not decode, an unknown benchmark
name, predictions whose ids do not match) stops the run before anything is
written, with one message naming the file and row.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from megatron_sicog.guards import UsageError, add_debug_flag, add_overwrite_flag, cli
from megatron_sicog.io import atomic_write_json, dumps, loads, write_jsonl_atomic
from megatron_sicog.training.checkpointing import add_allow_pickle_flag, allow_pickle

log = logging.getLogger("evaluate_benchmarks")


def _pairs(values, flag: str, p: argparse.ArgumentParser) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or ():
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            p.error(f"{flag} takes NAME=FILE, got {v!r}")
        if name in out:
            p.error(f"{flag} {name} given twice")
        out[name] = path
    return out


def parse_args(argv=None) -> argparse.Namespace:
    from megatron_sicog.data.chat_template import TEMPLATES
    from megatron_sicog.data.tokenizer import TOKENIZER_TYPES
    from megatron_sicog.evaluation.benchmarks import PROMPT_MODES
    from megatron_sicog.model.presets import add_model_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("benchmarks")
    g.add_argument("--benchmark", action="append", metavar="NAME=FILE", required=True,
                   help="a benchmark file in its published format (repeatable)")
    g.add_argument("--predictions", action="append", metavar="NAME=FILE",
                   help="score this JSONL of {index|question_id, prediction} for benchmark NAME, no model")
    g.add_argument("--image-root", default=None, help="folder of the image files JSON rows name")
    g.add_argument("--output-dir", required=True)
    add_overwrite_flag(g)
    g = p.add_argument_group("answering")
    g.add_argument("--mode", choices=PROMPT_MODES, default="benchmark",
                   help="benchmark: the benchmark's own prompt; answer / cot: inside the project's "
                        "short-answer / structured-CoT prompt; cot-open: the CoT prompt over the question "
                        "without its options (replies matched by option text)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--micro-batch-size", type=int, default=8, help="prompts per batch")
    g.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("model (not needed when every benchmark has --predictions)")
    g.add_argument("--load", default=None, help="checkpoint directory of this project (any TP)")
    g.add_argument("--hf-path", default=None, help="Hugging Face LlavaForConditionalGeneration directory")
    g.add_argument("--iteration", type=int, default=None)
    g.add_argument("--random-init", action="store_true", help="random weights of --model-preset (smoke tests)")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1)
    g.add_argument("--tokenizer-type", default=None, choices=TOKENIZER_TYPES)
    g.add_argument("--tokenizer-model", default=None)
    g.add_argument("--chat-template", default=None, choices=sorted(TEMPLATES))
    g.add_argument("--seed", type=int, default=1234)
    add_allow_pickle_flag(g)
    add_model_args(p)
    add_debug_flag(p)
    a = p.parse_args(argv)
    a.benchmarks = _pairs(a.benchmark, "--benchmark", p)
    a.prediction_files = _pairs(a.predictions, "--predictions", p)
    unknown = sorted(set(a.prediction_files) - set(a.benchmarks))
    if unknown:
        p.error(f"--predictions for {', '.join(unknown)} without --benchmark NAME=FILE (its answers)")
    a.to_answer = [n for n in a.benchmarks if n not in a.prediction_files]
    sources = sum(bool(x) for x in (a.load, a.hf_path, a.random_init))
    if a.to_answer and sources != 1:
        p.error(f"{', '.join(a.to_answer)} need a model: give exactly one of --load, --hf-path, --random-init "
                "(or --predictions NAME=FILE)")
    return a


def _done(path: Path) -> dict[str, str]:
    """Predictions already in a partial file; a truncated last line (a kill mid-write) is cut off."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    out = {}
    for line in data[:end].splitlines():
        if line.strip():
            rec = loads(line)
            out[str(rec["id"])] = rec["prediction"]
    return out


def answer_benchmark(bench, model, tokenizer, template: str, a, partial: Path, writer: bool) -> dict[str, str]:
    """{id: prediction} for every row, resuming from and appending to `partial`."""
    from tqdm import tqdm

    from megatron_sicog.evaluation.benchmarks import BenchmarkError, request_text
    from megatron_sicog.generation.candidates import iter_greedy_answers

    known = {it["id"] for it in bench.items}
    done = {k: v for k, v in _done(partial).items() if k in known}
    todo = [it for it in bench.items if it["id"] not in done]
    items = [{"id": it["id"], "prompt": request_text(bench, it, a.mode),
              "images": [ref.decode for ref in it["images"]]} for it in todo]
    bar = tqdm(total=len(bench.items), initial=len(done), desc=bench.name, unit="q",
               disable=a.no_progress or not writer, dynamic_ncols=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(partial, "a") if writer else open("/dev/null", "w") as f:
            batches = iter_greedy_answers(model, tokenizer, items, template, max_new_tokens=a.max_new_tokens,
                                          micro_batch_size=a.micro_batch_size)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except ValueError as e:
                    raise BenchmarkError(f"{bench.name}: {e}") from None
                for i, text in batch:
                    done[todo[i]["id"]] = text
                f.write("".join(dumps({"id": todo[i]["id"], "prediction": t}) + "\n" for i, t in batch))
                f.flush()
                bar.update(len(batch))
    finally:
        bar.close()
    return done


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    a = parse_args(argv)
    from megatron_sicog.evaluation import benchmarks as bm

    out_dir = Path(a.output_dir)
    if (out_dir / "results.json").exists() and not a.overwrite:
        raise UsageError(f"--output-dir {out_dir} already has results.json; give --overwrite to replace it")
    allow_pickle(a.allow_pickle)
    try:
        benches = {n: bm.load_benchmark(n, f, a.image_root) for n, f in a.benchmarks.items()}
        predictions = {n: bm.read_predictions(f, benches[n]) for n, f in a.prediction_files.items()}
        for n in a.to_answer:
            bm.check_images(benches[n])
    except bm.BenchmarkError as e:
        raise UsageError(str(e)) from None
    writer = True
    if a.to_answer:
        import torch.distributed as dist
        from megatron.core import parallel_state

        from megatron_sicog import runtime
        from megatron_sicog.generation.loading import load_model_and_tokenizer

        owns_dist = not dist.is_initialized()
        runtime.init_distributed(a.tensor_model_parallel_size, 1, seed=a.seed)
        if parallel_state.get_data_parallel_world_size() != 1:
            raise UsageError(f"evaluate_benchmarks runs one model replica: the world size "
                             f"({dist.get_world_size()}) must equal --tensor-model-parallel-size "
                             f"({a.tensor_model_parallel_size})")
        writer = parallel_state.get_tensor_model_parallel_rank() == 0
        tmp = Path(tempfile.mkdtemp(prefix=".eval-"))
        try:
            model, tokenizer, template = load_model_and_tokenizer(a, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            for n in a.to_answer:
                predictions[n] = answer_benchmark(benches[n], model, tokenizer, template, a,
                                                  out_dir / ".partial" / f"{n}.jsonl", writer)
        except bm.BenchmarkError as e:
            raise UsageError(str(e)) from None
        finally:
            if owns_dist:
                runtime.destroy_distributed()
    results = {}
    for n, bench in benches.items():
        res, rows = bm.score(bench, predictions[n])
        results[n] = res
        if writer:
            write_jsonl_atomic(out_dir / f"{n}.predictions.jsonl", rows)
    if writer:
        atomic_write_json(out_dir / "results.json", results)
        shutil.rmtree(out_dir / ".partial", ignore_errors=True)
        print(bm.format_table(results))
        print(f"results: {out_dir / 'results.json'}", flush=True)
    return results


if __name__ == "__main__":
    sys.exit(cli("evaluate_benchmarks", lambda: main() and 0))
