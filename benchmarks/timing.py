"""CPU cost per call, for the overhead probes (the suite itself times with triton.testing.do_bench), and GPU
time alone from CUDA graph replays (bench_gpu_time.py, probe_graph_capture.py)."""
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


def warm_up(fn: Callable[[], object], n: int = 2) -> None:
    """``fn`` called ``n`` times on a side stream, as before a CUDA graph capture (compiles, caches,
    allocator pools), then the device synchronised."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(n):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()


def graph_of(fn: Callable[[], object], calls: int = 1) -> "torch.cuda.CUDAGraph":
    """A CUDA graph of ``calls`` calls of ``fn`` (captured, not yet replayed)."""
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    return g


def replay_ms(g: "torch.cuda.CUDAGraph", replays: int = 15) -> float:
    """Median ms of one replay of ``g`` (CUDA events, synchronised after each), after one untimed replay."""
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        g.replay()
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1))
    return statistics.median(times)
