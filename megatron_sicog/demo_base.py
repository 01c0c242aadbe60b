"""The tiny demo's embedded pretrained base model: its recipe, its held-out figures and its export.

SICOG starts from a pretrained MLLM; training one is not part of the method. The demo ships a small one,
made by ``make base-model`` (``tools/make_base_model.py``) from a world of its own (``BASE_WORLD_SEED``):

    data       tools/make_synthetic_data.py  align (plain short captions) + eval (the base's held-out
               figures); the seed split's texts only train the tokenizer (never a model)
    tokenizer  tools/train_tokenizer.py      SentencePiece on align + seed texts (every word of the world)
    preprocess tools/preprocess_data.py      align -> mmap (plain template, LLaVA pre-training)
    base       pretrain_sicog.py --stage pretrain   alignment pre-training, ViT + projector + LM
    eval       tools/generate_candidates.py --mode caption + tools/evaluate.py on the base world's eval split
    export     model-only checkpoint (TP1/PP1, fp32), tokenizer.model, scene_keys.txt.gz, base_model.json

``scene_keys.txt.gz`` lists every scene of the base world; a demo world excludes them
(``make_synthetic_data.py --exclude-scenes``), so no seed, unlabelled or held-out image of any demo seed
was seen by the base. ``base_model.json`` records the command, the world's seed and sizes, the training
settings, the held-out figures, the parameter count and each file's size and sha256.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from megatron_sicog.io import atomic_write_json, iter_records, write_jsonl_atomic
from megatron_sicog.recipe import stages
from megatron_sicog.recipe.graph import Member, Stage, Step
from megatron_sicog.recipe.local import LocalRunner
from megatron_sicog.recipe.stages import TrainPhase, Tools

REPO = Path(__file__).resolve().parent.parent
BASE_WORLD_SEED = 20261203  # the base world's seed; demo worlds exclude its scenes whatever their seed
CARD = "base_model.json"
FILES = ("tokenizer.model", "scene_keys.txt.gz")


@dataclass
class BaseModelConfig:
    output_dir: str = "examples/tiny/base"  # what the demo reads (shipped in the repository)
    work_dir: str = "runs/base_model"  # data, logs and full checkpoints while it trains
    seed: int = BASE_WORLD_SEED
    model_preset: str = "tiny"
    num_align: int = 4000
    num_tokenizer_texts: int = 300  # seed-split images whose CoD / CoT texts train the tokenizer only
    num_eval: int = 300
    image_size: int = 64
    max_objects: int = 3
    tokenizer_vocab: int = 1000
    seq_length: int = 256
    # long enough that the base names every object's shape, colour and size on held-out images
    # (800 iterations, the old in-demo base, named about two shapes in three)
    train: TrainPhase = field(default_factory=lambda: TrainPhase(iters=3000, lr=5e-4, warmup=30))


def work_dir(c: BaseModelConfig) -> Path:
    """Where the base trains (data, logs, full checkpoints): ``work_dir``, relative to the repository."""
    return (REPO / c.work_dir).resolve() if not Path(c.work_dir).is_absolute() else Path(c.work_dir)


def graph(c: BaseModelConfig) -> list[Member]:
    from megatron_sicog.model.presets import PRESETS

    work = work_dir(c)
    data, tok = work / "data", work / "tokenizer" / "sp.model"
    t = Tools(out=work, image_root=str(data), tokenizer_model=str(tok), chat_template="qwen2",
              seq_length=c.seq_length, seed=c.seed, model_preset=c.model_preset,
              image_seq_length=PRESETS[c.model_preset].vision.num_image_tokens)
    plain = Tools(**{**asdict(t), "out": work, "chat_template": "plain"})
    g: list[Member] = [
        Stage("data", "tools/make_synthetic_data.py", tuple(map(str, (
            "--output-dir", data, "--seed", c.seed, "--image-size", c.image_size, "--max-objects", c.max_objects,
            "--num-align", c.num_align, "--num-seed", c.num_tokenizer_texts, "--num-unlabelled", 0,
            "--num-eval", c.num_eval))), outputs=(str(data),)),
        Stage("tokenizer", "tools/train_tokenizer.py", (
            "--input", str(data / "align.jsonl"), str(data / "seed.jsonl"), "--output-prefix",
            str(tok.with_suffix("")), "--vocab-size", str(c.tokenizer_vocab)),
            inputs=(str(data / "align.jsonl"), str(data / "seed.jsonl")), outputs=(str(tok),)),
    ]
    align = stages.preprocess(t, "align", [str(data / "align.jsonl")], "plain")
    base = stages.train(t, "base", "pretrain", c.train, [align.outputs[0]], None)
    inputs = str(work / "eval" / "inputs_caption.jsonl")
    g += [align, base, Step("eval_inputs", "megatron_sicog.demo_base:write_caption_inputs",
                            {"eval_file": str(data / "eval.jsonl"), "output": inputs},
                            inputs=(str(data / "eval.jsonl"),), outputs=(inputs,))]
    caps = stages.generate(plain, "eval_base_caption", base.outputs[0], inputs, "caption", 1, 0.0, 80, 32)
    preds, metrics = str(work / "eval" / "base.predictions.jsonl"), str(work / "eval" / "base.metrics.json")
    g += [caps, Step("predictions", "megatron_sicog.demo_base:write_caption_predictions",
                     {"captions": caps.outputs[0], "output": preds}, inputs=caps.outputs, outputs=(preds,)),
          Stage("score", "tools/evaluate.py", ("--predictions", preds, "--ground-truth", str(data / "eval.jsonl"),
                                               "--output", metrics), inputs=(preds,), outputs=(metrics,))]
    return g


def write_caption_inputs(eval_file: str, output: str) -> None:
    write_jsonl_atomic(Path(output), ({"id": r["id"], "image": r["image"]} for _, r in iter_records(eval_file)))


def write_caption_predictions(captions: str, output: str) -> None:
    write_jsonl_atomic(Path(output), ({"id": r["id"], "task": "caption", "prediction": (r.get("candidates") or [""])[0]}
                                      for _, r in iter_records(captions)))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export(c: BaseModelConfig, work: Path, command: str) -> dict:
    """Write the shipped directory: model-only checkpoint, tokenizer, the world's scene keys, the card."""
    from megatron_sicog.model.presets import parameter_count
    from megatron_sicog.synthetic.splits import scene_keys, write_scene_keys
    from megatron_sicog.training import checkpointing as ckpt

    out = (REPO / c.output_dir) if not Path(c.output_dir).is_absolute() else Path(c.output_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    full, args, meta = ckpt.load_canonical(work / "ckpt" / "base")
    ckpt.write_from_canonical(full, args, tmp, 1, 1, iteration=int(meta["iteration"]))
    shutil.copyfile(work / "tokenizer" / "sp.model", tmp / "tokenizer.model")
    write_scene_keys(tmp / "scene_keys.txt.gz", scene_keys(work / "data"))
    m = json.loads((work / "eval" / "base.metrics.json").read_text())["caption"]
    manifest = json.loads((work / "data" / "manifest.json").read_text())
    card = {
        "what": "the tiny demo's pretrained base model (ViT + projector + LM after alignment pre-training on "
                "plain short captions: colour, size, shape, background)",
        "command": command,
        "config": asdict(c),
        "world": {"seed": c.seed, "images": manifest["images"],
                  "trained_on": "align.jsonl only (the seed split's texts trained the tokenizer, eval is held out)"},
        "iteration": int(meta["iteration"]),
        "parameters": parameter_count(args)["total"],
        "held_out_plain_caption": {"n": m["n"], "f1": round(m["f1"], 4), "precision": round(m["precision"], 4),
                                   "recall_by_kind": {k: round(v, 4) for k, v in m["recall_by_kind"].items()}},
        "files": {},
    }
    for p in sorted(q for q in tmp.rglob("*") if q.is_file()):
        card["files"][str(p.relative_to(tmp))] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    atomic_write_json(tmp / CARD, card)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return card


def main(argv=None) -> dict:
    import argparse

    p = argparse.ArgumentParser(description="Train and export the tiny demo's pretrained base model "
                                            "(make base-model; resumable, about 20 minutes on 2 CPU cores).")
    d = BaseModelConfig()
    p.add_argument("--output-dir", default=d.output_dir)
    p.add_argument("--work-dir", default=d.work_dir)
    p.add_argument("--iters", type=int, default=d.train.iters)
    p.add_argument("--num-align", type=int, default=d.num_align)
    a = p.parse_args(argv)
    c = BaseModelConfig(output_dir=a.output_dir, work_dir=a.work_dir, num_align=a.num_align)
    c.train.iters = a.iters
    work = work_dir(c)
    runner = LocalRunner(work)
    runner.run_all(graph(c))
    card = export(c, work, " ".join(["python", "tools/make_base_model.py", *(argv if argv is not None else sys.argv[1:])]))
    f = card["held_out_plain_caption"]
    print(f"base model -> {c.output_dir}: {card['parameters']:,} parameters, iteration {card['iteration']}, "
          f"held-out plain-caption F1 {f['f1']:.3f} (object {f['recall_by_kind'].get('object', 0):.2f}, colour "
          f"{f['recall_by_kind'].get('colour', 0):.2f}, size {f['recall_by_kind'].get('size', 0):.2f}) in "
          f"{sum(runner.timings.values()):.0f}s")
    return card
