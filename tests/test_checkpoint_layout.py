"""Checkpoint layout: any TP/PP written from the canonical form merges back to it exactly."""
import pytest
import torch

from megatron_sicog.model import sharding
from megatron_sicog.model.presets import PRESETS
from megatron_sicog.training import checkpointing as ckpt


@pytest.fixture(scope="module")
def canonical(mcore):
    from megatron_sicog.model.llava import build_model

    args = PRESETS["tiny"].replace()
    args.language.vocab_size = 1000
    mcore.set_seed(3)
    m = build_model(args)
    return args, sharding.gather_full_state_dict(m, args.language.vocab_size), m


@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_write_and_merge_roundtrip(tmp_path, canonical, tp, pp):
    args, full, _ = canonical
    out = ckpt.write_from_canonical(full, args, tmp_path, tp, pp, iteration=7)
    assert out.name == "iter_0000007" and ckpt.read_tracker(tmp_path) == 7
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(names) == tp * pp
    merged, args2, meta = ckpt.load_canonical(tmp_path)
    assert args2 == args and meta["tensor_model_parallel_size"] == tp
    assert merged.keys() == full.keys()
    for k in full:
        assert torch.equal(merged[k], full[k]), k
    assert not list(tmp_path.glob(".iter_*"))  # no temp directory left behind


def test_load_model_weights_reshards(tmp_path, canonical, mcore):
    from megatron_sicog.model.llava import build_model

    args, full, ref = canonical
    ckpt.write_from_canonical(full, args, tmp_path, 2, 2)
    mcore.set_seed(99)
    m = build_model(args)
    ckpt.load_model_weights(m, tmp_path)
    got = sharding.gather_full_state_dict(m, args.language.vocab_size)
    assert got.keys() == full.keys()
    for k in full:
        assert torch.equal(got[k], full[k]), k


def test_missing_tracker_is_a_clear_error(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="not a checkpoint directory"):
        ckpt.load_canonical(tmp_path)


def test_load_vision_weights_only(tmp_path, canonical, mcore):
    """A separately pretrained vision tower (any TP/PP) replaces the encoder and nothing else."""
    from megatron_sicog.model.llava import build_model

    args, full, _ = canonical
    ckpt.write_from_canonical(full, args, tmp_path, 2, 1)
    mcore.set_seed(99)
    m = build_model(args)
    before = sharding.gather_full_state_dict(m, args.language.vocab_size)
    ckpt.load_vision_weights(m, tmp_path)
    got = sharding.gather_full_state_dict(m, args.language.vocab_size)
    vision = [k for k in full if k.startswith("vision.")]
    assert vision and len(vision) < len(full)
    for k in full:
        want = full[k] if k.startswith("vision.") else before[k]
        assert torch.equal(got[k], want), k
    assert not torch.equal(before[vision[0]], full[vision[0]])  # the load changed something


def test_load_vision_weights_refuses_another_shape(tmp_path, canonical, mcore):
    from megatron_sicog.model.llava import build_model

    args, full, _ = canonical
    ckpt.write_from_canonical(full, args, tmp_path, 1, 1)
    other = args.replace()
    other.vision.num_layers = args.vision.num_layers + 1
    with pytest.raises(ValueError, match="num_layers: 2 in the checkpoint, 3 here"):
        ckpt.load_vision_weights(build_model(other), tmp_path)
