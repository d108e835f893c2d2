"""CPU cost per call, for the overhead probes (the suite itself times with triton.testing.do_bench)."""
from __future__ import annotations

import time
from typing import Callable

import torch


def cpu_us(fn: Callable[[], object], n: int = 2000, warmup: int = 50) -> float:
    """Microseconds of CPU per call of ``fn``: ``n`` calls back to back after ``warmup`` calls, timed from
    the first call to the last return (the device is synchronised before, and after the timing)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6
