"""SicogModel: vision encoder + MLP projector + megatron GPTModel, TP- and PP-ready.

Image tokens: the batch builder (`model/batch.py`) expands each ``<image>``
token into ``num_image_tokens`` copies of the image-token id and shifts labels and
loss mask with it; here the embeddings at those positions are replaced by the
projected patch features, image by image in batch order (the same convention
as Hugging Face ``LlavaForConditionalGeneration``). With any-resolution tiling
(``vision.image_grid_pinpoints``, `data.tiling`) an image is several views and
``image_sizes`` says each image's (height, width): its views' features are packed
(`model.anyres`: unpadding, the learned ``image_newline`` after every row) into
``Tiling.num_tokens`` vectors, as ``LlavaNextForConditionalGeneration`` does.

Pipeline parallel: the first stage holds the vision encoder, projector and
token embedding; every stage holds its share of LM layers; the last holds the
output layer. megatron-core's schedules drive it through `set_input_tensor`.
"""
from __future__ import annotations

from typing import Optional

import torch
from megatron.core import parallel_state
from megatron.core.enums import ModelType
from megatron.core.models.gpt import GPTModel
from megatron.core.models.vision.multimodal_projector import MultimodalProjector
from megatron.core.transformer.module import MegatronModule

from megatron_sicog.data.tiling import geometry_for
from megatron_sicog.model import config as mcfg
from megatron_sicog.model.anyres import pack_image_features
from megatron_sicog.model.presets import ModelArgs, padded_vocab_size, validate
from megatron_sicog.model.vision import VisionEncoder


class SicogModel(MegatronModule):
    def __init__(self, args: ModelArgs, pre_process: bool = True, post_process: bool = True,
                 params_dtype: torch.dtype = torch.float32):
        tp = parallel_state.get_tensor_model_parallel_world_size()
        pp = parallel_state.get_pipeline_model_parallel_world_size()
        validate(args, tp, pp)
        lm_config = mcfg.language_config(args, tp, pp, params_dtype)
        super().__init__(config=lm_config)
        self.args = args
        self.model_type = ModelType.encoder_or_decoder  # read by megatron's schedules
        self.pre_process = pre_process
        self.post_process = post_process
        self.image_token_id = args.image_token_id
        self.num_image_tokens = args.vision.num_image_tokens
        self.padded_vocab_size = padded_vocab_size(
            args.language.vocab_size, args.language.make_vocab_size_divisible_by, tp)
        self.vision: Optional[VisionEncoder] = None
        self.projector: Optional[MultimodalProjector] = None
        self.tiling = geometry_for(args.vision)
        self.image_newline: Optional[torch.nn.Parameter] = None
        if pre_process and self.tiling is not None:
            h = args.language.hidden_size  # LLaVA-NeXT's init: normal with std 1/sqrt(hidden)
            self.image_newline = torch.nn.Parameter(torch.randn(h, dtype=params_dtype) / h ** 0.5)
        if pre_process:
            self.vision = VisionEncoder(mcfg.vision_config(args, tp, params_dtype),
                                        mcfg.vision_layer_spec(args), args.vision)
            self.projector = MultimodalProjector(mcfg.projector_config(args, tp, params_dtype),
                                                 mcfg.projector_spec(args), args.projector_type,
                                                 input_size=args.vision.hidden_size)
        self.language_model = GPTModel(
            config=lm_config,
            transformer_layer_spec=mcfg.language_layer_spec(args),
            vocab_size=self.padded_vocab_size,
            max_sequence_length=args.language.max_position_embeddings,
            pre_process=pre_process,
            post_process=post_process,
            share_embeddings_and_output_weights=not args.language.untie_embeddings_and_output_weights,
            position_embedding_type="rope",
            rotary_base=int(args.language.rotary_base),
            rope_scaling=args.language.rope_type == "llama3",
            rope_scaling_factor=args.language.rope_scaling_factor,
        )
        if args.language.rope_type == "llama3":
            set_llama3_rope(self.language_model.rotary_pos_emb, args.language)
        # megatron's DDP / optimizer read these off the top-level module
        self.share_embeddings_and_output_weights = self.language_model.share_embeddings_and_output_weights

    # -- pipeline plumbing -------------------------------------------------
    def set_input_tensor(self, input_tensor) -> None:
        if isinstance(input_tensor, (list, tuple)):
            assert len(input_tensor) == 1, "SicogModel takes one input tensor per stage"
            input_tensor = input_tensor[0]
        self.language_model.set_input_tensor(input_tensor)

    def shared_embedding_or_output_weight(self):
        return self.language_model.shared_embedding_or_output_weight()

    # -- freezing ----------------------------------------------------------
    def freeze(self, vision: bool = False, projector: bool = False, language: bool = False) -> None:
        """Freeze parts for the training stages (e.g. alignment: only the projector trains)."""
        for part, flag in ((self.vision, vision), (self.projector, projector), (self.language_model, language)):
            if part is not None and flag:
                for p in part.parameters():
                    p.requires_grad_(False)

    # -- forward -----------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
              images: Optional[torch.Tensor], image_sizes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Token embeddings with image features spliced in: [s, b, h]."""
        emb = self.language_model.embedding(input_ids=input_ids, position_ids=position_ids)
        is_image = input_ids == self.image_token_id
        n_slots = int(is_image.sum())
        n_images = 0 if images is None else images.shape[0]
        if self.tiling is not None and n_images:
            return self._splice(emb, is_image, self._tiled_features(images, image_sizes, n_slots))
        if n_slots != n_images * self.num_image_tokens:
            raise ValueError(
                f"batch has {n_slots} image-token positions but {n_images} images x "
                f"{self.num_image_tokens} patches = {n_images * self.num_image_tokens} features")
        if n_images == 0:
            return emb
        feats = self.projector(self.vision(images))  # [n, P, h]
        return self._splice(emb, is_image, feats.reshape(-1, feats.shape[-1]))

    def _tiled_features(self, views: torch.Tensor, image_sizes: Optional[torch.Tensor], n_slots: int):
        """[n_slots, h]: the packed features of every tiled image, image after image."""
        if image_sizes is None:
            raise ValueError("a tiled model needs image_sizes (height, width) with its image views")
        feats = pack_image_features(self.projector(self.vision(views)), image_sizes, self.tiling,
                                    self.image_newline)
        n = sum(f.shape[0] for f in feats)
        if n != n_slots:
            raise ValueError(f"batch has {n_slots} image-token positions but its {len(feats)} tiled images "
                             f"pack into {n} features ({[f.shape[0] for f in feats]})")
        return torch.cat(feats)

    @staticmethod
    def _splice(emb: torch.Tensor, is_image: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        emb = emb.transpose(0, 1).clone()  # [b, s, h]: batch-major order of image slots
        emb[is_image] = feats.to(emb.dtype)
        return emb.transpose(0, 1).contiguous()

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, images: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, inference_context=None,
                runtime_gather_output: Optional[bool] = None,
                image_sizes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [b, s, vocab(/tp)] without labels; per-token loss [b, s] with labels.

        On pipeline stages after the first, input_ids/images are ignored (the
        hidden states come through `set_input_tensor`); on stages before the
        last the output is the hidden states [s, b, h].
        """
        if position_ids is None and input_ids is not None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        decoder_input = None
        if self.pre_process:
            decoder_input = self.embed(input_ids, position_ids, images, image_sizes)
        return self.language_model(
            input_ids=None, position_ids=None, attention_mask=attention_mask,
            decoder_input=decoder_input, labels=labels, inference_context=inference_context,
            runtime_gather_output=runtime_gather_output,
        )


