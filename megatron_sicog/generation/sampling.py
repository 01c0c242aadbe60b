"""Token sampling: temperature, top-k, top-p (nucleus), greedy; seeded per row.

`SamplingParams` holds the knobs (Megatron/HF names: ``temperature``,
``top_k``, ``top_p``); ``temperature == 0`` means greedy (argmax).

`filter_logits(logits, top_k, top_p)` masks (to -inf) every token that top-k
or top-p excludes, in Hugging Face's order (temperature, then top-k, then
top-p): top-k keeps the k largest logits (ties at the k-th value kept);
top-p keeps the smallest set of most-likely tokens whose probability reaches
``top_p`` (always at least one).

`RowSampler` draws one token per row with the Gumbel-max trick: each row owns
a ``torch.Generator`` seeded from (seed, prompt key, candidate index), and
``argmax(logits / T + Gumbel noise)`` over the kept tokens is an exact sample
of the filtered softmax. A row's tokens therefore depend only on its own seed
and logits -- not on which other prompts share its batch, the batch size, the
shard, or a resume -- so a fixed ``--seed`` reproduces every candidate.

Sample first, filter only when needed: if the argmax over *all* tokens is a
kept token, it is also the argmax over the kept tokens (same noise), so the
filter is only evaluated for that one token per row -- O(vocab) compares
instead of a vocab sort. Only rows whose unfiltered winner is excluded (about
1 - top_p of them) go through the sorting `filter_logits`. Both paths keep
exactly the same set: ties at the cut are kept (top-k keeps every token equal
to the k-th logit; top-p keeps token i iff the mass of strictly more likely
tokens is below top_p).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.9  # 1.0 = off
    top_k: int = 0  # 0 = off

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top-k must be >= 0, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)


def row_seed(seed: int, key: str, index: int) -> int:
    """A 63-bit seed for candidate `index` of the prompt named `key` (stable across runs/machines)."""
    h = hashlib.blake2b(f"{seed}\x00{key}\x00{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Logits [r, v] with tokens excluded by top-k / top-p set to -inf (a new tensor)."""
    out = logits.clone()
    v = out.shape[-1]
    if top_k and top_k < v:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out.masked_fill_(out < kth, float("-inf"))
    if top_p < 1.0:
        probs = torch.softmax(out, dim=-1)
        sorted_probs = torch.sort(probs, dim=-1, descending=True).values
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of more likely tokens
        keep_sorted = before < top_p
        keep_sorted[..., 0] = True  # always keep the most likely token
        # the least likely kept probability; ties with it are kept too
        cut = sorted_probs.masked_fill(~keep_sorted, float("inf")).min(dim=-1, keepdim=True).values
        out.masked_fill_(probs < cut, float("-inf"))
    return out


def kept(logits: torch.Tensor, tokens: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Whether `tokens` [r] survive `filter_logits(logits, top_k, top_p)`, in O(r * vocab) without sorting."""
    ok = torch.ones(tokens.shape[0], dtype=torch.bool, device=logits.device)
    chosen = logits.gather(-1, tokens[:, None])  # [r, 1]
    higher = logits > chosen
    v = logits.shape[-1]
    if top_k and top_k < v:
        ok &= higher.sum(-1) < top_k
    if top_p < 1.0:
        probs = torch.softmax(logits, dim=-1)
        if top_k and top_k < v:
            kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
            probs = probs * (logits >= kth)
            probs = probs / probs.sum(-1, keepdim=True)
        mass_above = (probs * higher).sum(-1)
        ok &= (mass_above < top_p) | ~higher.any(-1)
    return ok


class RowSampler:
    """Per-row seeded sampling; rows can be dropped (`select`) as they finish."""

    def __init__(self, params: SamplingParams, seeds: Optional[Sequence[int]] = None):
        self.params = params
        self.generators: list[torch.Generator] = []
        if not params.greedy:
            if seeds is None:
                raise ValueError("sampling needs one seed per row")
            for s in seeds:
                g = torch.Generator()
                g.manual_seed(int(s))
                self.generators.append(g)

    def select(self, keep: Sequence[int]) -> None:
        if self.generators:
            self.generators = [self.generators[i] for i in keep]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """One token id per row of logits [r, v] (float) -> [r] int64."""
        p = self.params
        if p.greedy:
            return logits.argmax(dim=-1)
        if len(self.generators) != logits.shape[0]:
            raise ValueError(f"{logits.shape[0]} rows but {len(self.generators)} generators")
        scaled = logits.float() / p.temperature
        v = scaled.shape[-1]
        u = torch.stack([torch.rand(v, generator=g) for g in self.generators]).to(scaled.device)
        gumbel = -torch.log(-torch.log(u.clamp_(min=1e-20, max=1.0 - 1e-7)))
        tokens = (scaled + gumbel).argmax(dim=-1)
        if p.top_k or p.top_p < 1.0:
            bad = (~kept(scaled, tokens, p.top_k, p.top_p)).nonzero().flatten()
            if bad.numel():  # the unfiltered winner is excluded: redo these rows on the filtered logits
                filtered = filter_logits(scaled[bad], p.top_k, p.top_p)
                tokens[bad] = (filtered + gumbel[bad]).argmax(dim=-1)
        return tokens
