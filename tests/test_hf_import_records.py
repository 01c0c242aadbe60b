"""hf-to-megatron keeps what the HF directory preprocesses and speaks with: its image processor and chat template.

A tiny random SigLIP LLaVA directory gets a ``preprocessor_config.json`` that
differs from the family default (bilinear, other mean/std) and the real
Qwen2.5-Instruct ``chat_template`` in ``tokenizer_config.json``. After the
import, the checkpoint's images (`data.image_processing.for_vision`) are the
HF processor's pixels, ``meta.json`` names the ``qwen2.5`` template (what the
inference tools default to), and the export writes the same processor back.
"""
import json

import numpy as np
import pytest
import torch

from megatron_sicog.conversion.hf_mapping import ConversionError
from megatron_sicog.guards import UsageError
from megatron_sicog.training.checkpointing import checkpoint_chat_template
from tests.conversion_helpers import make_hf_llava
from tests.test_hf_chat_templates import QWEN25_TEMPLATE

PRE = {"image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": 32, "width": 32},
       "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
       "image_mean": [0.4, 0.45, 0.5], "image_std": [0.2, 0.25, 0.3], "processor_class": "LlavaProcessor"}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf_siglip")
    make_hf_llava("siglip", d)
    (d / "preprocessor_config.json").write_text(json.dumps(PRE))
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": QWEN25_TEMPLATE}))
    return d


def test_import_records_processor_and_template_and_export_writes_them_back(hf_dir, tmp_path):
    from transformers import AutoImageProcessor

    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.conversion.hf_import import import_hf
    from megatron_sicog.data.image_processing import for_vision
    from megatron_sicog.training.checkpointing import model_args_from_dict, read_meta

    ckpt = import_hf(tmp_path / "ckpt", hf_path=hf_dir, progress=False)
    meta = read_meta(ckpt)
    assert meta["chat_template"] == "qwen2.5" and meta["hf"]["chat_template"] == QWEN25_TEMPLATE
    assert checkpoint_chat_template(None, meta) == "qwen2.5"
    assert checkpoint_chat_template("qwen2", meta) == "qwen2"
    args = model_args_from_dict(meta["model_args"])
    ours = for_vision(args.vision)
    assert ours.resample == 2 and ours.image_mean == (0.4, 0.45, 0.5)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((20, 70), (64, 31), (32, 32))]
    hf = AutoImageProcessor.from_pretrained(str(hf_dir))
    want = torch.stack([torch.as_tensor(np.asarray(x)) for x in hf(images=images)["pixel_values"]])
    assert torch.equal(ours(images), want)  # the HF directory's pixels, bit for bit

    out = export_hf(ckpt, tmp_path / "hf_out", progress=False)
    assert json.loads((out / "preprocessor_config.json").read_text()) == PRE  # copied, and it says the same
    back = AutoImageProcessor.from_pretrained(str(out))
    assert torch.equal(torch.stack([torch.as_tensor(np.asarray(x)) for x in back(images=images)["pixel_values"]]),
                       want)


def test_unreproducible_processor_is_refused_before_writing(hf_dir, tmp_path):
    import shutil

    from megatron_sicog.conversion.hf_import import import_hf

    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    (bad / "preprocessor_config.json").write_text(json.dumps({**PRE, "size": {"height": 48, "width": 48}}))
    with pytest.raises(ConversionError, match="preprocessor_config.json: .*48x48 pixels.*image_size is 32"):
        import_hf(tmp_path / "ckpt", hf_path=bad, progress=False)
    assert not (tmp_path / "ckpt").exists() and not list(tmp_path.glob(".ckpt.tmp-*"))


def test_unmatched_template_needs_the_flag(caplog):
    meta = {"hf": {"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}}
    with pytest.raises(UsageError, match="give --chat-template"):
        checkpoint_chat_template(None, meta)
    assert checkpoint_chat_template("llama3", meta) == "llama3"
    assert checkpoint_chat_template(None, {}) == "qwen2"  # a checkpoint of the project's own, no record
    assert not caplog.records  # nothing recorded to disagree with


def test_a_flag_other_than_the_recorded_template_wins_with_a_warning(caplog):
    meta = {"chat_template": "qwen2.5"}
    assert checkpoint_chat_template("qwen2.5", meta, "CKPT") == "qwen2.5" and not caplog.records
    assert checkpoint_chat_template("llama3", meta, "CKPT") == "llama3"
    (rec,) = caplog.records
    assert rec.levelname == "WARNING" and "--chat-template llama3 differs" in rec.getMessage()
    assert "CKPT records ('qwen2.5'" in rec.getMessage()


def test_llava_image_aspect_ratio_travels_from_config_to_export(tmp_path):
    """config.json image_aspect_ratio "pad" (LLaVA-1.5): the checkpoint's pixels are LLaVA-1.5's
    (expand2square with the mean colour, then the CLIP processor) and the export's LlavaImageProcessor gives
    them too; a value the project does not reproduce is refused before writing; the argument wins."""
    from transformers import AutoImageProcessor

    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.conversion.hf_import import import_hf
    from megatron_sicog.data.image_processing import _hf_class, for_vision
    from megatron_sicog.training.checkpointing import model_args_from_dict, read_meta
    from tests.test_image_processing import _hf_pixels, _llava15_pixels

    hf = tmp_path / "hf"
    make_hf_llava("llama", hf)  # CLIP tower, 32 px, no preprocessor_config.json: the family's processor
    cfg = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**cfg, "image_aspect_ratio": "pad"}))
    ckpt = import_hf(tmp_path / "ckpt", hf_path=hf, progress=False)
    vision = model_args_from_dict(read_meta(ckpt)["model_args"]).vision
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((20, 70), (64, 31), (32, 32))]
    clip = _hf_class("clip")(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    want = _llava15_pixels(clip, images, "pad")
    assert torch.equal(for_vision(vision)(images), want)
    out = export_hf(ckpt, tmp_path / "out", progress=False)
    back = AutoImageProcessor.from_pretrained(str(out))
    assert type(back).__name__.startswith("LlavaImageProcessor") and torch.equal(_hf_pixels(back, images), want)

    (hf / "config.json").write_text(json.dumps({**cfg, "image_aspect_ratio": "anyres"}))
    with pytest.raises(ConversionError, match="image_aspect_ratio='anyres'"):
        import_hf(tmp_path / "ckpt2", hf_path=hf, progress=False)
    assert not (tmp_path / "ckpt2").exists()
    ckpt = import_hf(tmp_path / "ckpt3", hf_path=hf, progress=False, image_aspect_ratio="resize")
    vision = model_args_from_dict(read_meta(ckpt)["model_args"]).vision
    assert torch.equal(for_vision(vision)(images), _llava15_pixels(clip, images, "resize"))
