"""Seeded synthetic multimodal samples for smoke runs and benchmarks (``--mock-data``).

Like Megatron-LM's mock datasets, but learnable, so a smoke run shows a loss
that falls: each image is a solid colour from a palette of 8; the answer is a
token pattern determined by that colour, reachable only through the vision
path. Sample i depends only on (seed, i).
"""
from __future__ import annotations

import numpy as np

PALETTE = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [230, 220, 40],
                    [150, 40, 180], [240, 140, 20], [20, 200, 200], [120, 120, 120]], dtype=np.uint8)


class MockMultimodalDataset:
    """LM samples: [<image>] + prompt + colour-determined answer (loss on the answer)."""

    def __init__(self, num_samples: int, seq_length: int, vocab_size: int, image_token_id: int,
                 image_size: int, num_image_tokens: int, seed: int = 0, text_only_every: int = 4):
        self.n, self.vocab, self.img_id, self.size = num_samples, vocab_size, image_token_id, image_size
        self.seed, self.text_only_every = seed, text_only_every
        budget = seq_length + 1 - num_image_tokens - 1
        self.answer_len = max(4, min(48, budget - 8))
        self.prompt = np.arange(8, 8 + 6) % vocab_size  # fixed "describe the image" prompt
        rng = np.random.default_rng(seed)
        low = 16 if vocab_size > 32 else 0
        self.patterns = rng.integers(low, vocab_size, (len(PALETTE), self.answer_len))

    def __len__(self) -> int:
        return self.n

    def sample(self, i: int, colour: int | None = None, answer: np.ndarray | None = None) -> dict:
        rng = np.random.default_rng([self.seed, i])
        c = int(rng.integers(len(PALETTE))) if colour is None else colour
        with_image = self.text_only_every <= 0 or i % self.text_only_every != self.text_only_every - 1
        ans = self.patterns[c] if answer is None else answer
        if with_image:
            img = np.broadcast_to(PALETTE[c], (self.size, self.size, 3)).copy()
            noise = rng.integers(-12, 13, img.shape)
            img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
            prompt = np.concatenate([[self.img_id], self.prompt])
            images = [img]
        else:  # text-only: the colour is named by a token in the prompt
            prompt = np.concatenate([self.prompt, [8 + 6 + c]])
            images = []
        tokens = np.concatenate([prompt, ans]).astype(np.int64)
        mask = np.concatenate([np.zeros(len(prompt), np.uint8), np.ones(len(ans), np.uint8)])
        return {"tokens": tokens, "loss_mask": mask, "images": images,
                "segment_ids": np.ones(len(tokens), np.int64)}

    def __getitem__(self, i: int) -> dict:
        return self.sample(i)


class MockPreferenceDataset:
    """DPO pairs on the same images: chosen = the colour's pattern, rejected = another colour's."""

    def __init__(self, base: MockMultimodalDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.base.seed, i])
        c = int(rng.integers(len(PALETTE)))
        wrong = (c + 1 + int(rng.integers(len(PALETTE) - 1))) % len(PALETTE)
        return {"chosen": self.base.sample(i, colour=c),
                "rejected": self.base.sample(i, colour=c, answer=self.base.patterns[wrong])}
