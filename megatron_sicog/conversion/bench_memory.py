"""Peak memory and wall time of one tools/convert_checkpoint.py run (the README's figures).

    python -m megatron_sicog.conversion.bench_memory hf-to-megatron --hf-path HF --save OUT \
        --tensor-model-parallel-size 4 --no-progress

Runs the tool in this process after importing torch, transformers and
megatron-core (the baseline), samples ``RssAnon`` (heap: what the converter
holds) and ``RssFile`` (memory-mapped inputs, reclaimable page cache) from
/proc/self/status every 20 ms, and prints the peaks. Linux only.
"""
from __future__ import annotations

import runpy
import sys
import threading
import time
from pathlib import Path

FIELDS = ("RssAnon", "RssFile")
TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_checkpoint.py"


def rss_mb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in FIELDS:
                out[key] = int(value.split()[0]) // 1024
    return out


def main(argv: list[str]) -> dict:
    import megatron.core  # noqa: F401  (baseline: what every conversion imports)
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from megatron_sicog.conversion import hf_export, hf_import  # noqa: F401

    base = rss_mb()
    peak = dict(base)
    done = threading.Event()

    def sample():
        while not done.is_set():
            for k, v in rss_mb().items():
                peak[k] = max(peak[k], v)
            done.wait(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.time()
    sys.argv = [str(TOOL), *argv]
    try:
        runpy.run_path(str(TOOL), run_name="__main__")
    finally:
        done.set()
        th.join()
    result = {"baseline_mb": base, "peak_mb": peak, "anon_above_baseline_mb": peak["RssAnon"] - base["RssAnon"],
              "wall_s": round(time.time() - t0, 1)}
    print(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
