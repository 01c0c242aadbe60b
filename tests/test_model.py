"""The multimodal model: image-token splicing, loss masking, text-only, freezing, presets."""
import argparse

import numpy as np
import pytest
import torch

from megatron_sicog.model.batch import attention_mask_from_segments, collate
from megatron_sicog.model.presets import PRESETS, add_model_args, flag_conflicts, model_args_from_flags, validate

IMG = 3  # the tiny preset's image-token id


@pytest.fixture(scope="module")
def model(mcore):
    from megatron_sicog.model.llava import build_model

    mcore.set_seed(5)
    return build_model(PRESETS["tiny"])


def _sample(n_prompt, n_answer, image=True, seed=0):
    rng = np.random.default_rng(seed)
    prompt = rng.integers(10, 900, n_prompt)
    if image:
        prompt = np.concatenate([[IMG], prompt])
    answer = rng.integers(10, 900, n_answer)
    toks = np.concatenate([prompt, answer])
    mask = np.concatenate([np.zeros(len(prompt), np.uint8), np.ones(n_answer, np.uint8)])
    imgs = [rng.standard_normal((3, 64, 64)).astype(np.float32)] if image else []
    return {"tokens": toks, "loss_mask": mask, "images": imgs}


def _collate(samples, seq=64):
    P = PRESETS["tiny"].vision.num_patches
    return collate(samples, seq, IMG, P, pad_id=0, image_transform=lambda ims: torch.stack([torch.as_tensor(i) for i in ims]))


def test_collate_expands_image_and_masks_prompt():
    P = PRESETS["tiny"].vision.num_patches
    s = _sample(5, 7)
    b = _collate([s])
    ids = b.input_ids[0]
    # the <image> token became P consecutive image positions at the placeholder's place
    assert torch.equal(ids[:P], torch.full((P,), IMG))
    assert int((ids == IMG).sum()) == P
    assert torch.equal(ids[P:P + 5], torch.as_tensor(s["tokens"][1:6]))
    # labels are the next tokens; loss only on the 7 answer tokens
    assert torch.equal(b.labels[0, :P + 11], torch.cat([ids[1:P + 12]]))
    assert int(b.loss_mask.sum()) == 7
    on = b.loss_mask[0].nonzero().flatten()
    assert torch.equal(b.labels[0, on], torch.as_tensor(s["tokens"][-7:]))
    assert not b.loss_mask[0, :P + 4].any()  # image and prompt positions carry no loss


def test_truncation_never_splits_an_image():
    P = PRESETS["tiny"].vision.num_patches
    s = _sample(40, 10)
    s2 = {"tokens": np.concatenate([s["tokens"], [IMG], [5, 6]]), "loss_mask": np.concatenate([s["loss_mask"], [0, 1, 1]]).astype(np.uint8),
          "images": s["images"] * 2}
    b = _collate([s2], seq=P + 60)
    assert int((b.input_ids == IMG).sum()) == P and b.images.shape[0] == 1


def test_segment_mask_isolates_packed_samples():
    seg = torch.tensor([[1, 1, 2, 2, 2, 0]])
    m = attention_mask_from_segments(seg)[0, 0]
    assert not m[1, 0] and m[0, 1]  # causal inside segment 1
    assert m[2, 1] and m[3, 0]  # segment 2 cannot see segment 1
    assert not m[4, 2]


def test_image_features_land_at_image_positions(model):
    P = PRESETS["tiny"].vision.num_patches
    b = _collate([_sample(5, 7, seed=1), _sample(3, 4, image=False, seed=2), _sample(6, 2, seed=3)])
    emb = model.embed(b.input_ids, b.position_ids, b.images).transpose(0, 1)  # [b, s, h]
    feats = model.projector(model.vision(b.images))
    text = model.language_model.embedding(input_ids=b.input_ids, position_ids=b.position_ids).transpose(0, 1)
    torch.testing.assert_close(emb[0, :P], feats[0])
    torch.testing.assert_close(emb[2, :P], feats[1])  # sample 1 had no image: second image -> sample 2
    torch.testing.assert_close(emb[1], text[1])
    torch.testing.assert_close(emb[0, P:], text[0, P:])
    with pytest.raises(ValueError, match="image-token positions"):
        model.embed(b.input_ids, b.position_ids, b.images[:1])


def test_text_only_batch_and_loss(model):
    b = _collate([_sample(5, 9, image=False, seed=4)])
    assert b.images is None
    loss = model(b.input_ids, b.position_ids, b.attention_mask, images=None, labels=b.labels)
    assert loss.shape == b.labels.shape and torch.isfinite(loss).all()
    logits = model(b.input_ids, b.position_ids, b.attention_mask)
    assert logits.shape[:2] == b.input_ids.shape