def set_llama3_rope(rotary_pos_emb, lm) -> None:
    """Llama-3.x inverse frequencies with *all four* of the checkpoint's parameters.

    megatron-core 0.16's ``GPTModel`` hands ``RotaryEmbedding`` only
    ``rope_scaling_factor``; its ``_apply_scaling`` then uses low_freq_factor 1,
    high_freq_factor 4 and original_max_position_embeddings 8192 (Llama-3.1's
    numbers) whatever the checkpoint says. We recompute the same formula, with
    megatron-core's own ``_apply_scaling``, from the plain frequencies and the
    recorded numbers, so Llama-3.2 or any other llama3 parameters come out right.
    (tests/test_rope.py compares both with transformers' llama3 RoPE.)
    """
    inv = rotary_pos_emb.inv_freq
    dim = 2 * inv.numel()
    plain = 1.0 / (int(lm.rotary_base) ** (torch.arange(0, dim, 2, dtype=torch.float32, device=inv.device) / dim))
    from megatron_sicog.mcore_compat import llama3_inv_freq

    rotary_pos_emb.inv_freq = llama3_inv_freq(
        rotary_pos_emb, plain, factor=lm.rope_scaling_factor, low_freq_factor=lm.rope_low_freq_factor,
        high_freq_factor=lm.rope_high_freq_factor,
        original_max_position_embeddings=lm.rope_original_max_position_embeddings)


def build_model(args: ModelArgs, params_dtype: torch.dtype = torch.float32) -> SicogModel:
    """The model chunk of this pipeline stage, on this rank's device."""
    from megatron_sicog import runtime

    model = SicogModel(
        args,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        params_dtype=params_dtype,
    )
    return model.to(runtime.device())
