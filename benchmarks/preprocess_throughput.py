#!/usr/bin/env python
"""Converter throughput: this project's tools/preprocess_data.py vs Megatron-LM's, same run.

Generates a seeded text corpus (``{"text": ...}`` per line, ~--doc-bytes each),
trains a SentencePiece BPE (and, with ``--hf``, a byte-level BPE HF fast
tokenizer) on part of it, then for each tokenizer measures in one run:

* tokenizer only: one process batch-encoding all texts (1 thread, and the
  library's default threading), no I/O;
* ours: ``tools/preprocess_data.py --workers W`` (its own summary: seconds from
  start of work incl. tokenizer load, pool start and finalize; imports excluded);
* Megatron-LM: ``tools/preprocess_data.py --json-keys text --append-eod
  --workers W`` from the checkout given by ``--megatron-lm`` (its own last
  "Processed N documents (X docs/s" line: excludes start-up and finalize),
  run with ``--megatron-python`` (a venv with six/triton; see README of issue 4).

Both tools write the same tokens (checked: equal token counts). Each run's CPU
time (the tool and its workers, from getrusage) minus the tool's start-up CPU
(a 20-doc run) gives docs per CPU-second: on a shared, overloaded machine the
wall-clock rate mostly says how many runnable threads a tool has (Megatron-LM's
busy main process counts as a third), while CPU per document is what sets the
docs/s at equal cores. The start-up subtraction is only trustworthy when the
work is many times the ~10 CPU-s of imports (use >= 50,000 docs).
``--metric`` picks which ratio is printed last. Wall-clock
times of both whole processes are printed too. ``--profile`` adds a cProfile
of one worker's conversion of 5,000 documents. The last line is
``ratio: R`` = ours / Megatron-LM (SentencePiece, same workers; wall-clock
docs/s by default, ``--metric cpu`` for docs per CPU-second).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
from rss import peak_rss_line  # noqa: E402  benchmarks/rss.py: the script's folder is on sys.path


def make_corpus(path: Path, n_docs: int, doc_bytes: int, seed: int) -> list[str]:
    """Zipf-distributed pseudo-words (2-4 syllables) in sentences; seeded."""
    rng = np.random.default_rng(seed)
    syll = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["th", "sh", "ch", "qu", "ing", "er"]
    vocab = sorted({"".join(rng.choice(syll, size=int(rng.integers(1, 4)))) for _ in range(20000)})
    probs = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    probs /= probs.sum()
    words_per_doc = max(1, doc_bytes // 6)
    texts = []
    all_ids = rng.choice(len(vocab), size=(n_docs, words_per_doc), p=probs)
    with open(path, "w") as f:
        for row in all_ids:
            words = [vocab[i] for i in row]
            for j in range(0, len(words), 12):
                words[j] = words[j].capitalize()
                if j:
                    words[j - 1] += "."
            if rng.random() < 0.5:
                words.insert(len(words) // 2, str(int(rng.integers(0, 10000))))
            text = " ".join(words) + "."
            texts.append(text)
            f.write(json.dumps({"id": len(texts), "text": text}) + "\n")
    return texts


def tokenizer_only(kind: str, model: str, texts: list[str]) -> dict:
    from megatron_sicog.data.tokenizer import build_tokenizer

    tok = build_tokenizer("SentencePieceTokenizer" if kind == "sp" else "HuggingFaceTokenizer", model)
    out = {}
    for label, threads in (("1 thread", 1), ("default threads", None)):
        t0, c0 = time.perf_counter(), time.process_time()
        if kind == "sp":
            ids = tok.sp.encode(texts, num_threads=threads if threads else -1)
        else:  # encode_batch runs on Rust threads unless TOKENIZERS_PARALLELISM=false
            os.environ["TOKENIZERS_PARALLELISM"] = "false" if threads else "true"
            ids = tok.tokenize_batch(texts)  # encode_batch_fast
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[label] = {"docs_s": len(texts) / dt, "tokens_s": sum(map(len, ids)) / dt, "tokens": sum(map(len, ids)),
                      "cpu_docs_s": len(texts) / max(cpu, 1e-9)}
    return out


def _timed_run(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run a command; returns (result, wall seconds, CPU seconds of it and all its workers,
    peak RSS in MiB of its largest process, workers included: wait4's ru_maxrss)."""
    import tempfile

    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True, **kw)
        _, status, ru = os.wait4(proc.pid, 0)  # reaps it: Popen.wait would lose the rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    wall = time.perf_counter() - t0
    cpu = ru.ru_utime + ru.ru_stime
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), wall, cpu, ru.ru_maxrss / 1024


