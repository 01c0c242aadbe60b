"""Every Hugging Face family the converter takes runs through the project's tools after the import.

For each tiny random LLaVA of ``tests.conversion_helpers.FAMILIES`` (CLIP + Qwen2, CLIP + tied Llama,
CLIP + Llama-3.1 ``llama3`` RoPE, SigLIP + tied Qwen2.5-style), built from configs (no downloads):

- ``hf-to-megatron`` (`import_hf`), then the project's engine greedily generates what transformers'
  ``generate`` gives on the source directory (float64 both sides, prompts run past the llama3 family's
  ``original_max_position_embeddings``);
- one training step of the trainer (SFT on ``--mock-data``, vision tower trained too, the imported
  directory's tokenizer) moves the weights and saves; its save keeps the imported
  ``hf_extra.safetensors`` (the tower's ``post_layernorm``, SigLIP's pooling head: tensors the megatron
  model does not hold) and ``meta.json`` ``hf``;
- ``megatron-to-hf`` of the trained checkpoint writes those tensors exactly as the source had them (and the
  source's token ids in ``config.json``), and ``verify`` passes between the trained checkpoint and its export.

TP/PP of these families: tests/test_conversion_verify.py (TP=2/PP=2 import, export, verify).
"""
import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conversion_helpers import EOS_TOKEN, FAMILIES, IMAGE_TOKEN, VOCAB, make_hf_llava

TRAIN = ["--stage", "sft", "--mock-data", "--micro-batch-size", "2", "--global-batch-size", "2",
         "--seq-length", "48", "--lr", "1e-2", "--lr-warmup-iters", "0", "--train-iters", "1",
         "--log-interval", "1", "--seed", "3"]


def _hf_tensors(d) -> dict:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _engine_equals_hf_generate(ckpt, hf_model, seed: int) -> None:
    from megatron_sicog.generation.engine import Engine, Prompt, expand_prompt
    from megatron_sicog.generation.sampling import GREEDY
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.training.checkpointing import load_model_weights, model_args_from_dict, read_meta

    args = model_args_from_dict(read_meta(ckpt)["model_args"])
    model = build_model(args).eval()
    load_model_weights(model, ckpt)
    model = model.to(torch.float64)
    hf = hf_model.to(torch.float64)
    g = torch.Generator().manual_seed(seed)
    prompts = []
    for i, n in enumerate([3, 9]):
        t = torch.randint(10, VOCAB, (n,), generator=g).tolist()
        t = t[:1] + [IMAGE_TOKEN] + t[1:]
        prompts.append(Prompt(t, torch.randn(1, 3, 32, 32, generator=g, dtype=torch.float64), key=str(i)))
    T = 12  # 16 image tokens + prompt + 12 new: past the llama3 family's original_max_position_embeddings (16)
    ours = Engine(model).generate(prompts, GREEDY, max_new_tokens=T, min_new_tokens=T)
    for p, (cand,) in zip(prompts, ours.tokens):
        ids = torch.tensor([expand_prompt(p.tokens, IMAGE_TOKEN, model.num_image_tokens)])
        with torch.inference_mode():
            gen = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=p.images,
                              do_sample=False, max_new_tokens=T, min_new_tokens=T, eos_token_id=None,
                              pad_token_id=EOS_TOKEN)
        assert cand == gen[0, ids.shape[1]:].tolist(), p.key


@pytest.mark.parametrize("family", list(FAMILIES))
def test_imported_family_generates_trains_and_exports_exactly(mcore, family, tmp_path):
    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.conversion.hf_import import import_hf
    from megatron_sicog.conversion.hf_mapping import HF_EXTRA, POST_LN, SIGLIP_HEAD, hf_only_shapes
    from megatron_sicog.conversion.verify import verify
    from megatron_sicog.training.arguments import parse_args
    from megatron_sicog.training.checkpointing import load_canonical, model_args_from_dict, read_meta
    from megatron_sicog.training.trainer import Trainer

    src = tmp_path / "hf"
    hf_model = make_hf_llava(family, src, seed=11)
    imported = import_hf(tmp_path / "imported", hf_path=src, progress=False)
    _engine_equals_hf_generate(imported, hf_model, seed=1)

    args = model_args_from_dict(read_meta(imported)["model_args"])
    source = _hf_tensors(src)
    extra_names = sorted(n for n in hf_only_shapes(args) if n in source)
    assert set(POST_LN) <= set(extra_names)
    assert any(n.startswith(SIGLIP_HEAD) for n in extra_names) == (family == "siglip")

    trained = tmp_path / "trained"
    t = Trainer(parse_args([*TRAIN, "--pretrained-checkpoint", str(imported), "--save", str(trained),
                            "--tokenizer-type", "HuggingFaceTokenizer",
                            "--tokenizer-model", str(imported / "tokenizer")]))
    assert t.train() == 0
    assert (trained / HF_EXTRA).is_file()
    meta = read_meta(trained)
    assert meta["iteration"] == 1 and meta["hf"] == read_meta(imported)["hf"]
    before, _, _ = load_canonical(imported)
    after, _, _ = load_canonical(trained)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("vision.") for k in moved) and any(k.startswith("language_model.") for k in moved)

    out = export_hf(trained, tmp_path / "exported", progress=False)
    exported = _hf_tensors(out)
    for name in extra_names:  # not held by the megatron model: the source's, bit for bit
        assert torch.equal(exported[name], source[name]), name
    assert set(exported) == set(source)
    cfg = json.loads((out / "config.json").read_text())
    src_cfg = json.loads((src / "config.json").read_text())
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert cfg["text_config"].get(k) == src_cfg["text_config"].get(k), k
    if family == "siglip":
        assert cfg["vision_config"]["vision_use_head"] is True
    assert (out / "tokenizer.json").is_file()
    report = verify(trained, out)
    assert report.ok(1e-4), "\n".join(report.lines(1e-4))


def test_a_save_drops_the_extras_of_another_tower(tmp_path):
    """carry_hf_extra (what every trainer save calls with the checkpoint its vision tower came from: --load,
    else --pretrained-vision-checkpoint, else --pretrained-checkpoint) copies that checkpoint's file, keeps
    its own on a resume into itself, and removes a stale file when the tower's checkpoint has none (the
    export then writes a fresh tower's ones / zeros, not another tower's post_layernorm)."""
    from megatron_sicog.conversion.hf_mapping import HF_EXTRA
    from megatron_sicog.training.checkpointing import carry_hf_extra

    a, b, save = tmp_path / "a", tmp_path / "b", tmp_path / "save"
    for d in (a, b, save):
        d.mkdir()
    (a / HF_EXTRA).write_bytes(b"tensors of a")
    assert carry_hf_extra(save, a).read_bytes() == b"tensors of a"
    assert carry_hf_extra(save, save).read_bytes() == b"tensors of a"  # resumed into itself: kept
    assert carry_hf_extra(save, b) is None and not (save / HF_EXTRA).exists()
    assert carry_hf_extra(save, None) is None
