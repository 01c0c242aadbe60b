"""CLIP- or SigLIP-style vision encoder on megatron-core's TransformerBlock.

CLIP: patch embedding (conv, no bias) -> class token -> + learned positions ->
pre-LayerNorm -> ViT layers (bidirectional attention, tensor-parallel) ->
features of layer ``feature_layer``.
SigLIP: patch embedding (conv with bias) -> + learned positions -> ViT layers
(``gelu_pytorch_tanh`` MLP) -> features of layer ``feature_layer``.

Same computation as Hugging Face ``CLIPVisionModel`` / ``SiglipVisionModel``
hidden_states[k] as LLaVA reads them: the layer's output, *before* the
tower's ``post_layernorm`` (transformers records hidden states with
``tie_last_hidden_states=False``, so even hidden_states[-1] is un-normed), so
neither post-LayerNorm has a counterpart here. ``feature_select`` "default"
drops the first token (CLIP's class token), "full" keeps them all (SigLIP).
Weights convert one to one (see conversion/).
"""
from __future__ import annotations

import torch
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_block import TransformerBlock
from megatron.core.transformer.transformer_config import TransformerConfig
from torch import nn

from megatron_sicog.model.presets import VisionArgs


class VisionEncoder(MegatronModule):
    def __init__(self, config: TransformerConfig, layer_spec, args: VisionArgs):
        super().__init__(config=config)
        self.args = args
        h = config.hidden_size
        self.patch_embed = nn.Conv2d(3, h, kernel_size=args.patch_size, stride=args.patch_size,
                                     bias=args.patch_bias)
        self.num_positions = args.num_positions
        self.class_token = nn.Parameter(torch.randn(h) * config.init_method_std) if args.class_token else None
        self.position_embeddings = nn.Embedding(self.num_positions, h)
        nn.init.normal_(self.position_embeddings.weight, std=config.init_method_std)
        self.pre_layernorm = nn.LayerNorm(h, eps=config.layernorm_epsilon) if args.pre_layernorm else None
        self.decoder = TransformerBlock(config=config, spec=layer_spec, pre_process=True,
                                        post_process=False, post_layer_norm=False)
        n = args.num_layers
        self.layers_used = args.feature_layer + 1 if args.feature_layer >= 0 else n + 1 + args.feature_layer
        self.register_buffer("position_ids", torch.arange(self.num_positions), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [n, 3, H, W] (normalised) -> features [n, num_image_tokens, hidden]."""
        x = self.patch_embed(images.to(self.patch_embed.weight.dtype))  # [n, h, gh, gw]
        x = x.flatten(2).transpose(1, 2)  # [n, P, h]
        if self.class_token is not None:
            cls = self.class_token.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
        x = x + self.position_embeddings(self.position_ids)
        if self.pre_layernorm is not None:
            x = self.pre_layernorm(x)
        x = x.transpose(0, 1).contiguous()  # megatron layout [s, b, h]
        # LLaVA reads an intermediate layer (hidden_states[-2]): run only the layers
        # that feed it. The unused tail layers keep their weights (for round trips
        # to Hugging Face) but cost no compute.
        for layer in self.decoder.layers[: self.layers_used]:
            x, _ = layer(hidden_states=x, attention_mask=None)
        x = x.transpose(0, 1)  # [n, P(+1), h]
        if self.args.feature_select == "default":
            x = x[:, 1:]
        return x
