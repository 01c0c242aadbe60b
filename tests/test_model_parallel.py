"""TP=2 and PP=2 (1F1B, several micro-batches) equal TP=1 from the same full weights.

Each case launches tests/dist_model_worker.py on 2 gloo processes (NCCL on a
GPU machine with 2 GPUs) and compares the loss and every gathered gradient.
"""
import pytest
import torch

from tests.helpers import REPO, torchrun

WORKER = REPO / "tests" / "dist_model_worker.py"


def _compare(out):
    d = torch.load(out, weights_only=False)
    assert d["ref_sd"].keys() == d["sd"].keys()
    for k in d["ref_sd"]:
        torch.testing.assert_close(d["sd"][k], d["ref_sd"][k], rtol=0, atol=0, msg=k)
    rel = abs(d["loss"] - d["ref_loss"]) / abs(d["ref_loss"])
    assert rel < 1e-5, (d["loss"], d["ref_loss"])
    assert d["ref_grads"].keys() == d["grads"].keys()
    assert len(d["grads"]) > 60  # every parameter of vision, projector and LM
    for k, ref in d["ref_grads"].items():
        assert ref.abs().max() > 0, f"{k} has no gradient in the reference"
        err = (d["grads"][k] - ref).abs().max() / ref.abs().max()
        assert err < 1e-5, f"{k}: relative gradient error {err:.2e}"
    return d


def test_tensor_parallel_2_equals_tp1(tmp_path):
    torchrun(WORKER, "--tp", "2", "--out", str(tmp_path / "tp2.pt"))
    _compare(tmp_path / "tp2.pt")


def test_pipeline_parallel_2_1f1b_equals_pp1(tmp_path):
    torchrun(WORKER, "--pp", "2", "--micro-batches", "3", "--out", str(tmp_path / "pp2.pt"))
    _compare(tmp_path / "pp2.pt")


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)])
def test_tiled_images_tp2_and_pp2_equal_tp1(tmp_path, tp, pp):
    """Batches whose rows hold images of different grids (LLaVA-NeXT tiling): same loss and gradients,
    image_newline's among them."""
    out = tmp_path / f"tiled_tp{tp}_pp{pp}.pt"
    torchrun(WORKER, "--tp", str(tp), "--pp", str(pp), "--micro-batches", "3", "--tiled", "--out", str(out))
    d = _compare(out)
    assert "image_newline" in d["ref_grads"]
