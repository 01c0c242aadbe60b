"""KV-cache engine: greedy tokens equal a no-cache recomputation; batching and stops."""
import pytest
import torch

from megatron_sicog.generation.engine import Engine, Prompt, PromptTooLong, reference_greedy
from megatron_sicog.generation.sampling import GREEDY, SamplingParams


IMAGE_SIZE = 32


def small_args(init_method_std=0.02):
    """A small shape (GQA: 4 heads, 2 groups; QKV bias; 4 image patches) that keeps the tests quick."""
    from megatron_sicog.model.presets import LanguageArgs, ModelArgs, VisionArgs

    return ModelArgs(
        language=LanguageArgs(num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
                              ffn_hidden_size=128, vocab_size=500, max_position_embeddings=128),
        vision=VisionArgs(image_size=IMAGE_SIZE, patch_size=16, num_layers=1, hidden_size=32,
                          num_attention_heads=2, ffn_hidden_size=64),
        image_token_id=3, init_method_std=init_method_std)


@pytest.fixture(scope="module")
def model64(mcore):
    from megatron_sicog.model.llava import build_model

    torch.manual_seed(0)
    # float64: the cache path and the full recomputation round differently in fp32;
    # in fp64 any mismatch is a real bug, not a near-tie of two logits
    return build_model(small_args(0.05)).eval().to(torch.float64)


def _prompts(model, lengths, with_image, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (L, img) in enumerate(zip(lengths, with_image)):
        t = torch.randint(10, 500, (L,), generator=g).tolist()
        images = None
        if img:
            t = t[:2] + [model.image_token_id] + t[2:]
            images = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g, dtype=torch.float64)
        out.append(Prompt(t, images, key=f"p{i}"))
    return out


def test_greedy_equals_no_cache_recomputation(model64):
    prompts = _prompts(model64, [5, 13, 21, 9], [True, False, True, True])
    engine = Engine(model64)
    refs = [reference_greedy(model64, p, 16) for p in prompts]
    assert all(len(r) == 16 for r in refs)
    # candidates decoded as separate rows from a replicated cache, prompts left-padded
    out = engine.generate(prompts, GREEDY, num_candidates=3, max_new_tokens=16, share_greedy=False)
    for cands, ref in zip(out.tokens, refs):
        assert len(cands) == 3
        assert all(c == ref for c in cands)
    # greedy shortcut (one row per prompt, copied) gives the same
    shared = engine.generate(prompts, GREEDY, num_candidates=3, max_new_tokens=16)
    assert shared.tokens == out.tokens
    # each prompt alone (no padding) equals the batched result
    for p, ref in zip(prompts, refs):
        assert engine.generate([p], GREEDY, max_new_tokens=16).tokens[0][0] == ref


def test_float32_greedy_equals_no_cache(mcore):
    from megatron_sicog.model.llava import build_model

    torch.manual_seed(1)
    m = build_model(small_args(0.2)).eval()  # sharper logits: no near-ties
    prompts = _prompts(m, [7, 12], [True, False], seed=3)
    for p in prompts:
        p.images = None if p.images is None else p.images.float()
    out = Engine(m).generate(prompts, GREEDY, num_candidates=2, max_new_tokens=12, share_greedy=False)
    for p, cands in zip(prompts, out.tokens):
        ref = reference_greedy(m, p, 12)
        assert cands == [ref, ref]


def test_stop_tokens_end_each_candidate_and_rows_leave_the_batch(model64):
    prompts = _prompts(model64, [6, 11, 8], [True, True, False], seed=5)
    refs = [reference_greedy(model64, p, 12) for p in prompts]
    stop = refs[0][4]  # the first prompt stops before its 5th token
    out = Engine(model64, compact_fraction=0.1).generate(prompts, GREEDY, num_candidates=2, max_new_tokens=12,
                                                          stop_token_ids=[stop], share_greedy=False)
    for ref, cands, fin in zip(refs, out.tokens, out.finish):
        expect = ref[: ref.index(stop)] if stop in ref else ref
        assert cands == [expect, expect]
        assert fin == (["stop"] * 2 if stop in ref else ["length"] * 2)


def test_sampling_is_per_row_seeded_and_batch_independent(model64):
    prompts = _prompts(model64, [5, 10, 7], [True, False, True], seed=7)
    engine = Engine(model64)
    sp = SamplingParams(temperature=0.9, top_p=0.95, top_k=50)
    a = engine.generate(prompts, sp, num_candidates=4, max_new_tokens=6, seed=11)
    b = engine.generate(prompts, sp, num_candidates=4, max_new_tokens=6, seed=11)
    assert a.tokens == b.tokens
    assert len({tuple(c) for c in a.tokens[0]}) > 1  # candidates differ
    alone = engine.generate(prompts[1:2], sp, num_candidates=4, max_new_tokens=6, seed=11)
    assert alone.tokens[0] == a.tokens[1]  # same prompt key + seed -> same candidates in any batch
    c = engine.generate(prompts, sp, num_candidates=4, max_new_tokens=6, seed=12)
    assert c.tokens != a.tokens


def test_prompt_longer_than_context_is_rejected(model64):
    L = model64.args.language.max_position_embeddings
    with pytest.raises(PromptTooLong):
        Engine(model64).generate([Prompt(list(range(10, 10 + L)), None, "long")], GREEDY, max_new_tokens=2)


def test_mismatched_images_are_rejected(model64):
    p = Prompt([5, model64.image_token_id, 6], None, "noimg")
    with pytest.raises(ValueError, match="image tokens"):
        Engine(model64).generate([p], GREEDY, max_new_tokens=2)
