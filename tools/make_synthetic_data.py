#!/usr/bin/env python
"""Write the synthetic shapes world of the tiny SICOG demo.

    python tools/make_synthetic_data.py --output-dir runs/data --seed 1234
        --num-align 2000 --num-seed 300 --num-unlabelled 1000 --num-eval 200 --image-size 64

Outputs (under --output-dir): images/*.png, align.jsonl, seed.jsonl,
unlabelled_images.jsonl, unlabelled_questions.jsonl, unlabelled_answers.jsonl
(held back: training never reads it), eval.jsonl, scene_graphs.jsonl and
manifest.json (--preview adds preview.png).

The defaults (align 2000, seed 300, unlabelled 1000, eval 200 images; 2 / 1 / 2
questions per seed / unlabelled / eval image) keep the whole tiny demo within
~15 minutes on 2 CPU cores; `megatron_sicog.synthetic.splits` explains each
split and the sizes. The same --seed and sizes give byte-identical files.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from megatron_sicog.synthetic.vocab import COLOURS, SHAPES
from megatron_sicog.synthetic.splits import DEFAULT_SIZES, QUESTIONS_PER_IMAGE, read_scene_keys, write_splits


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", required=True, help="folder to write (created if missing)")
    p.add_argument("--seed", type=int, default=1234, help="random seed (all splits derive from it)")
    p.add_argument("--image-size", type=int, default=64, help="square image side in pixels")
    p.add_argument("--max-objects", type=int, default=3, help="main objects per image: 1..this")
    for split, n in DEFAULT_SIZES.items():
        p.add_argument(f"--num-{split}", type=int, default=n, help=f"images in the {split} split")
    for split in ("seed", "unlabelled", "eval"):
        p.add_argument(f"--{split}-questions-per-image", type=int, default=QUESTIONS_PER_IMAGE[split],
                       help=f"questions per {split} image (distinct types, where they apply)")
    p.add_argument("--exclude-scenes", default=None, metavar="FILE",
                   help="scene keys (one per line, .gz allowed) no image of this world may have: the scenes "
                        "the embedded base model was trained on")
    p.add_argument("--seed-colours", default=None, metavar="C1,C2,...",
                   help="narrow the seed split to these object colours (default: all of "
                        f"{','.join(COLOURS)}); the unlabelled pool and held-out set keep every colour")
    p.add_argument("--preview", action="store_true",
                   help="also draw preview.png: eval images with their caption and a QA pair")
    args = p.parse_args(argv)
    if args.image_size < 24:
        p.error(f"--image-size must be >= 24 (got {args.image_size})")
    if args.exclude_scenes and not Path(args.exclude_scenes).is_file():
        p.error(f"--exclude-scenes {args.exclude_scenes}: no such file")
    if not 1 <= args.max_objects <= len(SHAPES):
        p.error(f"--max-objects must be in 1..{len(SHAPES)} (got {args.max_objects})")
    if args.seed_colours is not None:
        args.seed_colours = [c.strip() for c in args.seed_colours.split(",") if c.strip()]
        bad = [c for c in args.seed_colours if c not in COLOURS]
        if bad or not args.seed_colours:
            p.error(f"--seed-colours: {','.join(bad) or 'empty'} not among {','.join(COLOURS)}")
    for split in DEFAULT_SIZES:
        if getattr(args, f"num_{split}") < 0:
            p.error(f"--num-{split} must be >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    sizes = {s: getattr(args, f"num_{s}") for s in DEFAULT_SIZES}
    qpi = {s: getattr(args, f"{s}_questions_per_image") for s in ("seed", "unlabelled", "eval")}
    exclude = read_scene_keys(args.exclude_scenes) if args.exclude_scenes else ()
    manifest = write_splits(args.output_dir, sizes, args.seed, args.image_size, qpi, args.max_objects, exclude,
                            seed_colours=args.seed_colours)
    if args.preview:
        from megatron_sicog.synthetic.preview import save_preview

        save_preview(args.output_dir, Path(args.output_dir) / "preview.png")
    imgs = manifest["images"]
    print(
        f"synthetic data: {sum(imgs.values())} images "
        + " ".join(f"{k}={v}" for k, v in imgs.items())
        + f", {manifest['records']['seed.jsonl']} seed records, cod tokens mean "
        f"{manifest['response_tokens']['cod'].get('mean')} -> {args.output_dir} in {time.time() - t0:.1f}s"
    )
    return manifest


if __name__ == "__main__":
    main()
