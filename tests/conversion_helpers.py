"""Tiny random Hugging Face LLaVA models built from configs (no downloads) and a shared text+image input.

Used by tests/test_conversion*.py and tests/dist_conversion_worker.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

VOCAB = 100  # not a multiple of 128 * TP: exercises vocab padding
IMAGE_TOKEN = 5
EOS_TOKEN = 2
FAMILIES = {
    # Qwen2: QKV bias, grouped-query attention (6 heads, 2 kv heads), untied, quick_gelu CLIP, layer -2
    "qwen2": dict(text=dict(model_type="qwen2", hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-6,
                            rope_theta=1000000.0, tie_word_embeddings=False),
                  vision=dict(hidden_act="quick_gelu"), feature_layer=-2),
    # Llama: no bias, GQA (4 heads, 2 kv heads), tied embeddings, gelu CLIP, last layer
    "llama": dict(text=dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                            rope_theta=5000.0, tie_word_embeddings=True),
                  vision=dict(hidden_act="gelu"), feature_layer=-1),
    # Llama-3.1 style: llama3 RoPE scaling with original_max_position_embeddings 16, so the 40-token sample
    # runs past it; of the head's 4 frequencies one is smoothed and three are divided by the factor
    "llama3": dict(text=dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                             rope_theta=5000.0, tie_word_embeddings=False,
                             rope=dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                       original_max_position_embeddings=16)),
                   vision=dict(hidden_act="quick_gelu"), feature_layer=-2),
    # SigLIP + Qwen2.5 style (LLaVA-OneVision): no class token, patch bias, gelu_pytorch_tanh, pooling head
    # (unused by LLaVA), all 16 patch features ("full") of the last layer before post_layernorm; Qwen2 with
    # tied embeddings (Qwen2.5 small sizes) and use_sliding_window False
    "siglip": dict(text=dict(model_type="qwen2", hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                             num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-6,
                             rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False),
                   vision=dict(hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6), feature_layer=-1,
                   vision_family="siglip", strategy="full"),
}


def llava_config(family: str):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, Qwen2Config, SiglipVisionConfig

    spec = FAMILIES[family]
    text = dict(spec["text"])
    cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[text.pop("model_type")]
    rope = {"rope_type": "default", **text.pop("rope", {}), "rope_theta": text.pop("rope_theta")}
    tc = cls(vocab_size=VOCAB, max_position_embeddings=256, rope_parameters=rope, **text)
    vcls = {"clip": CLIPVisionConfig, "siglip": SiglipVisionConfig}[spec.get("vision_family", "clip")]
    vc = vcls(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
              image_size=32, patch_size=8, **{"layer_norm_eps": 1e-5, **spec["vision"]})
    return LlavaConfig(vision_config=vc, text_config=tc, image_token_index=IMAGE_TOKEN,
                       vision_feature_layer=spec["feature_layer"], image_seq_length=16,
                       vision_feature_select_strategy=spec.get("strategy", "default"),
                       tie_word_embeddings=tc.tie_word_embeddings)


def randomize_(model, seed: int = 0) -> None:
    """Every parameter random (norms around 1, biases non-zero), so any misplaced element shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.05 * noise)


def write_tokenizer(path: Path) -> None:
    """A tiny word-level tokenizer.json (<image> = IMAGE_TOKEN, </s> = EOS_TOKEN) and tokenizer_config.json."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {f"w{i}": i for i in range(VOCAB)}
    for i, special in ((IMAGE_TOKEN, "<image>"), (EOS_TOKEN, "</s>")):
        vocab.pop(f"w{i}")
        vocab[special] = i
    tok = Tokenizer(WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens(["<image>", "</s>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                            "unk_token": "w0", "eos_token": "</s>"}) + "\n")


def make_hf_llava(family: str, path: Path, seed: int = 0):
    """Build, randomize and save a tiny LLaVA (fp32) with a tokenizer; returns the model (eager attention)."""
    from transformers import LlavaForConditionalGeneration

    cfg = llava_config(family)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    randomize_(model, seed)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    model.save_pretrained(str(path))
    write_tokenizer(path)
    return model


def sample_inputs(seed: int = 0, image_size: int = 32, num_patches: int = 16):
    """input_ids [2, 40] with one image (num_patches tokens) per row at different places, and 2 images."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (2, 40), generator=g)
    ids[0, 3:3 + num_patches] = IMAGE_TOKEN
    ids[1, 10:10 + num_patches] = IMAGE_TOKEN
    images = torch.randn(2, 3, image_size, image_size, generator=g)
    return ids, images


def causal_mask(b: int, s: int) -> torch.Tensor:
    return torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)[None, None].expand(b, 1, s, s)


def hf_logits(model, ids, images) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=images).logits.float()


def megatron_logits(model, ids, images, vocab: int = VOCAB) -> torch.Tensor:
    """Single-stage forward (TP any, PP=1): logits for the true vocabulary."""
    model.eval()
    with torch.no_grad():
        pos = torch.arange(ids.shape[1]).expand_as(ids)
        out = model(ids, pos, causal_mask(*ids.shape), images=images, runtime_gather_output=True)
    return out[..., :vocab].float()


PINPOINTS = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]  # LLaVA-NeXT's default grids at 32 px tiles


def make_hf_llava_next(family: str, path: Path, seed: int = 0):
    """A tiny random LLaVA-NeXT (the `family`'s towers, 32 px tiles, ``PINPOINTS``) saved with a tokenizer and
    its ``LlavaNextImageProcessor`` config; returns the model (eager attention)."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    from megatron_sicog.data.tiling import llava_next_processor_class

    base = llava_config(family).to_dict()
    base.pop("model_type", None)
    base.pop("architectures", None)
    cfg = LlavaNextConfig(**{k: base[k] for k in ("vision_config", "text_config", "image_token_index",
                                                   "vision_feature_layer", "vision_feature_select_strategy",
                                                   "tie_word_embeddings")},
                          image_grid_pinpoints=PINPOINTS)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(cfg).eval()
    randomize_(model, seed)
    model.save_pretrained(str(path))
    write_tokenizer(path)
    size = cfg.vision_config.image_size
    proc = llava_next_processor_class()(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                        image_grid_pinpoints=PINPOINTS)
    if family == "siglip":  # SigLIP's pixels; the tile LlavaNextImageProcessor cuts is crop_size, even uncropped
        proc = llava_next_processor_class()(size={"height": size, "width": size}, do_center_crop=False,
                                            crop_size={"height": size, "width": size},
                                            image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                            image_grid_pinpoints=PINPOINTS)
    proc.save_pretrained(str(path))
    return model
