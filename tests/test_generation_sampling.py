"""Sampling statistics: top-k / top-p exclude what they must; seeded draws repeat."""
import math

import pytest
import torch

from megatron_sicog.generation.sampling import RowSampler, SamplingParams, filter_logits, row_seed


def _logits(probs):
    return torch.log(torch.tensor([probs], dtype=torch.float32))


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.5, 0.7, 3.0]])
    out = filter_logits(logits, top_k=3)
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [1, 3, 5]
    assert torch.equal(out[0, [1, 3, 5]], logits[0, [1, 3, 5]])


@pytest.mark.parametrize("top_p,kept", [(0.4, [0]), (0.7, [0, 1]), (0.85, [0, 1, 2]), (1.0, [0, 1, 2, 3])])
def test_top_p_keeps_the_smallest_nucleus(top_p, kept):
    # probabilities 0.5, 0.3, 0.15, 0.05 in a shuffled order
    order = [2, 0, 3, 1]
    probs = [0.0] * 4
    for rank, tok in enumerate(order):
        probs[tok] = [0.5, 0.3, 0.15, 0.05][rank]
    out = filter_logits(_logits(probs), top_p=top_p)
    finite = sorted(torch.isfinite(out[0]).nonzero().flatten().tolist())
    assert finite == sorted(order[i] for i in kept)


def _draw(sampler, logits, n):
    return torch.stack([sampler(logits) for _ in range(n)]).flatten()


def test_sampled_frequencies_follow_the_filtered_distribution():
    probs = [0.4, 0.25, 0.2, 0.1, 0.05]
    sp = SamplingParams(temperature=1.0, top_p=0.8, top_k=0)  # nucleus = tokens 0, 1, 2
    draws = _draw(RowSampler(sp, [123]), _logits(probs), 4000)
    counts = torch.bincount(draws, minlength=5).tolist()
    assert counts[3] == counts[4] == 0
    z = 0.4 + 0.25 + 0.2
    for tok in range(3):
        expect = probs[tok] / z
        assert abs(counts[tok] / 4000 - expect) < 4 * math.sqrt(expect * (1 - expect) / 4000) + 0.005


def test_top_k_excludes_and_temperature_sharpens():
    probs = [0.3, 0.3, 0.2, 0.2]
    draws = _draw(RowSampler(SamplingParams(1.0, 1.0, 2), [5]), _logits(probs), 1000)
    assert set(draws.tolist()) <= {0, 1}
    cold = _draw(RowSampler(SamplingParams(0.05, 1.0, 0), [5]), _logits([0.5, 0.3, 0.2]), 500)
    assert (cold == 0).float().mean() > 0.99


def test_seeded_rows_repeat_and_differ():
    sp = SamplingParams(0.8, 0.95, 0)
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    seeds = [row_seed(7, "rec-1", j) for j in range(3)]
    a = _draw(RowSampler(sp, seeds), logits, 20)
    b = _draw(RowSampler(sp, seeds), logits, 20)
    assert torch.equal(a, b)
    c = _draw(RowSampler(sp, [row_seed(8, "rec-1", j) for j in range(3)]), logits, 20)
    assert not torch.equal(a, c)
    assert row_seed(7, "rec-1", 0) != row_seed(7, "rec-1", 1) != row_seed(7, "rec-2", 1)


def test_greedy_is_argmax_and_params_validate():
    logits = torch.randn(4, 30)
    assert torch.equal(RowSampler(SamplingParams(0.0, 1.0, 0))(logits), logits.argmax(-1))
    for bad in (dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-2)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


@pytest.mark.parametrize("top_k,top_p", [(0, 0.9), (20, 1.0), (20, 0.7), (0, 0.3)])
def test_sample_then_check_equals_filter_then_sample(top_k, top_p):
    """The fast path (filter only the winner) draws exactly what filtering everything first draws."""
    from megatron_sicog.generation.sampling import kept

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 200, generator=g) * 2.0
    logits[:8, :5] = 4.0  # ties at the top
    sp = SamplingParams(0.8, top_p, top_k)
    seeds = list(range(64))
    fast = RowSampler(sp, seeds)(logits)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    scaled = logits / 0.8
    u = torch.stack([torch.rand(200, generator=gg) for gg in gens])
    gumbel = -torch.log(-torch.log(u.clamp(min=1e-20, max=1.0 - 1e-7)))
    slow = (filter_logits(scaled, top_k, top_p) + gumbel).argmax(-1)
    assert torch.equal(fast, slow)
    # `kept` agrees with filter_logits on every token
    filt = filter_logits(scaled, top_k, top_p)
    for tok in range(0, 200, 7):
        t = torch.full((64,), tok)
        assert torch.equal(kept(scaled, t, top_k, top_p), torch.isfinite(filt[:, tok]))