def run_ours(kind: str, model: str, corpus: Path, prefix: Path, workers: int) -> dict:
    cmd = [sys.executable, str(ROOT / "tools/preprocess_data.py"), "--input", str(corpus),
           "--tokenizer-type", "SentencePieceTokenizer" if kind == "sp" else "HuggingFaceTokenizer",
           "--tokenizer-model", model, "--output-prefix", str(prefix), "--workers", str(workers),
           "--no-progress", "--log-interval", "0"]
    p, wall, cpu, rss = _timed_run(cmd)
    if p.returncode:
        raise RuntimeError(f"ours failed:\n{p.stderr[-3000:]}")
    line = [x for x in p.stdout.splitlines() if x.startswith("preprocess_data:")][-1]
    docs = int(re.search(r"written (\d+)", line).group(1))
    tokens = int(re.search(r"tokens (\d+)", line).group(1))
    secs = float(re.search(r"MB written, ([\d.]+) s", line).group(1))
    return {"docs_s": docs / secs, "tokens_s": tokens / secs, "tokens": tokens, "wall": wall, "docs": docs,
            "cpu": cpu, "rss": rss}


def run_megatron(kind: str, model: str, corpus: Path, prefix: Path, workers: int, mlm: Path,
                 python: str, n_docs: int) -> dict:
    cmd = [python, str(mlm / "tools/preprocess_data.py"), "--input", str(corpus), "--json-keys", "text",
           "--tokenizer-type", "SentencePieceTokenizer" if kind == "sp" else "HuggingFaceTokenizer",
           "--tokenizer-model", model, "--append-eod", "--output-prefix", str(prefix),
           "--workers", str(workers), "--log-interval", str(n_docs)]
    p, wall, cpu, rss = _timed_run(cmd, cwd=str(mlm))
    if p.returncode:
        raise RuntimeError(f"Megatron-LM failed:\n{p.stderr[-3000:]}")
    m = re.findall(r"Processed (\d+) documents \(([\d.]+) docs/s", p.stderr)
    docs, rate = int(m[-1][0]), float(m[-1][1])
    nbytes = os.path.getsize(f"{prefix}_text_document.bin")
    tokens = nbytes // (2 if kind == "sp" or nbytes < 2**31 else 4)  # uint16 for vocab < 65500
    return {"docs_s": rate, "tokens_s": rate * tokens / docs, "tokens": tokens, "wall": wall, "docs": docs,
            "cpu": cpu, "rss": rss}


