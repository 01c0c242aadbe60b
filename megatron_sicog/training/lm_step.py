"""Forward step + masked next-token loss for megatron-core's pipeline schedules.

`forward_step(data_iterator, model)` is the function handed to
``get_forward_backward_func()``: it reads one micro-batch (`model.batch.Batch`)
on the first and last pipeline stages (inputs / labels), runs the model and
returns the loss closure. The loss is the mean over target tokens of the
micro-batch; megatron's schedule divides by the number of micro-batches.
"""
from __future__ import annotations

from functools import partial

import torch

from megatron_sicog import runtime
from megatron_sicog.model.batch import Batch


def masked_lm_loss(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    losses = output_tensor.float()
    mask = loss_mask.float()
    n = mask.sum().clamp(min=1.0)
    loss = (losses * mask).sum() / n
    return loss, {"lm_loss": loss.detach().clone(), "tokens": mask.sum().detach()}


def forward_step(data_iterator, model):
    batch: Batch = next(data_iterator).to(runtime.device())
    losses = model(batch.input_ids, batch.position_ids, batch.attention_mask,
                   images=batch.images, labels=batch.labels, image_sizes=batch.image_sizes)
    return losses, partial(masked_lm_loss, batch.loss_mask)
