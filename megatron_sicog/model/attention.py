"""Core attention for the local (non-Transformer-Engine) specs on torch SDPA.

megatron-core's local `DotProductAttention` computes scores with a bmm,
applies an explicit [b,1,s,s] mask, a softmax and a second bmm, and repeats
the grouped K/V heads first. On the CPU that was ~3x slower per layer than
``torch.nn.functional.scaled_dot_product_attention`` (fwd+bwd, s=256, b=8,
6 heads / 2 groups: 113 ms vs 35 ms; benchmarks/train_throughput.py), about a
third of a tiny-model training step. This subclass keeps megatron's
constructor and state (so TP sizes, specs and checkpoints are unchanged) and
replaces only the arithmetic: same scale, same mask convention (True =
masked out), grouped-query attention without materialising repeated heads.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType


class SDPADotProductAttention(DotProductAttention):
    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: Optional[torch.Tensor], attn_mask_type: Optional[AttnMaskType] = None,
                attention_bias: Optional[torch.Tensor] = None, packed_seq_params=None) -> torch.Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPA core attention takes a mask, not packed_seq_params / bias")
        if self.config.softmax_type != "vanilla":
            raise NotImplementedError(f"softmax_type {self.config.softmax_type!r} needs megatron's attention")
        sq, b, nh, hn = query.shape
        q = query.permute(1, 2, 0, 3)  # [b, np, sq, hn]
        k = key.permute(1, 2, 0, 3)  # [b, ng, sk, hn]
        v = value.permute(1, 2, 0, 3)
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        attn_mask, is_causal = None, False
        if attention_mask is not None:
            attn_mask = ~attention_mask  # megatron: True = masked; SDPA: True = attend
        elif mask_type == AttnMaskType.causal and sq > 1:
            is_causal = True
        dropout = self.config.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout,
                                             is_causal=is_causal, scale=self.softmax_scale,
                                             enable_gqa=k.shape[1] != q.shape[1])
        return out.permute(2, 0, 1, 3).reshape(sq, b, nh * hn)  # [sq, b, hp]
