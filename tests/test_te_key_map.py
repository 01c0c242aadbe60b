"""Local <-> Transformer Engine checkpoint names (megatron-core's sharded_state_dict_keys_map)."""
import torch

from megatron_sicog.model import sharding
from megatron_sicog.training import checkpointing as ckpt

LOCAL = {
    "language_model.decoder.layers.0.input_layernorm.weight": torch.ones(4),
    "language_model.decoder.layers.0.self_attention.linear_qkv.weight": torch.randn(12, 4),
    "language_model.decoder.layers.0.pre_mlp_layernorm.weight": torch.full((4,), 2.0),
    "language_model.decoder.layers.0.mlp.linear_fc1.weight": torch.randn(8, 4),
    "language_model.decoder.final_layernorm.weight": torch.ones(4),
    "vision.decoder.layers.0.input_layernorm.bias": torch.zeros(4),
}


class _FakeTEModel(torch.nn.Module):
    """Only its state-dict keys matter: TE names plus _extra_state entries."""

    def __init__(self, keys):
        super().__init__()
        self._keys = keys

    def state_dict(self, *a, **k):
        return {k: (b"te-extra" if k.endswith("_extra_state") else torch.zeros(1)) for k in self._keys}


def test_local_te_round_trip_on_a_state_dict():
    te = {sharding.te_key(k): v for k, v in LOCAL.items()}
    assert "language_model.decoder.layers.0.self_attention.linear_qkv.layer_norm_weight" in te
    assert "language_model.decoder.layers.0.mlp.linear_fc1.layer_norm_weight" in te
    assert "vision.decoder.layers.0.self_attention.linear_qkv.layer_norm_bias" in te
    assert "language_model.decoder.final_layernorm.weight" in te  # a separate norm in both specs
    assert sharding.implementation_of(te) == "transformer_engine" and sharding.implementation_of(LOCAL) == "local"
    te["language_model.decoder.layers.0.self_attention.linear_qkv._extra_state"] = b"fp8 meta"
    back = sharding.canonical_names(te)
    assert back.keys() == LOCAL.keys() and all(back[k] is LOCAL[k] for k in LOCAL)


def test_state_dict_for_maps_into_either_model():
    te_keys = [sharding.te_key(k) for k in LOCAL] + ["language_model.decoder.layers.0.mlp.linear_fc1._extra_state"]
    into_te = sharding.state_dict_for(_FakeTEModel(te_keys), LOCAL)
    assert list(into_te) == te_keys and into_te[te_keys[-1]] == b"te-extra"
    assert into_te["language_model.decoder.layers.0.mlp.linear_fc1.layer_norm_weight"] is LOCAL[
        "language_model.decoder.layers.0.pre_mlp_layernorm.weight"]
    into_local = sharding.state_dict_for(_FakeTEModel(list(LOCAL)), into_te)
    assert into_local.keys() == LOCAL.keys() and all(into_local[k] is LOCAL[k] for k in LOCAL)


def test_te_checkpoint_loads_into_a_local_model(tmp_path):
    """A checkpoint whose rank file holds TE names (as a GPU run writes) loads into the local-spec model."""
    from megatron_sicog import runtime
    from megatron_sicog.model.llava import SicogModel
    from megatron_sicog.model.presets import PRESETS

    runtime.init_distributed(1, 1, seed=0)
    args = PRESETS["tiny"].replace(transformer_impl="local")
    src = SicogModel(args)
    te_state = {sharding.te_key(k): v for k, v in src.state_dict().items()}
    te_state["language_model.decoder.layers.0.self_attention.linear_qkv._extra_state"] = None
    ckpt.save_rank_file(tmp_path, 3, 0, 0, 1, {"model": te_state, "partition": sharding.partition_info(src),
                                                "layer_offset": 0, "iteration": 3})
    ckpt.finalize_iteration(tmp_path, 3, ckpt.build_meta(args, 1, 1, 3, transformer_impl="transformer_engine"))
    assert ckpt.read_meta(tmp_path)["transformer_impl"] == "transformer_engine"
    torch.manual_seed(1)
    dst = SicogModel(args)
    assert any(not torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items()
               if isinstance(v, torch.Tensor))
    ckpt.load_model_weights(dst, tmp_path)
    for k, v in src.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(dst.state_dict()[k], v), k
    full, _, _ = ckpt.load_canonical(tmp_path)
    assert sharding.implementation_of(full) == "local" and not any(k.endswith("_extra_state") for k in full)


def test_resharding_reads_memory_mapped_and_only_the_keys_asked_for(tmp_path, monkeypatch):
    from megatron_sicog import runtime
    from megatron_sicog.model.llava import SicogModel
    from megatron_sicog.model.presets import PRESETS

    runtime.init_distributed(1, 1, seed=0)
    args = PRESETS["tiny"].replace(transformer_impl="local")
    src = SicogModel(args)
    ckpt.write_from_canonical({k: v for k, v in src.state_dict().items() if isinstance(v, torch.Tensor)
                               and not k.endswith("_extra_state")}, args, tmp_path, tp=2, pp=1)
    calls = []
    real = ckpt.torch_load
    monkeypatch.setattr(ckpt, "torch_load", lambda path, **kw: calls.append(kw) or real(path, **kw))
    want = {"language_model.embedding.word_embeddings.weight", "language_model.decoder.final_layernorm.weight"}
    full, _, _ = ckpt.load_canonical(tmp_path, keys=want)
    assert set(full) == want and calls == [{"mmap": True}, {"mmap": True}]
    dst = SicogModel(args)
    ckpt.load_model_weights(dst, tmp_path)  # TP=2 checkpoint into this TP=1 model
    for k, v in src.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(dst.state_dict()[k], v), k
