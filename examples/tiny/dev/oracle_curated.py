#!/usr/bin/env python
"""The oracle "curated" set of a demo world: the true CoD of every unlabelled image and the true CoT of
every unlabelled question, in curated.jsonl's LLaVA form (development only: an upper bound on what
self-labels can give at a re-pretraining budget; never part of the loop).

    python examples/tiny/dev/oracle_curated.py runs/tiny runs/tiny/gen/oracle.jsonl

The world is sampled again from its manifest (seed, sizes, questions per image, max objects, seed
colours, the base's excluded scenes) and checked against its unlabelled files, id by id.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
from megatron_sicog import prompts
from megatron_sicog.io import iter_records, write_jsonl_atomic
from megatron_sicog.synthetic.splits import read_scene_keys, sample_splits
from megatron_sicog.synthetic.text import cod_text


def oracle_records(run: Path):
    m = json.loads((run / "data" / "manifest.json").read_text())
    exclude = read_scene_keys(REPO / "examples/tiny/base/scene_keys.txt.gz") if m.get("excluded_scenes") else ()
    splits = sample_splits(m["images"], m["seed"], m["questions_per_image"], m["max_objects"], exclude=exclude,
                           seed_colours=m.get("seed_colours"), image_size=m["image_size"])
    images = {r["id"]: r["image"] for _, r in iter_records(run / "data" / "unlabelled_images.jsonl")}
    assert [it.id for it in splits["unlabelled"]] == list(images), "the world does not sample back"
    for it in splits["unlabelled"]:
        assert images[it.id] == it.image
        yield {"id": it.id, "image": it.image, "task": "caption", "conversations": [
            {"from": "human", "value": prompts.build_prompt("cod")}, {"from": "gpt", "value": cod_text(it.scene)}]}
        for k, q in enumerate(it.questions):
            yield {"id": it.qid(k), "image": it.image, "task": "reasoning", "conversations": [
                {"from": "human", "value": prompts.build_prompt("cot", q.question)}, {"from": "gpt", "value": q.cot}]}


if __name__ == "__main__":
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    print(write_jsonl_atomic(out, oracle_records(run)), "records ->", out)
