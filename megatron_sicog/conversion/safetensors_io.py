"""Streaming safetensors input and size-capped sharded output.

`SafetensorsDir` lists a Hugging Face directory's tensors (``*.safetensors`` with
or without ``model.safetensors.index.json``) and reads one tensor at a time
through ``safe_open`` (memory-mapped): converting never holds the whole model.

`HFSource` puts one name layout over a LLaVA directory, or over a CLIP vision
directory plus a causal-LM directory: the names of `hf_mapping` (transformers
5.x ``save_pretrained`` layout), whatever the source layout was.

`ShardWriter` writes ``model-0000i-of-0000N.safetensors`` files of at most
``max_shard_size`` bytes each (a tensor bigger than that gets its own file)
plus ``model.safetensors.index.json``, like ``save_pretrained``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from megatron_sicog.conversion.hf_mapping import HEAD, LM, NEWLINE, P, V, ConversionError

INDEX = "model.safetensors.index.json"

# (source prefix, our prefix); first match wins. Exact names end without a dot.
LLAVA_PREFIXES = (
    ("model.vision_tower.vision_model.", V), ("model.vision_tower.", V),
    ("vision_tower.vision_model.", V), ("vision_tower.", V),
    ("model.multi_modal_projector.", P), ("multi_modal_projector.", P),
    ("model.language_model.", LM), ("language_model.model.", LM),
    ("lm_head.weight", HEAD), ("language_model.lm_head.weight", HEAD),
    ("model.image_newline", NEWLINE), ("image_newline", NEWLINE),  # LLaVA-NeXT
)
VISION_PREFIXES = (("vision_model.", V),  # CLIP/SigLIP VisionModel or Model (transformers 4.x layout)
                   *((p, V + p) for p in ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.", "head.")))
LM_PREFIXES = (("model.", LM), ("lm_head.weight", HEAD))
# never weights: buffers some checkpoints carry, and the parts of a full CLIP we do not use
IGNORED = re.compile(r"(rotary_emb\.inv_freq|embeddings\.position_ids)$|^(text_model\.|visual_projection\.|"
                     r"text_projection\.|logit_scale$|logit_bias$)")


class SafetensorsDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: not a directory")
        index = self.path / INDEX
        if index.exists():
            self.weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        else:
            files = sorted(self.path.glob("*.safetensors"))
            if not files:
                bins = sorted(p.name for p in self.path.glob("*.bin"))
                raise FileNotFoundError(
                    f"{self.path}: no *.safetensors weights" + (f" (found {bins}: re-save the model with "
                                                                  "save_pretrained(safe_serialization=True))"
                                                                  if bins else ""))
            self.weight_map = {}
            for f in files:
                for k in _open(f).keys():
                    self.weight_map[k] = f.name
        missing = sorted({f for f in self.weight_map.values() if not (self.path / f).exists()})
        if missing:
            raise FileNotFoundError(f"{self.path}: shard files named in {INDEX} are missing: {missing}")
        self._handles: dict[str, object] = {}

    def _handle(self, fname: str):
        h = self._handles.get(fname)
        if h is None:
            h = self._handles[fname] = _open(self.path / fname)
        return h

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def get(self, key: str) -> torch.Tensor:
        fname = self.weight_map[key]
        try:
            return self._handle(fname).get_tensor(key)
        except Exception as e:  # noqa: BLE001 - safetensors' own error type
            raise ConversionError(f"{self.path / fname}: cannot read tensor {key} ({e})") from None

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handle(self.weight_map[key]).get_slice(key).get_shape())


def _open(path: Path):
    """safe_open, with a truncated or foreign file named in a ConversionError."""
    try:
        return safe_open(path, "pt")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError
        raise ConversionError(f"{path}: truncated or not a safetensors file ({e})") from None


def _translate(key: str, prefixes) -> Optional[str]:
    for src, ours in prefixes:
        if src.endswith("."):
            if key.startswith(src):
                return ours + key[len(src):]
        elif key == src:
            return ours
    return None


class HFSource:
    """Tensors of a LLaVA (or CLIP + LM) checkpoint under `hf_mapping`'s names."""

    def __init__(self, parts: list[tuple[SafetensorsDir, tuple]]):
        self._where: dict[str, tuple[SafetensorsDir, str]] = {}
        self.unexpected: list[str] = []
        for d, prefixes in parts:
            for key in d.keys():
                name = _translate(key, prefixes)
                if name is None:
                    if not IGNORED.search(key):
                        self.unexpected.append(f"{d.path.name}/{key}")
                    continue
                if name in self._where:
                    raise ConversionError(f"{key} in {d.path} and {self._where[name][1]} both map to {name}")
                self._where[name] = (d, key)

    @classmethod
    def llava(cls, path: str | Path) -> "HFSource":
        return cls([(SafetensorsDir(path), LLAVA_PREFIXES)])

    @classmethod
    def parts(cls, vision_path: str | Path, language_path: str | Path) -> "HFSource":
        return cls([(SafetensorsDir(vision_path), VISION_PREFIXES), (SafetensorsDir(language_path), LM_PREFIXES)])

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def names(self) -> list[str]:
        return list(self._where)

    def get(self, name: str) -> torch.Tensor:
        d, key = self._where[name]
        return d.get(key)

    def shape(self, name: str) -> tuple[int, ...]:
        d, key = self._where[name]
        return d.shape(key)


def parse_size(size: str | int) -> int:
    """'5GB' (10^9), '2GiB' (2^30), '500MB', '100KB' or a number of bytes."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", size.upper().replace("IB", "iB"))
    if not m:
        raise ValueError(f"max shard size {size!r}: expected a number of bytes or e.g. 5GB, 500MB, 2GiB")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** " KMGT".index(m.group(2) or " "))


class ShardWriter:
    """Collect tensors in order; write a shard whenever the next one would exceed the cap."""

    def __init__(self, out_dir: str | Path, max_shard_size: int):
        self.out_dir = Path(out_dir)
        self.max = max_shard_size
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.shards: list[list[str]] = []
        self.total = 0

    def add(self, name: str, t: torch.Tensor) -> None:
        n = t.numel() * t.element_size()
        if self.pending and self.pending_bytes + n > self.max:
            self._flush()
        if not t.is_contiguous() or t.untyped_storage().nbytes() != n:  # a view: own its memory
            t = t.clone(memory_format=torch.contiguous_format)
        self.pending[name] = t
        self.pending_bytes += n
        self.total += n

    def _flush(self) -> None:
        i = len(self.shards) + 1
        save_file(self.pending, str(self.out_dir / f".shard-{i:05d}.safetensors"), metadata={"format": "pt"})
        self.shards.append(list(self.pending))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Write the last shard, name every file ``-of-N`` and write the index; returns file names."""
        if self.pending or not self.shards:
            self._flush()
        n = len(self.shards)
        weight_map, files = {}, []
        for i, names in enumerate(self.shards, start=1):
            fname = f"model-{i:05d}-of-{n:05d}.safetensors"
            os.replace(self.out_dir / f".shard-{i:05d}.safetensors", self.out_dir / fname)
            files.append(fname)
            weight_map.update({k: fname for k in names})
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out_dir / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return files
