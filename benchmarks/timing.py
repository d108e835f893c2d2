"""CPU cost per call, for the overhead probes (the suite itself times with triton.testing.do_bench)."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def cpu_us(fn: Callable[[], object], n: int = 2000, warmup: int = 50, batches: int = 1) -> float:
    """Microseconds of CPU per call of ``fn``: ``n`` calls back to back after ``warmup`` calls, timed from
    the first call to the last return (the device is synchronised before, and after the timing). With
    ``batches`` > 1 the ``n`` calls are split into that many timed batches (synchronised between them) and
    the median batch is returned: robust to a host that is preempted now and then."""
    for _ in range(warmup):
        fn()
    per_batch = n // batches
    times = []
    for _ in range(batches):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(per_batch):
            fn()
        t1 = time.perf_counter()
        times.append((t1 - t0) / per_batch * 1e6)
    torch.cuda.synchronize()
    return statistics.median(times)
