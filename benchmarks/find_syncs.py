"""Report any host-device synchronisation in a patched HF forward (torch's sync debug mode).

    python benchmarks/find_syncs.py
"""
from __future__ import annotations

import time
import warnings

import torch

import tritonpatch
from bench_e2e import build  # noqa: E402


def main() -> None:
    model = build("opt-350m", "eager", layers=2).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, 1000, (8, 512), device="cuda")
    with torch.no_grad(), tritonpatch.patch(model):
        for _ in range(3):
            model(input_ids=ids)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model(input_ids=ids)
        torch.cuda.set_sync_debug_mode(0)
        print(f"synchronising calls in one patched forward: {len(caught)}")
        for w in caught[:5]:
            print(" -", str(w.message)[:200])
        # time the pieces of one forward with the CPU clock, GPU left asynchronous
        torch.cuda.synchronize()
        import cProfile, pstats
        prof = cProfile.Profile()
        prof.enable()
        t0 = time.perf_counter()
        model(input_ids=ids)
        t1 = time.perf_counter()
        prof.disable()
        torch.cuda.synchronize()
        print(f"CPU time of one patched forward: {(t1 - t0) * 1e3:.2f} ms")
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
