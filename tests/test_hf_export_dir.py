"""megatron-to-hf writes a complete HF directory for a SentencePiece-tokenized checkpoint (the demo's kind).

The exported directory loads with ``AutoProcessor`` + ``LlavaForConditionalGeneration`` and, given the
chat messages and the image, answers greedily exactly as the project's engine does with its own tokenizer,
chat template and image preprocessing (float64 both sides). Images of three aspect ratios.
"""
import numpy as np
import pytest
import torch

from megatron_sicog.data.chat_template import TEMPLATES, encode_prompt
from megatron_sicog.data.tokenizer import build_tokenizer
from megatron_sicog.data.toy import make_sentencepiece, toy_texts

QUESTIONS = ["What colour is the cat?", "Describe the image.", "How many dogs are there?"]
SHAPES = [(40, 90), (64, 64), (100, 30)]  # H x W


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    return make_sentencepiece(toy_texts(300, seed=1) + QUESTIONS, tmp_path_factory.mktemp("sp") / "sp", 400)


def test_sentencepiece_as_hf_tokenizer_same_ids(sp_model):
    from megatron_sicog.conversion.hf_tokenizer import chat_template_jinja, sentencepiece_to_hf

    sp = build_tokenizer("SentencePieceTokenizer", sp_model)
    hf = sentencepiece_to_hf(sp_model)
    assert len(hf) == sp.vocab_size and hf.eos_token_id == sp.eod and hf.pad_token_id == sp.pad
    texts = toy_texts(100, seed=7) + ["Two  cats\tand 17 dogs.\nÜber é! \u65e5\u672c", "  x", "a<image>b<|im_end|>"]
    for t in texts:
        assert hf(t, add_special_tokens=False)["input_ids"] == sp.tokenize(t), t
        assert hf.decode(sp.tokenize(t)) == t
    conv = [{"from": "human", "value": "<image>\nWhat colour is the cat?  "}, {"from": "gpt", "value": "Red. "},
            {"from": "human", "value": "And  the dog?"}]
    msgs = [{"role": {"human": "user", "gpt": "assistant"}[t["from"]], "content": t["value"]} for t in conv]
    for name in TEMPLATES:
        hf.chat_template = chat_template_jinja(name)
        for system in (None, "Be brief. "):
            m = ([{"role": "system", "content": system}] if system else []) + msgs
            want = encode_prompt(sp, conv, name, system=system)
            assert hf.apply_chat_template(m, tokenize=True, add_generation_prompt=True, return_dict=False) == want


def test_exported_dir_answers_like_the_engine(mcore, sp_model, tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.data.image_processing import for_vision
    from megatron_sicog.generation.engine import Engine, Prompt
    from megatron_sicog.generation.sampling import GREEDY
    from megatron_sicog.model import sharding
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.model.presets import PRESETS
    from megatron_sicog.training.checkpointing import write_from_canonical

    sp = build_tokenizer("SentencePieceTokenizer", sp_model)
    args = PRESETS["tiny"].replace(init_method_std=0.05, image_token_id=sp.image_token_id)
    args.language.vocab_size = sp.vocab_size
    torch.manual_seed(5)
    model = build_model(args).eval()
    full = sharding.gather_full_state_dict(model, args.language.vocab_size)
    meta = {"tokenizer_type": "SentencePieceTokenizer", "tokenizer_model": str(sp_model), "chat_template": "qwen2"}
    write_from_canonical(full, args, tmp_path / "ckpt", tp=1, pp=1, meta_extra=meta)
    out = export_hf(tmp_path / "ckpt", tmp_path / "hf", progress=False)
    for f in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
              "config.json"):
        assert (out / f).is_file(), f
    proc = AutoProcessor.from_pretrained(str(out))
    hf = LlavaForConditionalGeneration.from_pretrained(str(out)).eval().to(torch.float64)
    model = model.to(torch.float64)

    rng = np.random.default_rng(0)
    T = 8
    for q, (h, w) in zip(QUESTIONS, SHAPES):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        tokens = encode_prompt(sp, [{"from": "human", "value": "<image>\n" + q}], "qwen2")
        pixels = for_vision(args.vision)([image]).to(torch.float64)
        ours = Engine(model).generate([Prompt(tokens, pixels, key=q)], GREEDY, max_new_tokens=T,
                                      min_new_tokens=T).tokens[0][0]
        messages = [{"role": "user", "content": "<image>\n" + q}]
        text = proc.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = proc(text=text, images=[image], return_tensors="pt")
        assert torch.allclose(inputs["pixel_values"].double(), pixels, atol=1e-6)
        with torch.inference_mode():
            gen = hf.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                              pixel_values=inputs["pixel_values"].double(), do_sample=False, max_new_tokens=T,
                              min_new_tokens=T, eos_token_id=None, pad_token_id=sp.pad)
        ref = gen[0, inputs["input_ids"].shape[1]:].tolist()
        assert inputs["input_ids"][0].tolist().count(sp.image_token_id) == model.num_image_tokens
        assert ref == ours, q
