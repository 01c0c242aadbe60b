"""The GPU path's decisions, tested on any machine: loud TE / CUDA problems."""
import logging

import pytest
import torch

from megatron_sicog import runtime
from megatron_sicog.model import config as model_config
from megatron_sicog.model.presets import PRESETS

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="GPU present: checks the message of a machine without CUDA")


@needs_no_cuda
def test_allocated_gpus_without_cuda_are_reported():
    msg = runtime.gpu_allocation_problem({"SLURM_JOB_GPUS": "0,1"})
    assert "SLURM_JOB_GPUS=0,1" in msg and "cannot use CUDA" in msg and "SICOG_PYTHON" in msg
    assert runtime.gpu_allocation_problem({"SLURM_JOB_GPUS": "0,1", "SICOG_FORCE_CPU": "1"}) is None
    assert runtime.gpu_allocation_problem({}) is None
    assert runtime.gpu_allocation_problem({"CUDA_VISIBLE_DEVICES": ""}) is None


def test_te_import_error_is_reported_on_a_gpu_machine(monkeypatch, caplog):
    error = runtime.transformer_engine_import_error()
    if error is None:
        pytest.skip("Transformer Engine imports here")
    assert error.split(":")[0].endswith("Error")
    monkeypatch.setattr(runtime, "cuda_available", lambda: True)
    monkeypatch.setattr(runtime, "_TE_WARNED", False)
    with caplog.at_level(logging.WARNING, logger="megatron_sicog.runtime"):
        assert runtime.transformer_engine_available() is False
        assert runtime.transformer_engine_available() is False
    warnings = [r.getMessage() for r in caplog.records if "Transformer Engine cannot be imported" in r.getMessage()]
    assert len(warnings) == 1 and error in warnings[0]
    args = PRESETS["tiny"].replace(transformer_impl="transformer_engine")
    with pytest.raises(RuntimeError, match="Transformer Engine cannot be imported"):
        model_config.use_transformer_engine(args)


@needs_no_cuda
def test_transformer_engine_asked_for_without_gpu_is_an_error():
    args = PRESETS["tiny"].replace(transformer_impl="transformer_engine")
    with pytest.raises(RuntimeError, match="needs a GPU"):
        model_config.use_transformer_engine(args)
    assert model_config.use_transformer_engine(PRESETS["tiny"].replace(transformer_impl="auto")) is False


def test_packing_is_refused_with_transformer_engine_layers():
    from megatron_sicog.training.arguments import packing_problem

    assert "--transformer-impl local" in packing_problem(True, "transformer_engine")
    assert packing_problem(True, "local") is None and packing_problem(False, "transformer_engine") is None


def test_dpo_reference_in_bf16_runs_inside_float16module():
    """--bf16 DPO: the reference takes the fp32 images and returns fp32 like the policy (CPU bf16 here)."""
    import argparse

    from megatron.core.transformer.module import Float16Module

    from megatron_sicog.model.llava import build_model
    from megatron_sicog.training.dpo import build_reference_model

    runtime.init_distributed(1, 1, seed=0)
    m = PRESETS["tiny"].replace(transformer_impl="local")
    inner = build_model(m, params_dtype=torch.bfloat16)
    ref = build_reference_model(inner, m, argparse.Namespace(bf16=True, fp16=False))
    assert isinstance(ref, Float16Module) and not any(p.requires_grad for p in ref.parameters())
    assert {p.dtype for p in ref.parameters()} == {torch.bfloat16}
    P = m.vision.num_patches
    ids = torch.tensor([[m.image_token_id] * P + [5, 6, 7]])
    s = ids.shape[1]
    mask = ~torch.ones(s, s, dtype=torch.bool).tril()[None, None]
    img = torch.rand(1, 3, m.vision.image_size, m.vision.image_size)  # fp32, as collate makes them
    with torch.no_grad():
        out = ref(ids, torch.arange(s)[None], mask, images=img, labels=ids)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
