"""Tiled images through the model: our LLaVA-NeXT computes what transformers' does, and converts back exactly.

A tiny random ``LlavaNextForConditionalGeneration`` (CLIP + Qwen2 and SigLIP + Qwen2, 32 px tiles,
LLaVA-NeXT's five grids) is built from a config, imported at TP=1, and run on one batch from the
batch builder (`model.batch.collate` with `data.tiling`) whose two rows hold images of
different aspect ratios (so different grids and image-token counts): the logits equal
transformers' (fp32, eager) on every real position, and the image positions carry no loss.
Exported back, every HF tensor and the pinpoints are identical; ``verify`` passes on three
non-square aspect ratios and fails on a copy with one weight perturbed; a processor whose tile
(``crop_size``, transformers' rule) is not the tower's size is refused at import.
"""
import runpy
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conversion_helpers import IMAGE_TOKEN, PINPOINTS, VOCAB, make_hf_llava_next
from tests.helpers import REPO

SIZES = [(40, 117), (150, 47), (61, 83)]  # (height, width): grids 1x3, 3x1, 2x2


def _tool():
    return SimpleNamespace(**runpy.run_path(str(REPO / "tools" / "convert_checkpoint.py"), run_name="convert_tool"))


@pytest.fixture(scope="module", params=["qwen2", "siglip"], ids=["clip", "siglip"])
def converted(request, tmp_path_factory):
    """(directory, model) of a tiny random LLaVA-NeXT: CLIP + Qwen2, or SigLIP + Qwen2 (its processor's tile is
    ``crop_size`` with no centre crop, as transformers reads it)."""
    d = tmp_path_factory.mktemp(f"anyres_{request.param}")
    hf = make_hf_llava_next(request.param, d / "hf")
    return d, hf


def _samples(rng):
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    def text(n):
        return list(rng.integers(10, VOCAB, n))
    rows = [text(3) + [IMAGE_TOKEN] + text(6), text(2) + [IMAGE_TOKEN] + text(4) + [IMAGE_TOKEN] + text(3)]
    out = []
    for tokens, images in zip(rows, ([imgs[0]], imgs[1:])):
        tokens = np.asarray(tokens, dtype=np.int64)
        out.append({"tokens": tokens, "loss_mask": (tokens != IMAGE_TOKEN).astype(np.float32), "images": images})
    return out


def _hf_logits(hf, batch, tiling):
    """transformers' logits of a tiled Batch (its views regrouped per image, zero-padded as the processor does)."""
    views = list(batch.images.split([tiling.num_views(h, w) for h, w in batch.image_sizes.tolist()]))
    most = max(v.shape[0] for v in views)
    padded = torch.stack([torch.cat([v, v.new_zeros(most - v.shape[0], *v.shape[1:])]) for v in views])
    with torch.no_grad():
        return hf(input_ids=batch.input_ids, pixel_values=padded, image_sizes=batch.image_sizes).logits.float()


def _real_lengths(batch):
    """Positions of each row before its padding (pad id 0; the samples' ids are never 0)."""
    return (batch.input_ids != 0).sum(1).tolist()


def test_tiled_batch_logits_equal_llava_next_and_round_trip(mcore, converted, tmp_path):
    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.conversion.hf_import import import_hf
    from megatron_sicog.data.tiling import tiling_for
    from megatron_sicog.model.batch import collate
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.training.checkpointing import load_model_weights, model_args_from_dict, read_meta

    d, hf = converted
    ckpt = import_hf(tmp_path / "ckpt", 1, 1, hf_path=d / "hf", progress=False)
    args = model_args_from_dict(read_meta(ckpt)["model_args"])
    assert args.vision.image_grid_pinpoints == PINPOINTS and args.vision.use_thumbnail
    tiling = tiling_for(args.vision)
    assert [tiling.grid(h, w) for h, w in SIZES] == [(1, 3), (3, 1), (2, 2)]
    counts = [tiling.num_tokens(h, w) for h, w in SIZES]
    assert len(set(counts)) == 3

    batch = collate(_samples(np.random.default_rng(0)), seq_length=400, image_token_id=IMAGE_TOKEN,
                    num_image_tokens=args.vision.num_image_tokens, pad_id=0, tiling=tiling)
    assert batch.image_sizes.tolist() == [list(s) for s in SIZES]
    assert batch.images.shape[0] == sum(tiling.num_views(h, w) for h, w in SIZES)
    is_img = batch.input_ids == IMAGE_TOKEN
    assert is_img.sum(1).tolist() == [counts[0], counts[1] + counts[2]]
    assert not (batch.loss_mask.bool() & (batch.labels == IMAGE_TOKEN)).any()
    n_real = [3 + counts[0] + 6, 2 + counts[1] + 4 + counts[2] + 3]  # expanded rows, then padding
    assert batch.loss_mask.sum(1).tolist() == [3 + 6 - 1.0, 2 + 4 + 3 - 1.0]  # text targets only

    model = build_model(args).eval()
    load_model_weights(model, ckpt)
    with torch.no_grad():
        ours = model(batch.input_ids, batch.position_ids, batch.attention_mask, images=batch.images,
                     image_sizes=batch.image_sizes, runtime_gather_output=True)[..., :VOCAB].float()
    ref = _hf_logits(hf, batch, tiling)
    assert _real_lengths(batch) == n_real
    for row, n in enumerate(n_real):
        diff = (ours[row, :n] - ref[row, :n]).abs().max().item()
        assert diff < 1e-4, (row, diff)

    out = export_hf(ckpt, tmp_path / "exported", progress=False)
    from transformers import LlavaNextForConditionalGeneration

    back = LlavaNextForConditionalGeneration.from_pretrained(str(out))
    assert back.config.image_grid_pinpoints == PINPOINTS
    sd0, sd1 = hf.state_dict(), back.state_dict()
    assert sd0.keys() == sd1.keys()
    assert [k for k in sd0 if not torch.equal(sd0[k], sd1[k])] == []


