"""Small tokenizers built locally (no downloads): tests, benchmarks, the tiny demo.

* `toy_texts(n, seed)` — seeded English-like sentences over a small word list;
* `make_sentencepiece(texts, prefix, vocab_size)` — `train_sentencepiece`;
* `make_hf_tokenizer(texts, out_dir, vocab_size)` — a byte-level BPE trained
  with ``tokenizers``, with ``<|endoftext|>`` (eos), ``<pad>``, ``<image>`` and the
  chat-template specials as special tokens, wrapped as a
  ``PreTrainedTokenizerFast`` and saved with ``save_pretrained`` (a real HF
  tokenizer directory).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence, Union

from .tokenizer import default_user_symbols, train_sentencepiece

WORDS = (
    "the a an red blue green yellow purple orange cat dog bird circle square triangle star "
    "sits on under near left right above below of is are there two three four five many "
    "small large big tiny bright dark background picture image shows answer question what "
    "which how colour shape count position step description salient detailed relational"
).split()


def toy_texts(n: int, seed: int = 0, min_words: int = 5, max_words: int = 40) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 999)))
        out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ".\nYes."]))
    return out


def make_sentencepiece(texts: Sequence[str], prefix: Union[str, Path], vocab_size: int = 400) -> Path:
    return train_sentencepiece(texts, prefix, vocab_size)


def make_hf_tokenizer(texts: Sequence[str], out_dir: Union[str, Path], vocab_size: int = 500) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<pad>"] + default_user_symbols()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>")
    out_dir = Path(out_dir)
    fast.save_pretrained(str(out_dir))
    return out_dir


def make_records(out_dir: Union[str, Path], n: int, seed: int = 0, image_every: int = 1,
                 multi_turn_every: int = 3) -> tuple[Path, Path]:
    """A JSONL of n LLaVA records and an image folder; returns (jsonl, image_root).

    Record i has an image (PNG/JPEG, sizes vary) when i % image_every == 0, and
    two turns when i % multi_turn_every == 0.
    """
    import json

    import numpy as np
    from PIL import Image

    out_dir = Path(out_dir)
    root = out_dir / "images"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    texts = toy_texts(3 * n + 3, seed=seed)
    path = out_dir / "records.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            conv = [{"from": "human", "value": texts[3 * i]}, {"from": "gpt", "value": texts[3 * i + 1]}]
            rec = {"id": f"rec{i}", "conversations": conv}
            if i % image_every == 0:
                ext = "png" if i % 2 else "jpg"
                img = rng.integers(0, 256, (int(rng.integers(8, 40)), int(rng.integers(8, 40)), 3), dtype=np.uint8)
                Image.fromarray(img).save(root / f"img{i}.{ext}")
                rec["image"] = f"img{i}.{ext}"
                conv[0]["value"] = "<image>\n" + conv[0]["value"]
            if i % multi_turn_every == 0:
                conv += [{"from": "human", "value": texts[3 * i + 2]}, {"from": "gpt", "value": texts[3 * i + 3]}]
            f.write(json.dumps(rec) + "\n")
    return path, root
