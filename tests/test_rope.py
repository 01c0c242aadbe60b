"""Llama-3.x RoPE scaling: what megatron-core 0.16 computes, what transformers computes, and what we build.

megatron-core's ``GPTModel(rope_scaling=True, rope_scaling_factor=f)`` scales the
inverse frequencies with Llama-3.1's fixed low/high frequency factors (1, 4) and
original context (8192); only the factor comes from the caller. For Llama-3.1's
own numbers that equals transformers' ``llama3`` RoPE; for any other numbers
(Llama-3.2 uses factor 32; tiny test models a short original context) it does
not, and `set_llama3_rope` recomputes them with the checkpoint's numbers.
Logits past ``original_max_position_embeddings`` are in tests/test_conversion.py
(family ``llama3``: a 40-token input against an original context of 16).
"""
import pytest
import torch


def _hf_inv_freq(theta, head_dim, **rope):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, max_position_embeddings=131072,
                      rope_parameters={"rope_type": "llama3", "rope_theta": theta, **rope})
    inv, scale = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    assert scale == 1.0
    return inv


def _gpt_inv_freq(mcore, lm):
    from megatron_sicog.model.llava import SicogModel
    from megatron_sicog.model.presets import ModelArgs

    model = SicogModel(ModelArgs(language=lm))
    return model.language_model.rotary_pos_emb.inv_freq


LLAMA31 = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
LLAMA32 = dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
TINY = dict(factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16)


def test_megatron_core_alone_is_right_only_for_llama31_numbers(mcore):
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    hf31 = _hf_inv_freq(500000.0, 128, **LLAMA31)
    mc31 = RotaryEmbedding(128, 1.0, rotary_base=500000, rope_scaling=True, rope_scaling_factor=8.0,
                           use_cpu_initialization=True).inv_freq
    assert torch.allclose(mc31, hf31, rtol=1e-6, atol=0)
    for numbers in (TINY,):
        hf = _hf_inv_freq(5000.0, 8, **numbers)
        mc = RotaryEmbedding(8, 1.0, rotary_base=5000, rope_scaling=True, rope_scaling_factor=numbers["factor"],
                             use_cpu_initialization=True).inv_freq
        assert not torch.allclose(mc, hf, rtol=1e-3), "megatron-core now takes all llama3 parameters"


@pytest.mark.parametrize("numbers,theta,head_dim", [(LLAMA31, 500000.0, 128), (LLAMA32, 500000.0, 64),
                                                    (TINY, 5000.0, 8)])
def test_our_model_has_transformers_llama3_frequencies(mcore, numbers, theta, head_dim):
    from megatron_sicog.model.presets import LanguageArgs

    lm = LanguageArgs(family="llama", num_layers=1, hidden_size=head_dim * 4, num_attention_heads=4,
                      num_query_groups=4, ffn_hidden_size=64, vocab_size=64, rotary_base=theta, add_qkv_bias=False,
                      rope_type="llama3", rope_scaling_factor=numbers["factor"],
                      rope_low_freq_factor=numbers["low_freq_factor"], rope_high_freq_factor=numbers["high_freq_factor"],
                      rope_original_max_position_embeddings=numbers["original_max_position_embeddings"])
    ours = _gpt_inv_freq(mcore, lm)
    hf = _hf_inv_freq(theta, head_dim, **numbers)
    assert torch.allclose(ours, hf, rtol=1e-6, atol=0), (ours, hf)
    # the tiny case has both scaled bands: smoothed (wavelength 2*pi between 4 and 16) and divided by factor
    if numbers is TINY:
        from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
        plain = RotaryEmbedding(head_dim, 1.0, rotary_base=int(theta), use_cpu_initialization=True).inv_freq
        ratio = plain / ours
        assert torch.isclose(ratio, torch.tensor(4.0)).sum() == 3 and 1.01 < ratio[0] < 3.99, ratio


def test_unsupported_rope_type_names_field_and_value():
    from megatron_sicog.conversion.hf_mapping import ConversionError, language_args_from_hf
    from megatron_sicog.model.presets import LanguageArgs, ModelArgs, validate

    cfg = dict(model_type="llama", hidden_size=32, num_attention_heads=4, num_key_value_heads=4,
               intermediate_size=64, num_hidden_layers=1, vocab_size=64, max_position_embeddings=64,
               rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(ConversionError, match=r"rope_scaling\.rope_type 'dynamic' is not supported"):
        language_args_from_hf(cfg)
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0}
    with pytest.raises(ConversionError, match="lacks low_freq_factor, high_freq_factor, "
                                              "original_max_position_embeddings"):
        language_args_from_hf(cfg)
    cfg["rope_scaling"] = {"rope_type": "llama3", **LLAMA31}  # the transformers-4 config.json spelling
    lm = language_args_from_hf(cfg)
    assert (lm.rope_type, lm.rope_scaling_factor, lm.rope_original_max_position_embeddings) == ("llama3", 8.0, 8192)
    with pytest.raises(ValueError, match="rope type 'ntk' not supported"):
        validate(ModelArgs(language=LanguageArgs(rope_type="ntk")))
