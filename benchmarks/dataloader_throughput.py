#!/usr/bin/env python
"""Data-loader throughput: samples/s from the mmap dataset incl. image decode + preprocess.

Generates --records seeded LLaVA records with --source-size JPEG images,
converts them with tools/preprocess_data.py twice (default: source bytes;
``--image-size S``: raw SxS pixels), then times a full pass of
``ResumableDataLoader`` over ``build_train_valid_datasets`` (``--num-workers``
DataLoader workers) where each micro-batch is also run through
the CLIP processor at S (`data.image_processing`) -> the [n, 3, S, S] tensor the vision encoder eats.

Peer, same run, same workers and batch: the usual LLaVA-style on-the-fly loader
that keeps the JSON records in memory and, per sample, opens the image file,
applies the chat template with the tokenizer, then the same preprocess.

Last line: ``ratio: R`` = mmap dataset (default storage) samples/s / on-the-fly samples/s.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
from rss import peak_rss_line  # noqa: E402  benchmarks/rss.py: the script's folder is on sys.path

from megatron_sicog.data.chat_template import encode_conversation  # noqa: E402
from megatron_sicog.data.image import load_image  # noqa: E402
from megatron_sicog.data.image_processing import ImageProcessing  # noqa: E402
from megatron_sicog.data.sampler import ResumableDataLoader  # noqa: E402
from megatron_sicog.data.tokenizer import build_tokenizer  # noqa: E402


def make_corpus(work: Path, n: int, size: int, seed: int) -> tuple[Path, Path]:
    """Records with one smooth-ish JPEG each (noise compresses unrealistically badly)."""
    from PIL import Image

    from megatron_sicog.data.toy import toy_texts

    rng = np.random.default_rng(seed)
    root = work / "images"
    root.mkdir(parents=True, exist_ok=True)
    texts = toy_texts(2 * n, seed=seed, min_words=20, max_words=120)
    yy, xx = np.mgrid[0:size, 0:size] / size
    with open(work / "records.jsonl", "w") as f:
        for i in range(n):
            a, b, c = rng.random(3) * 6
            img = np.stack([np.sin(a * xx + b * yy), np.cos(b * xx * yy + c), np.sin(c * yy - a * xx)], -1)
            img = ((img + 1) * 127.5 + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"{i}.jpg", quality=90)
            conv = [{"from": "human", "value": "<image>\n" + texts[2 * i]}, {"from": "gpt", "value": texts[2 * i + 1]}]
            f.write(json.dumps({"id": i, "image": f"{i}.jpg", "conversations": conv}) + "\n")
    return work / "records.jsonl", root


class OnTheFlyDataset(torch.utils.data.Dataset):
    """The peer: JSON records in memory, image file + tokenizer per sample."""

    def __init__(self, records_path: Path, image_root: Path, tokenizer_model: str, template: str):
        self.records = [json.loads(line) for line in open(records_path)]
        self.root = image_root
        self.model = tokenizer_model
        self.template = template
        self.tok = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        if self.tok is None:
            self.tok = build_tokenizer("SentencePieceTokenizer", self.model)
        rec = self.records[i]
        ids, mask = encode_conversation(self.tok, rec["conversations"], self.template)
        image = np.asarray(load_image(self.root / rec["image"]), dtype=np.uint8)
        return {"tokens": np.asarray(ids, dtype=np.int64), "loss_mask": np.asarray(mask, dtype=np.uint8),
                "images": [image], "segment_ids": np.ones(len(ids), dtype=np.int32)}


def time_pass(dataset, n: int, batch: int, workers: int, image_size: int) -> float:
    """samples/s of one pass over n samples, incl. the image preprocess of each batch."""
    loader = ResumableDataLoader(dataset, micro_batch_size=batch, num_workers=workers)
    processing = ImageProcessing.family_default("clip", image_size)
    t0 = time.perf_counter()
    done = 0
    while done + batch <= n:
        samples = next(loader)
        pixels = processing([im for s in samples for im in s["images"]])
        assert pixels.shape[1:] == (3, image_size, image_size)
        done += batch
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--source-size", type=int, default=384, help="side of the source JPEGs")
    ap.add_argument("--image-size", type=int, default=224, help="vision encoder input side")
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved repeats; best of each is reported")
    ap.add_argument("--work-dir", default="/tmp/dataloader_bench")
    args = ap.parse_args()

    from megatron_sicog.data.dataset import build_train_valid_datasets
    from megatron_sicog.data.toy import make_sentencepiece, toy_texts

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    records, root = make_corpus(work, args.records, args.source_size, args.seed)
    model = str(make_sentencepiece(toy_texts(3000, seed=args.seed), work / "sp", 1000))
    variants = {"source bytes": [],
                f"--image-size {args.image_size}": ["--image-processor", "clip", "--image-size", str(args.image_size)]}
    datasets = {}
    for name, extra in variants.items():
        prefix = work / ("ds_" + ("src" if not extra else "px"))
        subprocess.run([sys.executable, str(ROOT / "tools/preprocess_data.py"), "--input", str(records),
                        "--image-root", str(root), "--tokenizer-type", "SentencePieceTokenizer",
                        "--tokenizer-model", model, "--output-prefix", str(prefix), "--workers", "2",
                        "--no-progress", *extra], check=True, capture_output=True)
        size_mb = (prefix.with_suffix(".bin")).stat().st_size / 1e6
        train, _ = build_train_valid_datasets(str(prefix), 4096, args.seed, args.records, 0, split="100,0")
        datasets[f"mmap dataset ({name}, {size_mb:.1f} MB .bin)"] = train
    peer_name = "on-the-fly JSON + image files + tokenizer"
    datasets[peer_name] = OnTheFlyDataset(records, root, model, "qwen2")
    rates = {name: 0.0 for name in datasets}
    for _ in range(args.repeat):  # interleaved, best of each: the machine may be shared
        for name, ds in datasets.items():
            rates[name] = max(rates[name], time_pass(ds, args.records, args.micro_batch_size,
                                                     args.num_workers, args.image_size))
    for name, rate in rates.items():
        print(f"{name}: {rate:,.1f} samples/s")
    print(f"(micro-batch {args.micro_batch_size}, {args.num_workers} DataLoader workers, "
          f"{args.source_size}px JPEG -> {args.image_size}px, CLIP-normalised)")
    ours = next(iter(rates.values()))  # the default storage (source bytes)
    print(peak_rss_line())
    print(f"ratio: {ours / rates[peer_name]:.2f}")


if __name__ == "__main__":
    main()
