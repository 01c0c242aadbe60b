#!/usr/bin/env python3
"""Stand-in for pretrain_sicog.py that keeps the trainer's SLURM contract.

Used to test train.sbatch's preemption path on a local cluster (and to try the
recipe without a model). It accepts the trainer's flags, "trains" by sleeping
STANDIN_ITER_SECONDS per iteration (default 0.2), and:

* on SIGTERM or SIGUSR1 saves a checkpoint at the next iteration boundary and
  exits 0;
* saves every --save-interval iterations and at the end;
* resumes from --load when it holds latest_checkpointed_iteration.txt.

Checkpoints use the Megatron legacy layout: SAVE/iter_0000012/checkpoint.json
and SAVE/latest_checkpointed_iteration.txt. Every event is one JSON line in
--log-json: {"event": "start"|"resume"|"iteration"|"signal"|"save"|"exit", ...}.
Only rank 0 (RANK from torchrun) writes.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-iters", type=int, required=True)
    p.add_argument("--save", required=True)
    p.add_argument("--load", default=None)
    p.add_argument("--save-interval", type=int, default=0)
    p.add_argument("--log-json", required=True)
    # the rest of the trainer's flags are accepted and recorded, not used
    args, rest = p.parse_known_args(argv)
    args.other_flags = rest
    return args


class StandinTrainer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rank = int(os.environ.get("RANK", "0"))
        self.iteration = 0
        self.signal_name: str | None = None
        self.iter_seconds = float(os.environ.get("STANDIN_ITER_SECONDS", "0.2"))
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name

    def log(self, event: str, **fields) -> None:
        if self.rank != 0:
            return
        rec = {"event": event, "iteration": self.iteration, "time": time.time(),
               "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
               "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")), **fields}
        os.makedirs(os.path.dirname(os.path.abspath(self.args.log_json)), exist_ok=True)
        with open(self.args.log_json, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()

    def load(self) -> None:
        tracker = os.path.join(self.args.load or "", "latest_checkpointed_iteration.txt")
        if self.args.load and os.path.isfile(tracker):
            with open(tracker, encoding="utf-8") as f:
                self.iteration = int(f.read().strip())
            self.log("resume", load=self.args.load)

    def save(self, reason: str) -> None:
        if self.rank == 0:
            d = os.path.join(self.args.save, f"iter_{self.iteration:07d}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "checkpoint.json"), "w", encoding="utf-8") as f:
                json.dump({"iteration": self.iteration, "reason": reason}, f)
            tmp = os.path.join(self.args.save, "latest_checkpointed_iteration.txt.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(str(self.iteration))
            os.replace(tmp, os.path.join(self.args.save, "latest_checkpointed_iteration.txt"))
        self.log("save", reason=reason)

    def train(self) -> int:
        self.log("start", flags=self.args.other_flags)
        self.load()
        while self.iteration < self.args.train_iters:
            time.sleep(self.iter_seconds)
            self.iteration += 1
            self.log("iteration")
            if self.signal_name is not None:
                self.log("signal", signal=self.signal_name)
                self.save(reason=self.signal_name)
                self.log("exit", status=0)
                return 0
            if self.args.save_interval and self.iteration % self.args.save_interval == 0:
                self.save(reason="interval")
        self.save(reason="end")
        self.log("exit", status=0)
        return 0


if __name__ == "__main__":
    sys.exit(StandinTrainer(parse_args(sys.argv[1:])).train())
