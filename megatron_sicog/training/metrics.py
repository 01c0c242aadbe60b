"""Training metrics: console line per --log-interval, JSON per iteration, TensorBoard, loss-curve PNG.

The objective's loss keys name what is printed: all of them on the console line
(DPO: the loss, reward margin / accuracy, rewards and log-probs of chosen and
rejected), the first (the loss) on the curve.
Only the rank that owns the loss (the last pipeline stage's first TP / DP rank)
writes. The JSON log is appended and flushed each iteration; on resume it is
truncated to the resumed iteration so the file holds one line per iteration.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger("sicog.train")


class MetricsLogger:
    def __init__(self, enabled: bool, log_json: Optional[str], tensorboard_dir: Optional[str],
                 log_interval: int, loss_curve: Optional[str], start_iteration: int,
                 loss_keys: tuple = ("lm_loss",)):
        self.enabled, self.log_interval, self.loss_keys = enabled, log_interval, tuple(loss_keys)
        self.history: list[dict] = []
        self._json = None
        self._tb = None
        self.loss_curve = loss_curve or (str(Path(log_json).with_suffix(".png")) if log_json else None)
        self._t = time.perf_counter()
        if not enabled:
            return
        if log_json:
            path = Path(log_json)
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = []
            if path.exists() and start_iteration > 0:  # keep the lines before the resume point
                for line in path.read_text().splitlines():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a kill
                    if rec.get("iteration", 0) <= start_iteration:
                        kept.append(rec)
            self.history = [r for r in kept if "iteration" in r]
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, path)
            self._json = open(path, "a")
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(tensorboard_dir)

    def log(self, rec: dict) -> None:
        if not self.enabled:
            return
        self.history.append(rec)
        if self._json:
            self._json.write(json.dumps(rec) + "\n")
            self._json.flush()
        if self._tb:
            for k, v in rec.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, rec["iteration"])
        it = rec["iteration"]
        if it % self.log_interval == 0 or it == 1:
            loss_key = self.loss_keys[0]
            extra = "".join(f" {k} {rec[k]:.3f} |" for k in self.loss_keys[1:])
            log.info(f" iteration {it:>6} | {loss_key} {rec[loss_key]:.5f} |{extra} lr {rec['lr']:.3e} | "
                     f"grad norm {rec['grad_norm']:.3f} | tokens/s {rec['tokens_per_sec']:.0f} | "
                     f"{rec['elapsed_ms']:.0f} ms/iter")

    def log_eval(self, iteration: int, values: dict) -> None:
        if not self.enabled:
            return
        msg = " | ".join(f"{k} {v:.5f}" for k, v in values.items())
        log.info(f" validation at iteration {iteration} | {msg}")
        if self._json:
            self._json.write(json.dumps({"eval_iteration": iteration, **values}) + "\n")
            self._json.flush()
        if self._tb:
            for k, v in values.items():
                self._tb.add_scalar(f"valid/{k}", v, iteration)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._json:
            self._json.close()
        if self._tb:
            self._tb.close()
        if self.loss_curve and self.history:
            save_loss_curve(self.history, self.loss_curve, self.loss_keys[0])


def save_loss_curve(history: list[dict], path: str, key: str = "lm_loss") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in history if key in r]
    vals = [r[key] for r in history if key in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(its, vals, lw=1.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel(key)
    ax.set_title(f"{key} ({len(its)} iterations)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = str(path) + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
