"""GPU-side profile of a patched vs unpatched HF forward: which kernels take the time.

    python benchmarks/profile_gpu.py [eager|sdpa]
"""
from __future__ import annotations

import sys
import time

import torch

import tritonpatch
from bench_e2e import build  # noqa: E402 (benchmarks/ is on sys.path when run as a script)


def main() -> None:
    attn = sys.argv[1] if len(sys.argv) > 1 else "eager"
    model = build("opt-350m", attn, layers=6).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, 1000, (8, 512), device="cuda")
    with torch.no_grad():
        for patched in (False, True):
            handle = tritonpatch.patch(model) if patched else None
            for _ in range(3):
                model(input_ids=ids)
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                    torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    model(input_ids=ids)
                torch.cuda.synchronize()
            print(f"\n===== {attn} patched={patched}")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70))
            torch.cuda.synchronize()  # a timing without the profiler
            t0 = time.perf_counter()
            for _ in range(10):
                model(input_ids=ids)
            torch.cuda.synchronize()
            print(f"wall per forward: {(time.perf_counter() - t0) / 10 * 1e3:.2f} ms (patched={patched})")
            if handle:
                handle.unpatch()


if __name__ == "__main__":
    main()
