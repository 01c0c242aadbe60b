"""Direct preference optimisation (stage 1 variant): the loss and the frozen reference model.

A micro-batch holds b chosen sequences followed by their b rejected twins
(same prompt and image). Sequence log-probs are sums over response tokens of
``-per_token_loss`` from megatron's vocab-parallel cross entropy, so they are
exact at any TP size. The reference policy is a frozen copy of the initial
model, partitioned like the policy; `training.objectives.DPOObjective` runs it
through the same pipeline schedule.

    loss = -log sigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r)))

the sigmoid loss of TRL's DPOTrainer (no label smoothing, no SFT term), averaged over pairs; pi / ref
are sums over the reply tokens (the assistant turn and its end-of-turn token; prompt and image
positions carry no loss), labels shifted by one. Per-step metrics carry TRL's names (logps/chosen,
rewards/margins, ...).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F



def sequence_logps(per_token_loss: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    return -(per_token_loss.float() * loss_mask.float()).sum(dim=-1)


def dpo_loss(loss_mask: torch.Tensor, ref_logps: torch.Tensor, beta: float, output_tensor: torch.Tensor):
    logps = sequence_logps(output_tensor, loss_mask)
    b = logps.shape[0] // 2
    policy_margin = logps[:b] - logps[b:]
    ref_margin = ref_logps[:b] - ref_logps[b:]
    logits = beta * (policy_margin - ref_margin)
    loss = -F.logsigmoid(logits).mean()
    # implicit rewards, as TRL's DPOTrainer logs them: beta * (policy - reference) log-prob
    chosen_reward = beta * (logps[:b] - ref_logps[:b])
    rejected_reward = beta * (logps[b:] - ref_logps[b:])
    # metrics under TRL DPOTrainer's names: policy sequence log-probs, implicit rewards, their margin and
    # the fraction of pairs whose chosen reward beats the rejected one
    return loss, {
        "dpo_loss": loss.detach().clone(),
        "rewards/margins": (chosen_reward - rejected_reward).mean().detach(),
        "rewards/accuracies": (chosen_reward > rejected_reward).float().mean().detach(),
        "rewards/chosen": chosen_reward.mean().detach(),
        "rewards/rejected": rejected_reward.mean().detach(),
        "logps/chosen": logps[:b].mean().detach(),
        "logps/rejected": logps[b:].mean().detach(),
    }


def build_reference_model(inner, model_args, args):
    """The frozen DPO reference: a copy of `inner`, in the policy's precision the way the policy is.

    With --bf16/--fp16 the policy runs inside megatron's Float16Module (inputs such
    as the fp32 images cast to the half type, logits back to fp32); the reference
    gets the same wrapper, or its ViT would see fp32 images against bf16 weights.
    """
    from megatron.core.transformer.module import Float16Module

    from megatron_sicog.model.llava import build_model
    from megatron_sicog.training.optim import params_dtype

    ref = build_model(model_args, params_dtype=params_dtype(args))
    ref.load_state_dict(inner.state_dict(), strict=True)
    if args.bf16 or args.fp16:
        ref = Float16Module(ref.config, ref)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref
