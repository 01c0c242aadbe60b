"""The DPO loss against an independent computation on the same model (TRL DPOTrainer's sigmoid loss).

Ours: sequence log-probs from megatron's vocab-parallel cross entropy (`labels=` forward), then
`training.dpo.dpo_loss`. Independent: log_softmax of the plain logits gathered at the labels, summed over
the response mask (TRL's `get_batch_logps`), and TRL's formula
``-logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` with its implicit rewards
``beta * (pi - ref)``.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from megatron_sicog.model.batch import collate
from megatron_sicog.model.presets import PRESETS
from megatron_sicog.training.dpo import dpo_loss, sequence_logps

IMG = 3


def _sample(rng, prompt, n_answer):
    answer = rng.integers(10, 900, n_answer)
    toks = np.concatenate([prompt, answer])
    mask = np.concatenate([np.zeros(len(prompt), np.uint8), np.ones(n_answer, np.uint8)])
    return {"tokens": toks, "loss_mask": mask, "images": [rng.standard_normal((3, 64, 64)).astype(np.float32)]}


def _pairs(seed=0, b=3):
    rng = np.random.default_rng(seed)
    chosen, rejected = [], []
    for _ in range(b):
        prompt = np.concatenate([[IMG], rng.integers(10, 900, 6)])
        chosen.append(_sample(rng, prompt, int(rng.integers(4, 12))))
        rejected.append(_sample(rng, prompt, int(rng.integers(4, 12))))
        rejected[-1]["images"] = chosen[-1]["images"]
    P = PRESETS["tiny"].vision.num_patches
    return collate(chosen + rejected, 64, IMG, P, pad_id=0,
                   image_transform=lambda ims: torch.stack([torch.as_tensor(i) for i in ims]))


def _trl_logps(logits, labels, mask):
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return (logp * mask.float()).sum(-1)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_equals_trl_formula_on_the_same_model(mcore, beta):
    from megatron_sicog.model.llava import build_model

    mcore.set_seed(11)
    policy = build_model(PRESETS["tiny"])
    mcore.set_seed(12)
    ref = build_model(PRESETS["tiny"])  # a different reference, so the reference terms matter
    policy.eval()
    ref.eval()
    bt = _pairs()
    with torch.no_grad():
        per_tok = policy(bt.input_ids, bt.position_ids, bt.attention_mask, images=bt.images, labels=bt.labels)
        ref_per_tok = ref(bt.input_ids, bt.position_ids, bt.attention_mask, images=bt.images, labels=bt.labels)
        logits = policy(bt.input_ids, bt.position_ids, bt.attention_mask, images=bt.images)
        ref_logits = ref(bt.input_ids, bt.position_ids, bt.attention_mask, images=bt.images)
    loss, logs = dpo_loss(bt.loss_mask, sequence_logps(ref_per_tok, bt.loss_mask), beta, per_tok)

    pi = _trl_logps(logits, bt.labels, bt.loss_mask)
    rf = _trl_logps(ref_logits, bt.labels, bt.loss_mask)
    b = pi.shape[0] // 2
    z = beta * ((pi[:b] - rf[:b]) - (pi[b:] - rf[b:]))
    want = -F.logsigmoid(z).mean()
    torch.testing.assert_close(loss, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logs["logps/chosen"], pi[:b].mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logs["logps/rejected"], pi[b:].mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logs["rewards/chosen"], (beta * (pi[:b] - rf[:b])).mean(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logs["rewards/rejected"], (beta * (pi[b:] - rf[b:])).mean(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logs["rewards/margins"], (z / 1.0).mean(), rtol=1e-4, atol=1e-5)
    assert float(logs["rewards/accuracies"]) == float((z > 0).float().mean())
    assert abs(float(loss) - float(np.log(2))) > 1e-4  # the policy differs from the reference


def test_dpo_gradient_equals_trl_formula(mcore):
    """The same loss gives the same gradient on a policy parameter through either log-prob path."""
    from megatron_sicog.model.llava import build_model

    mcore.set_seed(21)
    policy = build_model(PRESETS["tiny"])
    bt = _pairs(seed=1, b=2)
    ref_logps = torch.tensor([-40.0, -35.0, -42.0, -30.0])
    w = policy.language_model.output_layer.weight
    out = policy(bt.input_ids, bt.position_ids, bt.attention_mask, images=bt.images, labels=bt.labels)
    loss, _ = dpo_loss(bt.loss_mask, ref_logps, 0.1, out)
    g_ours, = torch.autograd.grad(loss, w)
    logits = policy(bt.input_ids, bt.position_ids, bt.attention_mask, images=bt.images)
    pi = _trl_logps(logits, bt.labels, bt.loss_mask)
    z = 0.1 * ((pi[:2] - pi[2:]) - (ref_logps[:2] - ref_logps[2:]))
    g_trl, = torch.autograd.grad(-F.logsigmoid(z).mean(), w)
    torch.testing.assert_close(g_ours, g_trl, rtol=1e-4, atol=1e-6)
