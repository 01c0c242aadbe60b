"""The megatron-core internals `megatron_sicog.mcore_compat` relies on still exist (version 0.16.x)."""
import numpy as np
import pytest
import torch


def test_version_is_the_checked_line():
    import megatron.core
    from megatron_sicog import mcore_compat

    checked = mcore_compat.CHECKED_VERSION.rsplit(".", 1)[0]
    if not megatron.core.__version__.startswith(checked):
        pytest.skip(f"megatron-core {megatron.core.__version__}: internals checked against {checked}.x")


def test_private_names_exist():
    from megatron.core.models.common.embeddings import rope_utils
    from megatron.core.optimizer import clip_grads, optimizer
    from megatron.core.tensor_parallel import random as mcore_random

    assert callable(rope_utils._rotate_half)
    assert hasattr(mcore_random, "_CUDA_RNG_STATE_TRACKER")
    assert hasattr(mcore_random, "_CUDA_RNG_STATE_TRACKER_INITIALIZED")
    assert callable(clip_grads.clip_grad_by_total_norm_fp32)
    assert callable(optimizer.clip_grad_by_total_norm_fp32)
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    assert callable(RotaryEmbedding._apply_scaling)


def test_rotate_half_matches_the_formula():
    from megatron_sicog.mcore_compat import rotate_half

    x = torch.arange(8.0).reshape(1, 8)
    assert torch.equal(rotate_half(x, False), torch.cat([-x[:, 4:], x[:, :4]], dim=-1))


def test_builder_append_equals_add_item(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from megatron_sicog.mcore_compat import builder_append_documents

    docs = [[np.array([1, 2, 3], np.int32), np.array([4], np.int32)], [np.array([5, 6], np.int32)]]
    a = IndexedDatasetBuilder(str(tmp_path / "a.bin"), dtype=np.int32, multimodal=True)
    for d in docs:
        for item in d:
            a.add_item(torch.from_numpy(item), 0)
        a.end_document()
    a.finalize(str(tmp_path / "a.idx"))
    b = IndexedDatasetBuilder(str(tmp_path / "b.bin"), dtype=np.int32, multimodal=True)
    flat = np.concatenate([i for d in docs for i in d])
    builder_append_documents(b, flat, [len(i) for d in docs for i in d], [0, 0, 0], [len(d) for d in docs])
    b.finalize(str(tmp_path / "b.idx"))
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    assert (tmp_path / "a.idx").read_bytes() == (tmp_path / "b.idx").read_bytes()


def test_index_file_dtype_reads_what_the_builder_wrote(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from megatron_sicog.mcore_compat import index_file_dtype

    for dtype in (np.uint16, np.int32):
        b = IndexedDatasetBuilder(str(tmp_path / "x.bin"), dtype=dtype)
        b.add_item(torch.tensor([1, 2, 3]))
        b.end_document()
        b.finalize(str(tmp_path / "x.idx"))
        assert index_file_dtype(str(tmp_path / "x.idx")) == dtype
    (tmp_path / "bad.idx").write_bytes(b"not an index file at all")
    with pytest.raises(ValueError, match="not a megatron index file"):
        index_file_dtype(str(tmp_path / "bad.idx"))


def test_layer_norm_keys_map_names_both_norms():
    from megatron_sicog.mcore_compat import layer_norm_keys_map

    m = layer_norm_keys_map()
    assert m["input_layernorm."] == "self_attention.linear_qkv.layer_norm_"
    assert m["pre_mlp_layernorm."] == "mlp.linear_fc1.layer_norm_"
