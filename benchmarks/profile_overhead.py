"""Where does the patched path spend CPU time? cProfile of a patched HF forward, and per-call costs.

    python benchmarks/profile_overhead.py
"""
from __future__ import annotations

import cProfile
import pstats
import time

import torch

import tritonpatch
from bench_e2e import build  # noqa: E402 (benchmarks/ is on sys.path when run as a script)


def main() -> None:
    model = build("opt-350m", "sdpa", layers=6).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, 1000, (8, 512), device="cuda")
    with torch.no_grad():
        for patched in (False, True):
            handle = tritonpatch.patch(model) if patched else None
            for _ in range(3):
                model(input_ids=ids)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(10):
                model(input_ids=ids)
            cpu_launch = (time.perf_counter() - t0) / 10 * 1e3
            torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) / 10 * 1e3
            print(f"patched={patched}: CPU time to issue a forward {cpu_launch:.2f} ms, wall {wall:.2f} ms")
            if patched:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(5):
                    model(input_ids=ids)
                prof.disable()
                torch.cuda.synchronize()
                pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)
                handle.unpatch()


if __name__ == "__main__":
    main()
