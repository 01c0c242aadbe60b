"""A preview figure of the synthetic world: images with their captions and one QA pair.

`save_preview(data_dir, out_path, n)` reads ``eval.jsonl`` of a written data
folder and draws the first `n` images (nearest-neighbour upscaled) with the
ground-truth caption and the first question/answer under each.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Union

from ..io import atomic_path, iter_records


def save_preview(data_dir: Union[str, Path], out_path: Union[str, Path], n: int = 8, cols: int = 4) -> int:
    """Write the preview PNG; returns the number of images drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    data_dir = Path(data_dir)
    recs = [r for _, r in iter_records(data_dir / "eval.jsonl") if isinstance(r, dict)][:n]
    if not recs:
        raise ValueError(f"{data_dir / 'eval.jsonl'} has no records to preview")
    rows = (len(recs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 4.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, rec in zip(axes.flat, recs):
        ax.imshow(Image.open(data_dir / rec["image"]), interpolation="nearest")
        lines = textwrap.wrap(rec["caption"], 40)
        if rec.get("questions"):
            q = rec["questions"][0]
            lines += textwrap.wrap(f"Q: {q['question']} A: {q['answer']}", 40)
        ax.set_title(rec["id"], fontsize=8)
        ax.text(0.0, -0.04, "\n".join(lines), transform=ax.transAxes, fontsize=6.5, va="top")
    fig.tight_layout()
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return len(recs)
