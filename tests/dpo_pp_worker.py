"""Worker for test_dpo_pipeline.py: DPO through the trainer at the PP size its flags give.

One full train step (the policy moves away from the frozen reference), then a second step's
forward-backward without the optimizer step; rank 0 writes both steps' reduced metrics and the
second step's full canonical gradients (gathered over PP stages) to OUT.
"""
import sys

import torch

from megatron_sicog import runtime
from megatron_sicog.model import sharding
from megatron_sicog.training.arguments import parse_args
from megatron_sicog.training.trainer import Trainer, unwrap


def main(out: str, argv: list[str]) -> None:
    torch.set_num_threads(1)
    t = Trainer(parse_args(argv))
    first = t.train_step()
    for m in t.model:
        m.train()
        m.zero_grad_buffer()
    t.optimizer.zero_grad()
    second = t._reduce(t._run_schedule(t.train_data, t.num_microbatches, forward_only=False))
    inner = unwrap(t.model[0])
    grads = sharding.gather_full_grads(inner, t.model_args.language.vocab_size)
    if torch.distributed.get_rank() == 0:
        torch.save({"first": first, "second": second, "grads": grads}, out)
    runtime.destroy_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
