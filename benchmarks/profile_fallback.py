"""CPU cost of the patched path when every call falls back (BERT-base relu, eager, bf16, train step).

    python benchmarks/profile_fallback.py

Alternating rounds of unpatched / patched train steps (wall ms, median), then cProfile of patched steps:
the top functions by own time, and tritonpatch's own functions.
"""
from __future__ import annotations

import cProfile
import io
import logging
import pstats
import statistics
import time

import torch

import tritonpatch
from bench_e2e import build  # noqa: E402 (benchmarks/ is on sys.path)


def main() -> None:
    logging.getLogger("tritonpatch").setLevel(logging.ERROR)
    model = build("bert-base-relu", "eager").to("cuda", torch.bfloat16).train()
    ids = torch.randint(0, model.config.vocab_size, (8, 512), device="cuda")

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    def wall(n: int = 5) -> float:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n * 1e3
    a, b = [], []
    for _ in range(4):
        a.append(wall())
        with tritonpatch.patch(model) as p:
            b.append(wall())
    print(f"train step ms, torch {[round(v, 2) for v in a]} median {statistics.median(a):.2f}")
    print(f"train step ms, patched {[round(v, 2) for v in b]} median {statistics.median(b):.2f}")
    print(str(p).splitlines()[0])
    with tritonpatch.patch(model):
        prof = cProfile.Profile()
        prof.enable()
        wall(3)
        prof.disable()
    for restrict in ((25,), ("tritonpatch", 25)):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(*restrict)
        print("\n".join(out.getvalue().splitlines()[4:40]))


if __name__ == "__main__":
    main()
