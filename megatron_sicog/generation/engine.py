"""Batched generation with a KV cache on SicogModel: prefill once, sample N candidates.

`Engine(model).generate(prompts, sampling, num_candidates, max_new_tokens, ...)`

1. **Prefill** the B prompts of a batch once: image tokens are expanded to
   the model's patch count (a tiled model, `data.tiling`: each image to
   ``Tiling.num_tokens`` of its size, so prompts of one batch expand by
   different amounts), prompts are left-padded to one length, the
   vision encoder + projector run once per image (`SicogModel.embed`), and
   every layer's keys/values go into a `KVCache`. Each row keeps its own
   rotary positions (0 .. L_i-1 for a prompt of length L_i, whatever its
   padding), so a padded row computes what it would alone.
2. **Replicate** the cache N times (candidates of one prompt share the prefix
   computation) and sample the first token of each candidate from the
   prompt's last logits.
3. **Decode** one token per row per step against the cache; rows that emit a
   stop token or reach their length limit leave the batch (the cache is
   compacted), so long candidates do not pay for short ones.

The decode path calls the megatron-core modules of each layer (norms,
``linear_qkv`` through ``get_query_key_value_tensors``, ``linear_proj``,
``mlp``, ``output_layer``) so tensor parallelism and the local/TE specs work as
in training; only the attention core is ``scaled_dot_product_attention`` over
our cache (see `kv_cache.py` for why not megatron's static inference
context). Pipeline parallelism is not supported (a clear error).

`reference_greedy` is the slow no-cache reference: the full model forward on
the whole sequence for every new token, one prompt at a time. Tests check
that the engine's greedy tokens equal it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from megatron.core import parallel_state

from megatron_sicog import mcore_compat, runtime
from megatron_sicog.generation.kv_cache import KVCache
from megatron_sicog.generation.sampling import GREEDY, RowSampler, SamplingParams, row_seed


class PromptTooLong(ValueError):
    pass


@dataclass
class Prompt:
    """Unexpanded token ids (one image-token id per image) and that many images [k, 3, H, W].

    For a tiled model `images` holds every image's views (``Tiling.__call__``: base view, tiles) and
    `image_sizes` [k, 2] each image's (height, width), which decide its grid and token count.
    """

    tokens: Sequence[int]
    images: Optional[torch.Tensor] = None
    key: str = ""  # names the prompt for per-candidate seeds (e.g. the record id)
    image_sizes: Optional[torch.Tensor] = None


@dataclass
class Generation:
    """Per prompt, per candidate: generated ids (stop token excluded) and why it ended."""

    tokens: list[list[list[int]]]
    finish: list[list[str]]  # "stop" | "length"
    prompt_lengths: list[int] = field(default_factory=list)  # expanded lengths

    @property
    def num_generated(self) -> int:
        return sum(len(c) for cands in self.tokens for c in cands)


def _num_images(tokens: Sequence[int], image_token_id: int) -> int:
    return sum(1 for t in tokens if t == image_token_id)


def expand_prompt(tokens: Sequence[int], image_token_id: int, num_image_tokens) -> list[int]:
    """Each image token repeated `num_image_tokens` times (one number, or one per image in order)."""
    per_image = iter(num_image_tokens) if isinstance(num_image_tokens, (list, tuple)) else None
    out: list[int] = []
    for t in tokens:
        if t == image_token_id:
            out.extend([t] * (num_image_tokens if per_image is None else next(per_image)))
        else:
            out.append(t)
    return out


def image_token_counts(model, prompt: Prompt):
    """What each of the prompt's images expands to: the model's patch count, or for a tiled model
    (`model.tiling`) one ``num_tokens`` per image of `prompt.image_sizes`."""
    tiling = getattr(model, "tiling", None)
    if tiling is None:
        return model.num_image_tokens
    n_img = _num_images(prompt.tokens, model.image_token_id)
    sizes = [] if prompt.image_sizes is None else prompt.image_sizes.tolist()
    if len(sizes) != n_img:
        raise ValueError(f"prompt {prompt.key!r} has {n_img} image tokens and {len(sizes)} image sizes: "
                         "a tiled model needs each image's (height, width)")
    return [tiling.num_tokens(h, w) for h, w in sizes]


def expanded_ids(model, prompt: Prompt) -> list[int]:
    """The prompt's token ids with every image token expanded as the model fills it."""
    return expand_prompt(prompt.tokens, model.image_token_id, image_token_counts(model, prompt))