def test_verify_passes_on_three_aspect_ratios_and_fails_perturbed(mcore, converted, tmp_path, capsys):
    from megatron_sicog.conversion.hf_import import import_hf

    d, _ = converted
    ckpt = import_hf(tmp_path / "ckpt", 1, 1, hf_path=d / "hf", progress=False)
    tool = _tool()
    verify = ["verify", "--load", str(ckpt), "--max-new-tokens", "3", "--prompt", "w11 w12 w13"]
    report = tool.main(verify + ["--hf-path", str(d / "hf")])
    text = capsys.readouterr().out
    assert "OK" in text.splitlines()[-1] and len(report.cases) == 3, text
    assert report.max_logit_diff < 1e-4 and report.max_pixel_diff == 0.0

    bad = tmp_path / "perturbed"
    shutil.copytree(d / "hf", bad)
    shard = sorted(bad.glob("*.safetensors"))[0]
    tensors = load_file(str(shard))
    name = next(k for k in tensors if k.endswith("image_newline"))
    tensors[name][0] += 0.5
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(SystemExit) as e:
        tool.main(verify + ["--hf-path", str(bad)])
    assert e.value.code == 1
    assert "FAILED" in capsys.readouterr().out.splitlines()[-1]


def test_tp2_and_pp2_conversion_logits_equal_and_round_trip_is_exact(mcore, converted, tmp_path):
    from transformers import LlavaNextForConditionalGeneration

    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.conversion.hf_import import import_hf
    from megatron_sicog.data.tiling import tiling_for
    from megatron_sicog.model.batch import collate
    from megatron_sicog.training.checkpointing import model_args_from_dict, read_meta
    from tests.helpers import torchrun

    d, hf = converted
    cases = [(f"tp{tp}_pp{pp}", import_hf(tmp_path / f"tp{tp}_pp{pp}", tp, pp, hf_path=d / "hf", progress=False),
              tp, pp) for tp, pp in ((2, 1), (1, 2))]
    args = model_args_from_dict(read_meta(cases[0][1])["model_args"])
    tiling = tiling_for(args.vision)
    batch = collate(_samples(np.random.default_rng(1)), seq_length=400, image_token_id=IMAGE_TOKEN,
                    num_image_tokens=args.vision.num_image_tokens, pad_id=0, tiling=tiling)
    torch.save({"ids": batch.input_ids, "images": batch.images, "image_sizes": batch.image_sizes},
               tmp_path / "inputs.pt")
    (tmp_path / "logits").mkdir()
    torchrun(REPO / "tests" / "dist_conversion_worker.py", "--inputs", str(tmp_path / "inputs.pt"), "--out-dir",
             str(tmp_path / "logits"), *[f"{name}={ckpt}:{tp}:{pp}" for name, ckpt, tp, pp in cases])
    ref = _hf_logits(hf, batch, tiling)
    for name, ckpt, tp, pp in cases:
        out = torch.load(tmp_path / "logits" / f"{name}.pt")
        for row, n in enumerate(_real_lengths(batch)):
            diff = (out[row, :n] - ref[row, :n]).abs().max().item()
            assert diff < 1e-4, (name, row, diff)
        back = LlavaNextForConditionalGeneration.from_pretrained(str(export_hf(ckpt, tmp_path / f"back_{name}",
                                                                               progress=False)))
        sd0, sd1 = hf.state_dict(), back.state_dict()
        assert sd0.keys() == sd1.keys()
        assert [k for k in sd0 if not torch.equal(sd0[k], sd1[k])] == [], name


def test_import_refuses_a_processor_whose_tiles_are_not_the_towers(mcore, converted, tmp_path):
    """Without ``crop_size`` the LLaVA-NeXT processor cuts its class default (224 px) tiles: the converter names
    the file instead of recording pixels that transformers would not make."""
    import json

    from megatron_sicog.conversion.hf_import import ConversionError, import_hf

    d, _ = converted
    bad = tmp_path / "hf"
    shutil.copytree(d / "hf", bad)
    f = bad / "preprocessor_config.json"
    cfg = json.loads(f.read_text())
    cfg.pop("crop_size")
    f.write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="preprocessor_config.json.*224"):
        import_hf(tmp_path / "ckpt", 1, 1, hf_path=bad, progress=False)
