"""Qwen2.5 configs (Qwen2 architecture): what converts and what is refused, naming field and value."""
import pytest

from megatron_sicog.conversion.hf_mapping import ConversionError, language_args_from_hf


def _qwen25(**over):
    """A tiny Qwen2.5-style text config as transformers writes it (Qwen2.5-7B-Instruct's window fields)."""
    from transformers import Qwen2Config

    kw = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=True,
              use_sliding_window=False, sliding_window=131072, max_window_layers=2,
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    kw.update(over)
    return Qwen2Config(**kw).to_dict()


def test_qwen25_config_converts():
    lm = language_args_from_hf(_qwen25())
    assert lm.family == "qwen2" and lm.add_qkv_bias and not lm.untie_embeddings_and_output_weights
    assert (lm.num_layers, lm.num_query_groups, lm.rotary_base) == (4, 2, 1000000.0)


@pytest.mark.parametrize("over, match", [
    (dict(use_sliding_window=True, sliding_window=16, max_window_layers=2),
     r"use_sliding_window=True with max_window_layers=2 and sliding_window=16 \(num_hidden_layers 4\)"),
    (dict(use_sliding_window=True, sliding_window=16, max_window_layers=0), r"max_window_layers=0"),
])
def test_sliding_window_refused(over, match):
    with pytest.raises(ConversionError, match=match):
        language_args_from_hf(_qwen25(**over))


def test_layer_types_refused():
    cfg = _qwen25()
    cfg["layer_types"] = ["full_attention", "sliding_attention", "full_attention", "full_attention"]
    with pytest.raises(ConversionError, match=r"layer_types\[1\]='sliding_attention'"):
        language_args_from_hf(cfg)


def test_window_reaching_no_layer_converts():
    # max_window_layers >= num_hidden_layers: transformers gives every layer full attention
    cfg = _qwen25(use_sliding_window=True, sliding_window=16, max_window_layers=4)
    assert set(cfg.get("layer_types") or ["full_attention"]) == {"full_attention"}
    assert language_args_from_hf(cfg).num_layers == 4