def _views(model, prompt: Prompt) -> int:
    """Rows of `prompt.images` its images take (views per image for a tiled model)."""
    tiling = getattr(model, "tiling", None)
    n_img = _num_images(prompt.tokens, model.image_token_id)
    if tiling is None or not n_img:
        return n_img
    return sum(tiling.num_views(h, w) for h, w in prompt.image_sizes.tolist())


class Engine:
    """KV-cache generation for one SicogModel chunk holding all layers (PP = 1)."""

    def __init__(self, model, pad_id: int = 0, compact_fraction: float = 0.25):
        if not (model.pre_process and model.post_process):
            raise ValueError("generation needs the whole model on each rank: run with "
                             "--pipeline-model-parallel-size 1 (tensor parallelism is supported)")
        self.model = model
        self.lm = model.language_model
        self.layers = list(self.lm.decoder.layers)
        self.config = self.lm.config
        self.image_token_id = model.image_token_id
        self.num_image_tokens = model.num_image_tokens
        self.vocab_size = model.args.language.vocab_size
        self.context_length = model.args.language.max_position_embeddings
        if pad_id == self.image_token_id:
            raise ValueError(f"pad id {pad_id} is the image token id; pick another pad id")
        self.pad_id = pad_id
        self.compact_fraction = compact_fraction
        self.tp_size = parallel_state.get_tensor_model_parallel_world_size()
        self.groups, self.head_dim, core_scale = mcore_compat.attention_geometry(self.layers[0].self_attention)
        self.softmax_scale = core_scale or self.config.softmax_scale or self.head_dim ** -0.5
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        # RoPE tables from megatron's own RotaryEmbedding (same frequencies as training)
        freqs = self.lm.rotary_pos_emb(self.context_length)  # [L, 1, 1, d]
        freqs = freqs.reshape(freqs.shape[0], -1)
        self.cos = torch.cos(freqs).to(self.dtype)
        self.sin = torch.sin(freqs).to(self.dtype)
        self.rotary_interleaved = self.config.rotary_interleaved
        # rotate_half(t) * sin == roll(t, d/2) * [-sin | sin] for the non-interleaved layout: 4 ops, not 6
        half = self.sin.shape[-1] // 2
        self.sin_signed = torch.cat([-self.sin[:, :half], self.sin[:, half:]], dim=-1)
        self.roll_rope = not self.rotary_interleaved and self.sin.shape[-1] == self.head_dim
        out_w = self.lm.shared_embedding_or_output_weight() if self.lm.share_embeddings_and_output_weights else None
        self._output_weight = out_w

    # -- model pieces ----------------------------------------------------------
    def _no_dispatch(self):
        """Torch-function dispatch off for the LM layers at TP=1.

        Nothing there allocates on a device other than the model's, so an active
        TorchFunctionMode (the runtime's CPU emulation) is pure per-op overhead
        (~10% of a decode step). The vision encoder (megatron's attention buffer)
        and TP>1 gathers allocate on "the current CUDA device" and keep it.
        """
        return runtime.emulation_paused() if self.tp_size == 1 else contextlib.nullcontext()

    def _rope(self, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Megatron's RoPE formula (t * cos + rotate_half(t) * sin) at per-row positions."""
        if self.roll_rope:  # sin is the signed table here
            return t * cos + t.roll(t.shape[-1] // 2, dims=-1) * sin
        rot = cos.shape[-1]
        if rot == t.shape[-1]:
            return t * cos + mcore_compat.rotate_half(t, self.rotary_interleaved) * sin
        t, rest = t[..., :rot], t[..., rot:]
        return torch.cat((t * cos + mcore_compat.rotate_half(t, self.rotary_interleaved) * sin, rest), dim=-1)

    def _layers(self, hidden: torch.Tensor, positions: torch.Tensor, cache: KVCache,
                attn_mask: Optional[torch.Tensor], is_causal: bool) -> torch.Tensor:
        """hidden [s, r, h] at `positions` [r, s]; appends to `cache`; returns final hidden [s, r, h]."""
        with self._no_dispatch():
            return self._layers_impl(hidden, positions, cache, attn_mask, is_causal)

    def _layers_impl(self, hidden, positions, cache, attn_mask, is_causal):
        s = hidden.shape[0]
        cos = self.cos[positions].transpose(0, 1).unsqueeze(2)  # [s, r, 1, d]
        sin = (self.sin_signed if self.roll_rope else self.sin)[positions].transpose(0, 1).unsqueeze(2)
        upto = cache.length + s
        for i, layer in enumerate(self.layers):
            attn = layer.self_attention
            x = layer.input_layernorm(hidden)
            q, k, v = attn.get_query_key_value_tensors(x)  # [s, r, heads, d]
            q = self._rope(q, cos, sin).permute(1, 2, 0, 3)
            k = self._rope(k, cos, sin).permute(1, 2, 0, 3)
            cache.write(i, k, v.permute(1, 2, 0, 3))
            keys, values = cache.view(i, upto)
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask, is_causal=is_causal,
                                               scale=self.softmax_scale, enable_gqa=True)
            o = o.permute(2, 0, 1, 3).reshape(s, o.shape[0], -1)
            out, bias = attn.linear_proj(o)
            hidden = hidden + (out if bias is None else out + bias)
            out, bias = layer.mlp(layer.pre_mlp_layernorm(hidden))
            hidden = hidden + (out if bias is None else out + bias)
        return hidden

    def _logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """hidden [1, r, h] -> float logits [r, vocab] (padding entries of the vocab dropped)."""
        h = self.lm.decoder.final_layernorm(hidden_last)
        logits, _ = self.lm.output_layer(h, weight=self._output_weight, runtime_gather_output=True)
        return logits[0, :, : self.vocab_size].float()

    # -- prefill / decode --------------------------------------------------------
    def prefill(self, prompts: Sequence[Prompt], capacity: int) -> tuple[KVCache, torch.Tensor, list[int]]:
        """Run the prompts once; returns (cache, last-token logits [B, V], expanded lengths)."""
        expanded, images, sizes = [], [], []
        for i, p in enumerate(prompts):
            ids = expanded_ids(self.model, p)
            need = _views(self.model, p)
            have = 0 if p.images is None else p.images.shape[0]
            if need != have:
                raise ValueError(f"prompt {i} ({p.key}) has {_num_images(p.tokens, self.image_token_id)} image "
                                 f"tokens, which take {need} image views, but {have} are given")
            if not ids:
                raise ValueError(f"prompt {i} ({p.key}) is empty")
            if len(ids) >= self.context_length:
                raise PromptTooLong(f"prompt {p.key!r} has {len(ids)} tokens (images expanded); "
                                    f"the context is {self.context_length}")
            expanded.append(ids)
            if have:
                images.append(p.images)
                if p.image_sizes is not None:
                    sizes.append(p.image_sizes)
        lengths = [len(x) for x in expanded]
        B, S = len(expanded), max(lengths)
        ids = torch.full((B, S), self.pad_id, dtype=torch.long)
        valid = torch.zeros(B, S, dtype=torch.bool)
        for b, x in enumerate(expanded):
            ids[b, S - len(x):] = torch.tensor(x, dtype=torch.long)
            valid[b, S - len(x):] = True
        positions = (torch.arange(S)[None] - (S - torch.tensor(lengths))[:, None]).clamp_(min=0)
        ids, valid, positions = ids.to(self.device), valid.to(self.device), positions.to(self.device)
        img = torch.cat(images).to(self.device, self.dtype) if images else None
        img_sizes = torch.cat(sizes) if sizes and self.model.tiling is not None else None
        cache = KVCache(len(self.layers), B, self.groups, capacity, self.head_dim, self.dtype, self.device)
        hidden = self.model.embed(ids, positions, img, img_sizes)  # [S, B, h]
        if bool(valid.all()):
            mask, causal = None, True
        else:  # causal over real tokens; a pad position attends to itself only (stays finite)
            tri = torch.ones(S, S, dtype=torch.bool, device=self.device).tril()
            mask = (tri[None] & valid[:, None, :]) | torch.eye(S, dtype=torch.bool, device=self.device)[None]
            mask, causal = mask[:, None], False
        hidden = self._layers(hidden, positions, cache, mask, causal)
        cache.mark(valid)
        with self._no_dispatch():
            return cache, self._logits(hidden[-1:]), lengths

    def decode_step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """tokens [r] at positions [r] -> logits [r, V]; appends one slot to the cache."""
        with self._no_dispatch():
            return self._decode_step(tokens, positions, cache)

    def _decode_step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        hidden = self.lm.embedding(input_ids=tokens[:, None], position_ids=positions[:, None])  # [1, r, h]
        mask = None
        if cache.any_padding:  # additive mask, built once per step for all layers
            mask = torch.zeros(cache.rows, 1, 1, cache.length + 1, dtype=self.dtype, device=self.device)
            mask[:, 0, 0, : cache.length].masked_fill_(~cache.valid[:, : cache.length], float("-inf"))
        hidden = self._layers_impl(hidden, positions[:, None], cache, mask, False)
        cache.mark(torch.ones(cache.rows, 1, dtype=torch.bool, device=self.device))
        return self._logits(hidden)

    # -- the loop ----------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams = GREEDY, num_candidates: int = 1,
                 max_new_tokens: int = 256, stop_token_ids: Sequence[int] = (), seed: int = 0,
                 share_greedy: bool = True, min_new_tokens: int = 0) -> Generation:
        """N candidates per prompt. With greedy sampling and `share_greedy`, one row per prompt is
        decoded and copied N times (every greedy candidate is the same sequence)."""
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        if not prompts:
            return Generation([], [], [])
        with torch.inference_mode():
            return self._generate(prompts, sampling, num_candidates, max_new_tokens, stop_token_ids, seed,
                                  share_greedy, min_new_tokens)

    def _generate(self, prompts, sampling, num_candidates, max_new_tokens, stop_token_ids, seed, share_greedy,
                  min_new_tokens) -> Generation:
        n_rows_per = 1 if (sampling.greedy and share_greedy) else num_candidates
        B = len(prompts)
        longest = max(len(expanded_ids(self.model, p)) for p in prompts)
        capacity = longest + max_new_tokens
        cache, logits, lengths = self.prefill(prompts, capacity)
        if n_rows_per > 1:
            cache = cache.replicate(n_rows_per)
            logits = logits.repeat_interleave(n_rows_per, dim=0)
        R = B * n_rows_per
        seeds = None if sampling.greedy else [row_seed(seed, p.key, j) for p in prompts for j in range(n_rows_per)]
        sampler = RowSampler(sampling, seeds)
        stop_set = set(int(t) for t in stop_token_ids)
        stop_idx = torch.tensor(sorted(stop_set), dtype=torch.long, device=self.device)
        lens = torch.tensor(lengths, dtype=torch.long).repeat_interleave(n_rows_per)
        limit = torch.clamp(self.context_length - lens, max=max_new_tokens).tolist()  # new tokens per row
        rows = list(range(R))  # original row of each active row
        outputs: list[list[int]] = [[] for _ in range(R)]
        finish = ["length"] * R
        done = [False] * R  # per active row
        positions = lens.to(self.device)
        step = 0
        while True:
            if step < min_new_tokens and stop_set:
                logits[:, stop_idx] = float("-inf")
            tok = sampler(logits)
            for j, (r, t) in enumerate(zip(rows, tok.tolist())):
                if done[j]:
                    continue
                if t in stop_set:
                    done[j], finish[r] = True, "stop"
                    continue
                out = outputs[r]
                out.append(t)
                if len(out) >= limit[r]:
                    done[j] = True
            step += 1
            n_done = sum(done)
            if n_done == len(rows):
                break
            if n_done and n_done >= self.compact_fraction * len(rows):
                keep = [j for j in range(len(rows)) if not done[j]]
                cache.select(keep)
                sampler.select(keep)
                rows = [rows[j] for j in keep]
                idx = torch.tensor(keep, dtype=torch.long, device=self.device)
                tok, positions, done = tok[idx], positions[idx], [False] * len(keep)
            logits = self.decode_step(tok, positions, cache)
            # finished rows still in the batch may run past the context: keep their index valid
            positions = (positions + 1).clamp_(max=self.context_length - 1)
        tokens, fin = [], []
        for b in range(B):
            sl = slice(b * n_rows_per, (b + 1) * n_rows_per)
            outs, fs = outputs[sl], finish[sl]
            if n_rows_per == 1 and num_candidates > 1:
                outs, fs = [list(outs[0]) for _ in range(num_candidates)], fs * num_candidates
            tokens.append(outs)
            fin.append(fs)
        return Generation(tokens, fin, lengths)


@torch.inference_mode()
def reference_greedy(model, prompt: Prompt, max_new_tokens: int, stop_token_ids: Sequence[int] = ()) -> list[int]:
    """Greedy tokens by recomputing the full forward (no cache) for every new token; slow, for checks."""
    ids = expanded_ids(model, prompt)
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    vocab = model.args.language.vocab_size
    images = None if prompt.images is None else prompt.images.to(dev, dtype)
    sizes = None if prompt.image_sizes is None else prompt.image_sizes.to(dev)
    out: list[int] = []
    limit = min(max_new_tokens, model.args.language.max_position_embeddings - len(ids))
    while len(out) < limit:
        x = torch.tensor([ids + out], dtype=torch.long, device=dev)
        s = x.shape[1]
        mask = ~torch.ones(s, s, dtype=torch.bool, device=dev).tril()[None, None]
        logits = model(x, attention_mask=mask, images=images, image_sizes=sizes)
        t = int(logits[0, -1, :vocab].argmax())
        if t in stop_token_ids:
            break
        out.append(t)
    return out
