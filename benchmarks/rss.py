"""Peak resident memory, for the line every benchmark prints before ``ratio: R``."""
from __future__ import annotations

import resource


def peak_rss_line() -> str:
    """``peak RSS: this process X MiB, largest child process Y MiB`` (Linux ru_maxrss is KiB).

    The child figure is the largest single waited-for child (a subprocess peer, a pool
    worker), not a sum: processes that ran at the same time may together have held more.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return f"peak RSS: this process {own:,.0f} MiB, largest child process {child:,.0f} MiB"
