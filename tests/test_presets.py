"""Parameter counts of the model presets: `parameter_count` against the models themselves.

tiny: the megatron-core model this project builds (padded vocabulary rows taken off). The real shapes
(LLaVA-1.5-7B, LLaVA-Qwen2-7B, LLaVA-Llama-3.1-8B with CLIP-L/336, Qwen2-7B + SigLIP-so400m):
transformers' ``LlavaForConditionalGeneration`` of the exported config, built on the meta device (no
weights), whose count is ours plus the tower's unused post_layernorm.
"""
import os
import subprocess
import sys

import pytest
import torch

from megatron_sicog.model.presets import PRESETS, padded_vocab_size, parameter_count
from tests.helpers import REPO

REAL = ["llama-7b-clip-l336", "qwen2-7b-clip-l336", "llama3.1-8b-clip-l336", "qwen2-7b-siglip-so400m"]


def test_tiny_count_is_the_built_models(mcore):
    from megatron_sicog.model.llava import build_model

    m = PRESETS["tiny"]
    model = build_model(m)
    lm = m.language
    pad = padded_vocab_size(lm.vocab_size, lm.make_vocab_size_divisible_by, 1) - lm.vocab_size
    n_vocab_mats = 2 if lm.untie_embeddings_and_output_weights else 1
    built = sum(p.numel() for p in model.parameters()) - pad * lm.hidden_size * n_vocab_mats
    c = parameter_count(m)
    assert built == c["total"]
    assert sum(p.numel() for p in model.vision.parameters()) == c["vision"]
    assert sum(p.numel() for p in model.projector.parameters()) == c["projector"]


def test_tiny_siglip_count_is_the_built_models(mcore):
    from megatron_sicog.model.llava import build_model

    m = PRESETS["tiny"].replace()
    m.vision.family, m.vision.class_token, m.vision.feature_select = "siglip", False, "full"
    m.vision.activation = "gelu_pytorch_tanh"
    model = build_model(m)
    assert model.vision.patch_embed.bias is not None and model.vision.pre_layernorm is None
    assert sum(p.numel() for p in model.vision.parameters()) == parameter_count(m)["vision"]
    assert model.num_image_tokens == m.vision.num_patches


@pytest.mark.parametrize("name", REAL)
def test_real_preset_count_equals_transformers_on_meta_device(name):
    from transformers import LlavaForConditionalGeneration

    from megatron_sicog.conversion.hf_mapping import hf_only_shapes, llava_config_from_model_args

    m = PRESETS[name]
    cfg = llava_config_from_model_args(m)
    with torch.device("meta"):
        hf = LlavaForConditionalGeneration(cfg)
    n_hf = sum(p.numel() for p in hf.parameters())
    unused = sum(torch.Size(s).numel() for k, s in hf_only_shapes(m).items() if "post_layernorm" in k)
    assert n_hf == parameter_count(m)["total"] + unused
    assert sum(p.numel() for p in hf.model.vision_tower.parameters()) == parameter_count(m)["vision"] + unused


def test_known_sizes_and_the_printing_command():
    c = {n: parameter_count(PRESETS[n]) for n in REAL}
    assert c["llama3.1-8b-clip-l336"]["language"] == 8_030_261_248  # Llama-3.1-8B's published count
    assert c["llama-7b-clip-l336"]["language"] == 6_738_415_616  # Llama-2-7B / Vicuna-7B
    assert PRESETS["qwen2-7b-siglip-so400m"].vision.num_image_tokens == 729  # 27 x 27 patches, all kept
    out = subprocess.run([sys.executable, "-m", "megatron_sicog.model.presets"], cwd=REPO, check=True,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO))).stdout
    for n in REAL:
        line = next(ln for ln in out.splitlines() if ln.startswith(n + " "))
        assert f"{c[n]['total']:,}" in line
