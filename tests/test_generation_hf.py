"""Greedy tokens of our engine == transformers' LlavaForConditionalGeneration.generate, same weights.

A random checkpoint of this project is exported with the conversion
exporter (megatron-to-hf) and loaded by transformers; both sides run in
float64 (no near-tie of two logits can flip an argmax). Our prompts are
batched with left padding; HF runs each prompt alone.
"""
import torch

from megatron_sicog.generation.engine import Engine, Prompt, expand_prompt
from megatron_sicog.generation.sampling import GREEDY


def test_engine_greedy_equals_hf_generate(mcore, tmp_path):
    from transformers import LlavaForConditionalGeneration

    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.model import sharding
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.model.presets import PRESETS
    from megatron_sicog.training.checkpointing import write_from_canonical

    args = PRESETS["tiny"].replace(init_method_std=0.05)
    torch.manual_seed(3)
    model = build_model(args).eval()
    full = sharding.gather_full_state_dict(model, args.language.vocab_size)
    write_from_canonical(full, args, tmp_path / "ckpt", tp=1, pp=1)
    export_hf(tmp_path / "ckpt", tmp_path / "hf", progress=False)
    hf = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "hf")).eval().to(torch.float64)
    model = model.to(torch.float64)

    g = torch.Generator().manual_seed(0)
    prompts = []
    for i, L in enumerate([6, 15, 10]):
        t = torch.randint(10, args.language.vocab_size, (L,), generator=g).tolist()
        t = t[:2] + [args.image_token_id] + t[2:]
        prompts.append(Prompt(t, torch.randn(1, 3, 64, 64, generator=g, dtype=torch.float64), key=str(i)))
    T = 16
    ours = Engine(model).generate(prompts, GREEDY, num_candidates=2, max_new_tokens=T, share_greedy=False)
    for p, cands in zip(prompts, ours.tokens):
        ids = torch.tensor([expand_prompt(p.tokens, args.image_token_id, model.num_image_tokens)])
        with torch.inference_mode():
            out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=p.images,
                              do_sample=False, max_new_tokens=T, min_new_tokens=T, eos_token_id=None,
                              pad_token_id=0)
        ref = out[0, ids.shape[1]:].tolist()
        assert len(ref) == T
        assert cands == [ref, ref]
