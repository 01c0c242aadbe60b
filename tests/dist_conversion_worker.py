"""torchrun worker for tests/test_conversion_parallel.py: logits of converted checkpoints at TP/PP > 1.

For each case ``name=CKPT_DIR:TP:PP`` the 2 processes set up TP x PP model
parallel groups, build this stage's model from the checkpoint's ModelArgs,
load the checkpoint (`load_model_weights`, resharding if needed) and run the
shared text+image input forward (tiled checkpoints: with the inputs' ``image_sizes``). PP=2 hands the first stage's hidden states to
the last stage with a point-to-point send. The last stage's TP rank 0 writes
``OUT/NAME.pt`` = logits over the true vocabulary.
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_sicog import runtime
from megatron_sicog.model.llava import build_model
from megatron_sicog.training.checkpointing import load_model_weights, model_args_from_dict, read_meta
from tests.conversion_helpers import causal_mask


def logits_for(ckpt: str, tp: int, pp: int, ids: torch.Tensor, images: torch.Tensor, image_sizes=None):
    parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    args = model_args_from_dict(read_meta(ckpt)["model_args"])
    model = build_model(args).eval()
    load_model_weights(model, ckpt)
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    mask = causal_mask(*ids.shape)
    with torch.no_grad():
        if pp == 1:
            out = model(ids, pos, mask, images=images, runtime_gather_output=True, image_sizes=image_sizes)
        else:
            assert pp == 2 and dist.get_world_size() == 2, "this worker runs PP=2 on exactly 2 processes"
            if parallel_state.is_pipeline_first_stage():
                hidden = model(ids, pos, mask, images=images, image_sizes=image_sizes)
                dist.send(hidden.contiguous(), dst=1)
                return None
            hidden = torch.empty(ids.shape[1], ids.shape[0], args.language.hidden_size)
            dist.recv(hidden, src=0)
            model.set_input_tensor(hidden)
            out = model(None, pos, mask, images=None, runtime_gather_output=True)
    if parallel_state.get_tensor_model_parallel_rank() != 0:
        return None
    return out[..., : args.language.vocab_size].float()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--inputs", required=True, help="torch file {'ids', 'images'}")
    p.add_argument("--out-dir", required=True)
    p.add_argument("cases", nargs="+", help="NAME=CKPT_DIR:TP:PP")
    a = p.parse_args()
    runtime.init_distributed(1, 1, seed=1234)
    inp = torch.load(a.inputs)
    for case in a.cases:
        name, spec = case.split("=", 1)
        ckpt, tp, pp = spec.rsplit(":", 2)
        logits = logits_for(ckpt, int(tp), int(pp), inp["ids"], inp["images"], inp.get("image_sizes"))
        if logits is not None:
            torch.save(logits, Path(a.out_dir) / f"{name}.pt")
        dist.barrier()
    runtime.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
