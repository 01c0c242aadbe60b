"""Does a converted model compute what its source does? A checkpoint of this project against a HF LLaVA directory.

`verify(load, hf_path, ...)` loads both in this process, in fp32: the project's
model at TP=1/PP=1 with the checkpoint's weights (saved at any TP/PP, resharded
on load) and ``LlavaForConditionalGeneration`` (eager attention). It runs them on
the same inputs: one prompt per image, images of different aspect ratios (seeded
random pixels, or the given files) preprocessed as the checkpoint says
(`data.image_processing.for_vision`), the prompt's ids from the HF directory's
tokenizer (seeded random ids when it has none) behind the image's
``num_image_tokens`` image tokens. It reports

* ``pixels``: max |pixel difference| between the checkpoint's preprocessing and
  the HF directory's own image processor (its ``preprocessor_config.json``;
  skipped when it has none) -- a model fed other pixels is silently worse;
* ``logits``: max |logit difference| over every position of every input;
* ``greedy``: whether each model's own greedy continuation (``max_new_tokens``
  steps) is the same tokens.

A tiled checkpoint (LLaVA-NeXT, `data.tiling`) runs against
``LlavaNextForConditionalGeneration`` on three non-square images whose grids differ
(``TILED_SHAPES``): its views and ``image_sizes`` as `data.tiling.Tiling` makes them,
``Tiling.num_tokens`` image tokens, pixels compared view by view with the directory's
``LlavaNextImageProcessor``.

`Report.ok(tolerance)`: logits and pixels within `tolerance` and every greedy
continuation equal. ``tools/convert_checkpoint.py verify`` prints the report and
exits 1 otherwise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

SHAPES = ((48, 64), (64, 32), (40, 40))  # (height, width): landscape, portrait, square
TILED_SHAPES = ((48, 64), (64, 30), (30, 100))  # landscape, portrait, wide: different grids at small tiles
PROMPTS = ("Describe the image.", "What colour is the largest shape?", "How many objects are there?")


@dataclass
class Case:
    name: str
    logit_diff: float
    greedy_ours: list[int]
    greedy_hf: list[int]
    pixel_diff: Optional[float] = None

    @property
    def greedy_agree(self) -> bool:
        return self.greedy_ours == self.greedy_hf


@dataclass
class Report:
    cases: list[Case] = field(default_factory=list)

    @property
    def max_logit_diff(self) -> float:
        return max(c.logit_diff for c in self.cases)

    @property
    def max_pixel_diff(self) -> Optional[float]:
        d = [c.pixel_diff for c in self.cases if c.pixel_diff is not None]
        return max(d) if d else None

    def ok(self, tolerance: float) -> bool:
        px = self.max_pixel_diff
        return (self.max_logit_diff <= tolerance and (px is None or px <= tolerance)
                and all(c.greedy_agree for c in self.cases))

    def lines(self, tolerance: float) -> list[str]:
        out = []
        for c in self.cases:
            px = "n/a (no preprocessor_config.json)" if c.pixel_diff is None else f"{c.pixel_diff:.3e}"
            out.append(f"{c.name}: max |logit diff| {c.logit_diff:.3e}, max |pixel diff| {px}, greedy "
                       + ("agree" if c.greedy_agree else f"DIFFER: ours {c.greedy_ours} hf {c.greedy_hf}"))
        px = self.max_pixel_diff
        out.append(f"max |logit diff| {self.max_logit_diff:.3e}"
                   + ("" if px is None else f", max |pixel diff| {px:.3e}")
                   + f", greedy tokens agree on {sum(c.greedy_agree for c in self.cases)}/{len(self.cases)}"
                   + f" (tolerance {tolerance:g}): " + ("OK" if self.ok(tolerance) else "FAILED"))
        return out


def _images(paths: Optional[Sequence[str]], seed: int, shapes=SHAPES) -> list[tuple[str, np.ndarray]]:
    from megatron_sicog.data.image import load_image

    if paths:
        return [(str(p), np.asarray(load_image(p), dtype=np.uint8)) for p in paths]
    rng = np.random.default_rng(seed)
    return [(f"random {h}x{w}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes]


def _prompt_ids(hf_path: Path, prompt: str, vocab: int, image_token: int, seed: int) -> list[int]:
    """The prompt's ids by the HF directory's tokenizer, else seeded random ids (never the image token)."""
    if (hf_path / "tokenizer.json").is_file() or (hf_path / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(hf_path), local_files_only=True)
            ids = [i for i in tok(prompt, add_special_tokens=False)["input_ids"] if i != image_token]
            if ids:
                return ids
        except (OSError, ValueError):
            pass
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (12,), generator=g).tolist()
    return [i if i != image_token else (i + 1) % vocab for i in ids]


def _hf_pixels(hf_path: Path, image: np.ndarray) -> Optional[torch.Tensor]:
    if not (hf_path / "preprocessor_config.json").is_file():
        return None
    from megatron_sicog.data.image_processing import HF_TYPES, _hf_class
    from megatron_sicog.data.tiling import LLAVA_NEXT_TYPES, llava_next_processor_class

    cfg = json.loads((hf_path / "preprocessor_config.json").read_text())
    kind = HF_TYPES.get(cfg.get("image_processor_type") or cfg.get("feature_extractor_type"))
    if cfg.get("image_processor_type") in LLAVA_NEXT_TYPES:  # every view: [views, 3, S, S]
        proc = llava_next_processor_class().from_dict(cfg)
    elif kind is None:  # a processor the project cannot reproduce: the pixels differ by definition
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(str(hf_path), local_files_only=True)
    else:
        proc = _hf_class(kind).from_dict(cfg)
    return torch.as_tensor(np.asarray(proc(images=[image])["pixel_values"][0]))


def verify(load: str | Path, hf_path: str | Path, images: Optional[Sequence[str]] = None,
           prompts: Optional[Sequence[str]] = None, max_new_tokens: int = 8, iteration: Optional[int] = None,
           seed: int = 0) -> Report:
    """Run both models on the same inputs; see the module docstring. Needs model-parallel groups at TP=1/PP=1."""
    from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    from megatron_sicog import runtime
    from megatron_sicog.data.image_processing import for_vision
    from megatron_sicog.data.tiling import tiling_for
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.training import checkpointing as ckpt

    hf_path = Path(hf_path)
    args = ckpt.model_args_from_dict(ckpt.read_meta(load, iteration)["model_args"])
    dev = runtime.device()
    ours = build_model(args).eval()
    ckpt.load_model_weights(ours, load, iteration)
    tiling = tiling_for(args.vision)
    hf_cls = LlavaForConditionalGeneration if tiling is None else LlavaNextForConditionalGeneration
    hf = hf_cls.from_pretrained(str(hf_path), torch_dtype=torch.float32, attn_implementation="eager",
                                local_files_only=True)
    hf = hf.eval().to(dev)
    vocab = args.language.vocab_size
    processing = for_vision(args.vision)
    report = Report()
    cases = _images(images, seed, SHAPES if tiling is None else TILED_SHAPES)
    prompts = list(prompts or PROMPTS)
    for k, (name, image) in enumerate(cases):
        prompt = prompts[k % len(prompts)]
        if tiling is None:
            pixels, sizes, n_tokens, hf_kw = processing([image]).to(dev), None, args.vision.num_image_tokens, {}
        else:
            pixels, sizes = (t.to(dev) for t in tiling([image]))
            n_tokens, hf_kw = tiling.num_tokens(*image.shape[:2]), {"image_sizes": sizes}
        ref_px = _hf_pixels(hf_path, image)
        if tiling is not None and ref_px is not None:
            ref_px = ref_px[:pixels.shape[0]]  # the views of this image (the processor pads a batch's)
            pixels_cmp = pixels
        else:
            pixels_cmp = pixels[0]
        pixel_diff = None if ref_px is None else (
            float("inf") if ref_px.shape != pixels_cmp.shape else (ref_px.to(dev) - pixels_cmp).abs().max().item())
        text = _prompt_ids(hf_path, prompt, vocab, args.image_token_id, seed + k)
        ids = torch.tensor([[args.image_token_id] * n_tokens + text], device=dev)
        hf_px = pixels if tiling is None else pixels[None]
        with torch.no_grad():
            a = _our_logits(ours, ids, pixels, vocab, sizes)
            b = hf(input_ids=ids, pixel_values=hf_px, **hf_kw).logits.float()
            diff = (a - b).abs().max().item()
            greedy = [_greedy(lambda x: _our_logits(ours, x, pixels, vocab, sizes), ids, max_new_tokens),
                      _greedy(lambda x: hf(input_ids=x, pixel_values=hf_px, **hf_kw).logits.float(), ids,
                              max_new_tokens)]
        report.cases.append(Case(f"{name}, {prompt!r}", diff, *greedy, pixel_diff=pixel_diff))
    return report


def _our_logits(model, ids: torch.Tensor, pixels: torch.Tensor, vocab: int,
                image_sizes: Optional[torch.Tensor] = None) -> torch.Tensor:
    s = ids.shape[1]
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool, device=ids.device), diagonal=1)[None, None]
    pos = torch.arange(s, device=ids.device)[None]
    return model(ids, pos, mask, images=pixels, runtime_gather_output=True,
                 image_sizes=image_sizes)[..., :vocab].float()


def _greedy(logits_of, ids: torch.Tensor, n: int) -> list[int]:
    out = []
    for _ in range(n):
        nxt = int(logits_of(ids)[0, -1].argmax())
        out.append(nxt)
        ids = torch.cat([ids, ids.new_tensor([[nxt]])], dim=1)
    return out
