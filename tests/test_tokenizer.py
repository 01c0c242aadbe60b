"""Tokenizer layer and chat templates: ids, loss masks, prompts, both backends."""
import pytest

from megatron_sicog.guards import UsageError

from megatron_sicog.data.chat_template import (
    TEMPLATES,
    encode_conversation,
    encode_prompt,
    stop_token_ids,
)
from megatron_sicog.data.tokenizer import build_tokenizer
from megatron_sicog.data.toy import make_hf_tokenizer, make_sentencepiece, toy_texts

CONV = [
    {"from": "human", "value": "<image>\nWhat colour is the cat?"},
    {"from": "gpt", "value": "The cat is red."},
    {"from": "human", "value": "And  the dog?\tTell me."},
    {"from": "gpt", "value": "Blue.\nYes"},
]

EXPECTED = {
    "qwen2": (
        "<|im_start|>user\n<image>\nWhat colour is the cat?<|im_end|>\n"
        "<|im_start|>assistant\nThe cat is red.<|im_end|>\n"
        "<|im_start|>user\nAnd  the dog?\tTell me.<|im_end|>\n"
        "<|im_start|>assistant\nBlue.\nYes<|im_end|>\n"
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat colour is the cat?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nThe cat is red.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nAnd  the dog?\tTell me.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nBlue.\nYes<|eot_id|>"
    ),
}
ASSISTANT = {
    "qwen2": ["The cat is red.<|im_end|>", "Blue.\nYes<|im_end|>"],
    "llama3": ["The cat is red.<|eot_id|>", "Blue.\nYes<|eot_id|>"],
}


@pytest.fixture(scope="module", params=["sp", "hf"])
def tok(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    texts = toy_texts(1500, seed=1)
    if request.param == "sp":
        return build_tokenizer("SentencePieceTokenizer", make_sentencepiece(texts, d / "sp", 400))
    return build_tokenizer("HuggingFaceTokenizer", make_hf_tokenizer(texts, d / "hf", 500))


def _runs(ids, mask):
    """Contiguous runs of ids where mask == 1."""
    runs, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def test_specials_are_single_tokens(tok):
    assert isinstance(tok.vocab_size, int) and tok.vocab_size > 100
    ids = {s: tok.token_to_id(s) for tpl in TEMPLATES.values() for s in tpl.special_strings()}
    ids["<image>"] = tok.image_token_id
    assert all(isinstance(v, int) for v in ids.values()), ids
    assert len(set(ids.values())) == len(ids)
    assert tok.token_to_id("surely-not-a-token") is None
    assert tok.tokenize("a <image> b").count(tok.image_token_id) == 1
    assert tok.eod != tok.pad


def test_round_trip_text(tok):
    text = "Two  cats\tand 17 dogs.\nÜber é!"
    assert tok.detokenize(tok.tokenize(text)) == text
    assert tok.tokenize_batch([text, "x"]) == [tok.tokenize(text), tok.tokenize("x")]


@pytest.mark.parametrize("template", ["qwen2", "llama3"])
def test_marker_templates(tok, template):
    ids, mask = encode_conversation(tok, CONV, template)
    assert len(ids) == len(mask)
    assert tok.detokenize(ids) == EXPECTED[template]
    assert ids.count(tok.image_token_id) == 1
    runs = _runs(ids, mask)
    assert [tok.detokenize(r) for r in runs] == ASSISTANT[template]
    end = tok.token_to_id(TEMPLATES[template].end_of_turn)
    assert all(r[-1] == end for r in runs)
    # nothing outside the runs is assistant text
    assert set(mask) == {0, 1}
    assert stop_token_ids(tok, template) == [end, tok.eod]


def test_plain_template(tok):
    conv = CONV[:2]
    ids, mask = encode_conversation(tok, conv, "plain")
    assert ids[-1] == tok.eod and mask[-1] == 1
    human = [i for i, m in zip(ids, mask) if not m]
    assert tok.detokenize(human) == "<image>\nWhat colour is the cat?"
    assert _runs(ids, mask) == [tok.tokenize("The cat is red.") + [tok.eod]]
    assert stop_token_ids(tok, "plain") == [tok.eod]


def test_system_and_prompt(tok):
    ids, mask = encode_conversation(tok, CONV[:2], "qwen2", system="Be brief.")
    text = tok.detokenize(ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert sum(mask) == len(tok.tokenize("The cat is red.")) + 1
    prompt = encode_prompt(tok, CONV[:1], "qwen2")
    assert tok.detokenize(prompt) == EXPECTED["qwen2"].split("<|im_start|>assistant\n")[0] + "<|im_start|>assistant\n"
    # the prompt is a prefix of the full encoding
    full, _ = encode_conversation(tok, CONV[:2], "qwen2")
    assert full[: len(prompt)] == prompt


@pytest.mark.parametrize(
    "conv, msg",
    [
        ([{"from": "human", "value": "hi"}], "no assistant turn"),
        ([{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "x"}], "unknown role"),
        ([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "<image>"}], "only human turns"),
        ([{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}], "must be a string"),
        ([], "non-empty list"),
    ],
)
def test_bad_conversations(tok, conv, msg):
    with pytest.raises(ValueError, match=msg):
        encode_conversation(tok, conv, "qwen2")


def test_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unsupported --tokenizer-type"):
        build_tokenizer("GPT2BPETokenizer", tmp_path)
    with pytest.raises(UsageError, match="--tokenizer-model .*missing.model: no such file"):
        build_tokenizer("SentencePieceTokenizer", tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(UsageError, match="junk.model is not a SentencePieceTokenizer model"):
        build_tokenizer("SentencePieceTokenizer", tmp_path / "junk.model")
    with pytest.raises(ValueError, match="unknown chat template"):
        encode_conversation(None, CONV, "vicuna")