def test_prompt_change_moves_loss_only_through_context(model):
    """Loss at masked positions never enters the objective: changing a masked label changes nothing."""
    from megatron_sicog.training.lm_step import masked_lm_loss

    b = _collate([_sample(5, 7, seed=6)])
    out = model(b.input_ids, b.position_ids, b.attention_mask, images=b.images, labels=b.labels)
    l1, _ = masked_lm_loss(b.loss_mask, out)
    labels2 = b.labels.clone()
    labels2[b.loss_mask == 0] = 7
    out2 = model(b.input_ids, b.position_ids, b.attention_mask, images=b.images, labels=labels2)
    l2, _ = masked_lm_loss(b.loss_mask, out2)
    assert torch.equal(l1, l2)
    assert not torch.equal(out, out2)


def test_freeze_parts(mcore):
    from megatron_sicog.model.llava import build_model

    m = build_model(PRESETS["tiny"])
    m.freeze(vision=True, language=True)
    assert not any(p.requires_grad for p in m.vision.parameters())
    assert not any(p.requires_grad for p in m.language_model.parameters())
    assert all(p.requires_grad for p in m.projector.parameters())


def test_preset_flags_override_and_validation():
    p = add_model_args(argparse.ArgumentParser())
    a = model_args_from_flags(p.parse_args(["--model-preset", "qwen2-7b-clip-l336", "--num-layers", "2",
                                            "--model-family", "llama"]))
    assert a.language.num_layers == 2 and a.language.hidden_size == 3584
    assert a.language.family == "llama" and not a.language.add_qkv_bias
    assert a.vision.num_patches == 576 and a.vision.feature_layer == -2
    with pytest.raises(ValueError, match=r"query groups 4 not divisible by tensor-model-parallel-size 8"):
        validate(PRESETS["qwen2-7b-clip-l336"], tensor_model_parallel_size=8)
    with pytest.raises(ValueError, match=r"num layers 28 not divisible by pipeline-model-parallel-size 3"):
        validate(PRESETS["qwen2-7b-clip-l336"], pipeline_model_parallel_size=3)


def test_flags_that_contradict_a_checkpoint_shape_are_named():
    p = add_model_args(argparse.ArgumentParser())
    tiny = PRESETS["tiny"]
    assert flag_conflicts(p.parse_args([]), tiny) == []
    same = p.parse_args(["--num-layers", str(tiny.language.num_layers), "--img-h", str(tiny.vision.image_size)])
    assert flag_conflicts(same, tiny) == []
    bad = p.parse_args(["--num-layers", "8", "--hidden-size", str(tiny.language.hidden_size), "--patch-dim", "8"])
    assert flag_conflicts(bad, tiny) == [
        f"--num-layers 8 (checkpoint: num_layers {tiny.language.num_layers})",
        f"--patch-dim 8 (checkpoint: vision patch_size {tiny.vision.patch_size})"]


@pytest.mark.gpu
def test_forward_on_gpu_matches_cpu(model):
    from megatron_sicog import runtime

    if not runtime.cuda_available():
        pytest.skip("no CUDA GPU on this machine")
    b = _collate([_sample(5, 7, seed=8)])
    cpu = model(b.input_ids, b.position_ids, b.attention_mask, images=b.images)
    g = b.to("cuda")
    gpu = model.cuda()(g.input_ids, g.position_ids, g.attention_mask, images=g.images).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mask_kind", ["causal", "segments", "none"])
def test_sdpa_core_attention_equals_megatron_dot_product_attention(mcore, mask_kind):
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_sicog.model import config as mcfg
    from megatron_sicog.model.attention import SDPADotProductAttention

    cfg = mcfg.language_config(PRESETS["tiny"])  # 6 heads, 2 query groups (GQA)
    mt = AttnMaskType.no_mask if mask_kind == "none" else AttnMaskType.causal
    ref = DotProductAttention(cfg, layer_number=1, attn_mask_type=mt, attention_type="self")
    new = SDPADotProductAttention(cfg, layer_number=1, attn_mask_type=mt, attention_type="self")
    g = torch.Generator().manual_seed(0)
    s, b, hn = 20, 3, cfg.kv_channels
    q = torch.randn(s, b, 6, hn, generator=g, requires_grad=True)
    k = torch.randn(s, b, 2, hn, generator=g, requires_grad=True)
    v = torch.randn(s, b, 2, hn, generator=g, requires_grad=True)
    mask = None
    if mask_kind == "causal":
        mask = attention_mask_from_segments(torch.ones(b, s, dtype=torch.long))
    elif mask_kind == "segments":
        mask = attention_mask_from_segments(torch.tensor([[1] * 8 + [2] * 12] * b))
    out_ref = ref(q, k, v, mask)
    grads_ref = torch.autograd.grad(out_ref.square().sum(), (q, k, v))
    out_new = new(q, k, v, mask)
    grads_new = torch.autograd.grad(out_new.square().sum(), (q, k, v))
    torch.testing.assert_close(out_new, out_ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(grads_new, grads_ref):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)


def test_preset_replace_never_changes_the_shared_preset():
    from megatron_sicog.model.presets import PRESETS

    vocab = PRESETS["tiny"].language.vocab_size
    copy = PRESETS["tiny"].replace()
    copy.language.vocab_size = vocab + 7
    copy.vision.image_size = 1
    assert PRESETS["tiny"].language.vocab_size == vocab and PRESETS["tiny"].vision.image_size != 1