def profile(kind: str, model: str, corpus: Path, n: int = 5000) -> str:
    from megatron_sicog.data.preprocess import ConvertConfig, convert_chunk, input_chunks, prepare

    cfg = prepare(ConvertConfig("SentencePieceTokenizer" if kind == "sp" else "HuggingFaceTokenizer", model))
    chunks = []
    for c in input_chunks(corpus, 512):
        chunks.append(c)
        if len(chunks) * 512 >= n:
            break
    prof = cProfile.Profile()
    prof.enable()
    for c in chunks:
        convert_chunk(c)
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(8)
    return "\n".join(line for line in s.getvalue().splitlines() if line.strip())[:3000]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megatron-lm", default="/tmp/megatron-lm", help="Megatron-LM checkout (core_v0.16.1)")
    ap.add_argument("--megatron-python", default="/tmp/mlm-venv/bin/python",
                    help="python that can run Megatron-LM's tool (needs six, triton)")
    ap.add_argument("--docs", type=int, default=50000)
    ap.add_argument("--doc-bytes", type=int, default=1400)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--hf", action="store_true", help="also a HuggingFace fast tokenizer")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved repeats; best of each is reported")
    ap.add_argument("--work-dir", default="/tmp/preprocess_bench")
    ap.add_argument("--metric", choices=["cpu", "wall"], default="wall",
                    help="ratio from wall-clock docs/s (default) or docs per CPU-second (meaningful only "
                         "when the corpus is large enough that start-up CPU, ~10 s, is a small part)")
    args = ap.parse_args()

    from megatron_sicog.data.toy import make_hf_tokenizer
    from megatron_sicog.data.tokenizer import train_sentencepiece

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    t0 = time.time()
    texts = make_corpus(corpus, args.docs, args.doc_bytes, args.seed)
    print(f"corpus: {len(texts)} docs, {corpus.stat().st_size / 1e6:.1f} MB ({time.time() - t0:.1f} s)")
    train_texts = texts[: min(len(texts), 10000)]
    models = {"sp": str(train_sentencepiece(train_texts, work / "sp8k", args.vocab_size))}
    if args.hf:
        models["hf"] = str(make_hf_tokenizer(train_texts, work / "hf8k", args.vocab_size))
    tiny = work / "tiny.jsonl"
    with open(corpus) as src, open(tiny, "w") as dst:
        dst.writelines(line for _, line in zip(range(20), src))
    mlm = Path(args.megatron_lm)
    have_peer = (mlm / "tools/preprocess_data.py").is_file() and Path(args.megatron_python).exists()
    if not have_peer:
        print(f"Megatron-LM not found at {mlm} (or no {args.megatron_python}): peer skipped")

    ratio = None
    for kind, model in models.items():
        print(f"\n== {kind}: {model} (workers {args.workers}) ==")
        # start-up CPU (imports, tokenizer load) of each tool, measured on a 20-doc input
        base = {"ours": run_ours(kind, model, tiny, work / f"tiny_ours_{kind}", args.workers)["cpu"]}
        if have_peer:
            base["peer"] = run_megatron(kind, model, tiny, work / f"tiny_mlm_{kind}", args.workers, mlm,
                                        args.megatron_python, 20)["cpu"]
        # interleaved repeats (order reversed every other time), best of each: the machine
        # may be shared, and load comes and goes
        best: dict = {}
        for rep in range(args.repeat):
            runs = {"tok": lambda: tokenizer_only(kind, model, texts),
                    "ours": lambda: run_ours(kind, model, corpus, work / f"ours_{kind}", args.workers)}
            if have_peer:
                runs["peer"] = lambda: run_megatron(kind, model, corpus, work / f"mlm_{kind}", args.workers, mlm,
                                                    args.megatron_python, args.docs)
            order = list(runs.items()) if rep % 2 == 0 else list(runs.items())[::-1]
            for name, fn in order:
                r = fn()
                if name == "tok":
                    for label, v in r.items():
                        cpu_best = max(v["cpu_docs_s"], best.get(label, {}).get("cpu_docs_s", 0))
                        if v["docs_s"] > best.get(label, {"docs_s": 0})["docs_s"]:
                            best[label] = v
                        best[label]["cpu_docs_s"] = cpu_best
                else:
                    r["cpu_docs_s"] = r["docs"] / max(r["cpu"] - base[name], 1e-9)
                    if r["docs_s"] > best.get(name, {"docs_s": 0})["docs_s"]:
                        best[name] = {**r, "cpu_docs_s": max(r["cpu_docs_s"], best.get(name, {}).get("cpu_docs_s", 0))}
                    else:
                        best[name]["cpu_docs_s"] = max(best[name]["cpu_docs_s"], r["cpu_docs_s"])
                print(f"  repeat {rep + 1}: {name} done", flush=True)
        tok, ours = {k: best[k] for k in ("1 thread", "default threads")}, best["ours"]
        for label, r in tok.items():
            print(f"tokenizer only ({label}, 1 process): {r['docs_s']:,.0f} docs/s, {r['tokens_s']:,.0f} tokens/s; "
                  f"{r['cpu_docs_s']:,.0f} docs per CPU-second")
        print(f"ours:        {ours['docs_s']:,.0f} docs/s, {ours['tokens_s']:,.0f} tokens/s "
              f"(wall {ours['wall']:.1f} s incl. start-up); {ours['cpu_docs_s']:,.0f} docs per CPU-second "
              f"(all processes, start-up {base['ours']:.1f} CPU-s subtracted); peak RSS {ours['rss']:,.0f} MiB")
        print(f"ours / tokenizer-only (1 thread): {ours['docs_s'] / tok['1 thread']['docs_s']:.2f} docs/s (wall), "
              f"{ours['cpu_docs_s'] / tok['1 thread']['cpu_docs_s']:.2f} docs per CPU-second; "
              f"(default threads): {ours['docs_s'] / tok['default threads']['docs_s']:.2f} (wall)")
        if have_peer:
            peer = best["peer"]
            print(f"Megatron-LM: {peer['docs_s']:,.0f} docs/s, {peer['tokens_s']:,.0f} tokens/s "
                  f"(wall {peer['wall']:.1f} s incl. start-up); {peer['cpu_docs_s']:,.0f} docs per CPU-second "
                  f"(start-up {base['peer']:.1f} CPU-s subtracted); peak RSS {peer['rss']:,.0f} MiB")
            same = "equal" if peer["tokens"] == ours["tokens"] else f"DIFFER ({ours['tokens']} vs {peer['tokens']})"
            print(f"token counts ours vs Megatron-LM: {same}")
            r_wall = ours["docs_s"] / peer["docs_s"]
            r_cpu = ours["cpu_docs_s"] / peer["cpu_docs_s"]
            print(f"ours / Megatron-LM ({kind}): {r_wall:.2f}x docs/s (wall), {r_cpu:.2f}x docs per CPU-second")
            r = r_cpu if args.metric == "cpu" else r_wall
            if kind == "sp":
                ratio = r
        if args.profile:
            print(f"\nprofile of one worker converting 5,000 docs ({kind}), by own time:\n{profile(kind, model, corpus)}")
    print(peak_rss_line() + " (this process: corpus, tokenizer-only runs)")
    print(f"ratio: {ratio:.2f}" if ratio is not None else "ratio: nan")


if __name__ == "__main__":
    main()
