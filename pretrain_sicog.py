#!/usr/bin/env python
"""Train the SICOG multimodal model (every stage): Megatron-LM style entry point.

    torchrun --nproc-per-node 2 pretrain_sicog.py --stage sft --tensor-model-parallel-size 2 \
        --micro-batch-size 2 --global-batch-size 8 --seq-length 256 --lr 1e-4 --train-iters 100 \
        --data-path 0.7 data/a 0.3 data/b --tokenizer-type SentencePieceTokenizer \
        --tokenizer-model tok.model --save ckpt --load ckpt --save-interval 50

`--stage pretrain | sft | dpo`, `--mock-data` for smoke runs. See
megatron_sicog/training/trainer.py.
"""
import sys

from megatron_sicog.guards import cli
from megatron_sicog.training.trainer import main

if __name__ == "__main__":
    sys.exit(cli("pretrain_sicog.py", main))
