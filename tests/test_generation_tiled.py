"""KV-cache generation with tiled images (LLaVA-NeXT): prompts of one batch whose images expand to
different token counts.

A tiny random ``LlavaNextForConditionalGeneration`` (CLIP + Qwen2, 32 px tiles, LLaVA-NeXT's five
grids; `tests.conversion_helpers`) is imported at TP=1 and run in float64 on both sides (no near-tie
of two logits can flip an argmax). Prompts hold non-square images of several aspect ratios (grids
1x3, 3x1, 2x2; one prompt with two images, one without), batched with left padding. The engine's
greedy tokens (candidates as separate rows of a replicated cache) equal the no-cache recomputation
and transformers' ``generate`` on each prompt alone. ``tools/generate_candidates.py`` on that
checkpoint reads the tiling from it and tiles each image file as the batch builder tiles the
dataset's stored bytes (its greedy captions equal transformers' on those views); tiling flags that
disagree with the checkpoint are refused.
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
    return model.to(torch.float64), hf, d


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


def _hf_greedy(hf, model, p: Prompt, eos=None) -> list[int]:
    ids = torch.tensor([expanded_ids(model, p)])
    kw = {}
    if p.images is not None:  # views regrouped per image, zero-padded to the most views, as the processor does
        views = list(p.images.split([model.tiling.num_views(h, w) for h, w in p.image_sizes.tolist()]))
        most = max(v.shape[0] for v in views)
        kw = dict(pixel_values=torch.stack([torch.cat([v, v.new_zeros(most - v.shape[0], *v.shape[1:])])
                                            for v in views]), image_sizes=p.image_sizes)
    with torch.inference_mode():
        out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=T,
                          min_new_tokens=0 if eos is not None else T, eos_token_id=eos, pad_token_id=0, **kw)
    new = out[0, ids.shape[1]:].tolist()
    return new[:new.index(eos)] if eos in new else new


def test_tiled_greedy_equals_no_cache_and_llava_next_generate(tiled):
    model, hf, _ = tiled
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
    model, _, _ = tiled
    p = _prompts(model)[0]
    with pytest.raises(ValueError, match="image sizes"):
        Engine(model).generate([Prompt(p.tokens, p.images, key="nosizes")], GREEDY, max_new_tokens=2)
    wrong = Prompt(p.tokens, p.images[:-1], key="views", image_sizes=p.image_sizes)  # one view short
    with pytest.raises(ValueError, match="image views"):
        Engine(model).generate([wrong], GREEDY, max_new_tokens=2)


def test_generate_candidates_tool_tiles_like_the_dataset(tiled, tmp_path):
    from PIL import Image

    from megatron_sicog.data.chat_template import encode_prompt
    from megatron_sicog.data.tiling import tiling_for
    from megatron_sicog.data.tokenizer import build_tokenizer
    from megatron_sicog.guards import UsageError
    from megatron_sicog.model.batch import collate
    from tests.conversion_helpers import EOS_TOKEN
    from tests.helpers import load_tool

    model, hf, d = tiled
    rng = np.random.default_rng(4)
    root = tmp_path / "images"
    root.mkdir()
    for k, (h, w) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"im{k}.png")
    out = tmp_path / "cands.jsonl"
    common = ["--hf-path", str(d / "hf"), "--image-root", str(root), "--mode", "caption", "--chat-template",
              "plain", "--temperature", "0", "--num-candidates", "1", "--max-new-tokens", str(T), "--no-progress"]
    tool = load_tool("generate_candidates")
    tool.main(common + ["--output", str(out)])
    recs = [__import__("json").loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["image"] for r in recs) == [f"im{k}.png" for k in range(len(SIZES))]

    tok = build_tokenizer("HuggingFaceTokenizer", str(d / "hf"))
    tiling = tiling_for(model.args.vision)
    for r in recs:
        tokens = np.asarray(encode_prompt(tok, [{"from": "human", "value": r["prompt"]}], "plain"))
        # the dataset stores the source bytes; the batch builder tiles them at load time
        sample = {"tokens": tokens, "loss_mask": np.zeros(len(tokens), np.float32),
                  "images": [np.frombuffer((root / r["image"]).read_bytes(), dtype=np.uint8)]}
        batch = collate([sample], seq_length=200, image_token_id=IMAGE_TOKEN,
                        num_image_tokens=model.num_image_tokens, pad_id=0, tiling=tiling)
        p = Prompt(tokens.tolist(), batch.images.to(torch.float64), key=r["id"], image_sizes=batch.image_sizes)
        assert r["candidates"] == [tok.detokenize(_hf_greedy(hf, model, p, eos=EOS_TOKEN))], r["image"]

    for flags in (["--use-tiling", "--max-num-tiles", "4", "--use-thumbnail"], ["--use-tiling"]):
        with pytest.raises(UsageError, match="max-num-tiles"):
            tool.main(common + ["--output", str(tmp_path / "x.jsonl")] + flags)
