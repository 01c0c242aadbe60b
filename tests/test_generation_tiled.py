"""KV-cache generation with tiled images (LLaVA-NeXT): prompts of one batch whose images expand to
different token counts.

A tiny random ``LlavaNextForConditionalGeneration`` (CLIP + Qwen2, 32 px tiles, LLaVA-NeXT's five
grids; `tests.conversion_helpers`) is imported at TP=1 and run in float64 on both sides (no near-tie
of two logits can flip an argmax). Prompts hold non-square images of several aspect ratios (grids
1x3, 3x1, 2x2; one prompt with two images, one without), batched with left padding. The engine's
greedy tokens (candidates as separate rows of a replicated cache) equal the no-cache recomputation
and transformers' ``generate`` on each prompt alone.
"""
import numpy as np
import pytest
import torch

from megatron_sicog.generation.engine import Engine, Prompt, expanded_ids, reference_greedy
from megatron_sicog.generation.sampling import GREEDY
from tests.conversion_helpers import IMAGE_TOKEN, VOCAB, make_hf_llava_next

SIZES = [(40, 117), (150, 47), (61, 83)]  # (height, width): grids 1x3, 3x1, 2x2
T = 10


@pytest.fixture(scope="module")
def tiled(mcore, tmp_path_factory):
    from megatron_sicog.conversion.hf_import import import_hf
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.training.checkpointing import load_model_weights, model_args_from_dict, read_meta

    d = tmp_path_factory.mktemp("tiled_gen")
    hf = make_hf_llava_next("qwen2", d / "hf").to(torch.float64)
    ckpt = import_hf(d / "ckpt", 1, 1, hf_path=d / "hf", progress=False)
    args = model_args_from_dict(read_meta(ckpt)["model_args"])
    model = build_model(args).eval()
    load_model_weights(model, ckpt)
    return model.to(torch.float64), hf


def _prompts(model):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]

    def text(n):
        return [int(t) for t in rng.integers(10, VOCAB, n)]
    rows = [(text(3) + [IMAGE_TOKEN] + text(4), [imgs[0]]),
            (text(2) + [IMAGE_TOKEN] + text(9), [imgs[1]]),
            (text(6), []),
            (text(1) + [IMAGE_TOKEN] + text(2) + [IMAGE_TOKEN] + text(3), [imgs[2], imgs[0]])]
    out = []
    for i, (tokens, images) in enumerate(rows):
        pixels = sizes = None
        if images:
            pixels, sizes = _tile(model, images)
        out.append(Prompt(tokens, pixels, key=f"p{i}", image_sizes=sizes))
    return out


def _tile(model, images):
    from megatron_sicog.data.tiling import tiling_for

    pixels, sizes = tiling_for(model.args.vision)(images)
    return pixels.to(torch.float64), sizes


def _hf_greedy(hf, model, p: Prompt) -> list[int]:
    ids = torch.tensor([expanded_ids(model, p)])
    kw = {}
    if p.images is not None:  # views regrouped per image, zero-padded to the most views, as the processor does
        views = list(p.images.split([model.tiling.num_views(h, w) for h, w in p.image_sizes.tolist()]))
        most = max(v.shape[0] for v in views)
        kw = dict(pixel_values=torch.stack([torch.cat([v, v.new_zeros(most - v.shape[0], *v.shape[1:])])
                                            for v in views]), image_sizes=p.image_sizes)
    with torch.inference_mode():
        out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=T,
                          min_new_tokens=T, eos_token_id=None, pad_token_id=0, **kw)
    return out[0, ids.shape[1]:].tolist()


def test_tiled_greedy_equals_no_cache_and_llava_next_generate(tiled):
    model, hf = tiled
    prompts = _prompts(model)
    counts = [expanded_ids(model, p).count(IMAGE_TOKEN) for p in prompts]
    assert len(set(counts)) == len(counts)  # every prompt expands to its own number of image positions
    out = Engine(model).generate(prompts, GREEDY, num_candidates=2, max_new_tokens=T, share_greedy=False)
    assert out.prompt_lengths == [len(expanded_ids(model, p)) for p in prompts]
    for p, cands in zip(prompts, out.tokens):
        ref = reference_greedy(model, p, T)
        assert len(ref) == T
        assert cands == [ref, ref], p.key
        assert _hf_greedy(hf, model, p) == ref, p.key
    assert len({tuple(c[0]) for c in out.tokens}) > 1  # the prompts do not all give one sequence


def test_tiled_prompt_without_image_sizes_is_refused(tiled):
    model, _ = tiled
    p = _prompts(model)[0]
    with pytest.raises(ValueError, match="image sizes"):
        Engine(model).generate([Prompt(p.tokens, p.images, key="nosizes")], GREEDY, max_new_tokens=2)
    wrong = Prompt(p.tokens, p.images[:-1], key="views", image_sizes=p.image_sizes)  # one view short
    with pytest.raises(ValueError, match="image views"):
        Engine(model).generate([wrong], GREEDY, max_new_tokens=2)
