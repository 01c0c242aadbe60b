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


def test_dpo_objective_step_equals_trl_on_policy_and_frozen_reference(mcore):
    """The trainer's path: DPOObjective builds its frozen reference from the policy (build_reference_model),
    the policy moves away from it, and one forward-only pass through megatron-core's schedule gives metrics
    equal to TRL's formula recomputed from both models' plain logits, with the reply mask rebuilt from the
    prompt lengths (prompt and image positions excluded, labels shifted by one)."""
    from argparse import Namespace

    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_sicog.model.llava import build_model
    from megatron_sicog.training.objectives import DPOObjective

    beta = 0.2
    mcore.set_seed(31)
    policy = build_model(PRESETS["tiny"])
    obj = DPOObjective(beta)
    obj.setup(policy, PRESETS["tiny"], Namespace(bf16=False, fp16=False, params_dtype="float32"))
    with torch.no_grad():  # the policy after some training: no longer the reference
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    policy.eval()
    bt = _pairs(seed=3, b=3)
    fb = get_forward_backward_func()

    def schedule(step, it, model, n, forward_only):
        return fb(forward_step_func=step, data_iterator=it, model=model or [policy], num_microbatches=n,
                  seq_length=bt.input_ids.shape[1], micro_batch_size=bt.input_ids.shape[0], forward_only=forward_only)

    got, = obj.run(schedule, iter([bt]), 1, True)

    # the reply mask from the prompt lengths alone: label position t predicts token t+1
    rng = np.random.default_rng(3)
    n = bt.input_ids.shape[0]
    mask = torch.zeros_like(bt.loss_mask)
    P = PRESETS["tiny"].vision.num_patches
    lens = []
    for _ in range(3):  # replay _pairs' draws: prompt of 7 tokens (one image), then each side's reply
        rng.integers(10, 900, 6)
        for side in range(2):
            k = int(rng.integers(4, 12))
            rng.integers(10, 900, k)
            rng.standard_normal((3, 64, 64))
            lens.append((side, k))
    chosen = [k for s, k in lens if s == 0]
    rejected = [k for s, k in lens if s == 1]
    prompt = 7 - 1 + P  # the image token expands to P patch positions
    for i, k in enumerate(chosen + rejected):
        mask[i, prompt - 1:prompt - 1 + k] = 1.0
    torch.testing.assert_close(mask, bt.loss_mask)
    with torch.no_grad():
        pi = _trl_logps(policy(bt.input_ids, bt.position_ids, bt.attention_mask, images=bt.images), bt.labels, mask)
        rf = _trl_logps(obj.ref_model(bt.input_ids, bt.position_ids, bt.attention_mask, images=bt.images),
                        bt.labels, mask)
    b = n // 2
    rc, rr = beta * (pi[:b] - rf[:b]), beta * (pi[b:] - rf[b:])
    want = -F.logsigmoid(rc - rr).mean()
    assert abs(float(want) - float(np.log(2))) > 1e-3  # the reference counts
    torch.testing.assert_close(got["dpo_loss"], want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got["rewards/chosen"], rc.mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["rewards/rejected"], rr.mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["rewards/margins"], (rc - rr).mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["logps/chosen"], pi[:b].mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got["logps/rejected"], pi[b:].mean(), rtol=1e-5, atol=1e-4)
    assert float(got["rewards/accuracies"]) == float((rc > rr).float().mean())
