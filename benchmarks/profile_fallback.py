"""Where a patched step's extra time goes when every call falls back (BERT-base relu, eager, bf16, train).

    python benchmarks/profile_fallback.py [--model bert-base-relu|opt-350m] [--attn eager|sdpa]

1. Alternating rounds of unpatched / patched train steps: wall ms (median), and the host's issue time
   (CPU ms to queue one step, the GPU left running) for each.
2. Host-device synchronisations in one patched step (torch's sync debug mode).
3. torch.profiler over 3 steps of each: total GPU kernel time and kernel count per step, and the ops
   whose GPU time or CPU self time differ most between the two (what the patched step adds).
4. cProfile of patched steps: tritonpatch's own functions by own time.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

import tritonpatch
from bench_e2e import build  # noqa: E402 (benchmarks/ is on sys.path)
from profile_e2e_cpu import syncs_in  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base-relu")
    ap.add_argument("--attn", default="eager")
    ap.add_argument("--csv", default=None)  # accepted for gpu_run.sh; nothing tabular to write
    args = ap.parse_args()
    logging.getLogger("tritonpatch").setLevel(logging.ERROR)
    model = build(args.model, args.attn).to("cuda", torch.bfloat16).train()
    ids = torch.randint(0, model.config.vocab_size, (8, 512), device="cuda")

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    def wall(n: int = 5) -> tuple[float, float]:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        issue = []
        t0 = time.perf_counter()
        for _ in range(n):
            t1 = time.perf_counter()
            step()
            issue.append(time.perf_counter() - t1)
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n * 1e3, statistics.median(issue) * 1e3
    a, b = [], []
    for _ in range(4):
        a.append(wall())
        with tritonpatch.patch(model) as p:
            b.append(wall())
    for name, v in (("torch", a), ("patched", b)):
        print(f"train step {name:8s} wall ms {[round(w, 2) for w, _ in v]} median "
              f"{statistics.median(w for w, _ in v):.2f}; host issue ms median {statistics.median(i for _, i in v):.2f}")
    print(str(p).splitlines()[0])

    with tritonpatch.patch(model):
        step()
        caught = syncs_in(step)
    print(f"synchronising calls in one patched step: {len(caught)}")
    for w in caught[:5]:
        print(" -", str(w.message)[:200])

    def profiled(patched: bool) -> dict:
        handle = tritonpatch.patch(model) if patched else None
        try:
            step()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    step()
                torch.cuda.synchronize()
        finally:
            if handle is not None:
                handle.unpatch()
        rows = {}
        for e in prof.key_averages():
            dev = getattr(e, "self_device_time_total", None)
            if dev is None:
                dev = e.self_cuda_time_total
            rows[e.key] = (e.count / 3, dev / 3 / 1e3, e.self_cpu_time_total / 3 / 1e3)
        return rows
    base, pat = profiled(False), profiled(True)
    for name, rows in (("torch", base), ("patched", pat)):
        kern = [r for k, r in rows.items() if r[1] > 0 and r[2] == 0]
        print(f"{name:8s}: GPU kernel ms/step {sum(r[1] for r in kern):.2f} over {sum(r[0] for r in kern):.0f} kernels; "
              f"CPU self ms/step {sum(r[2] for r in rows.values()):.2f}")
    keys = set(base) | set(pat)
    zero = (0.0, 0.0, 0.0)
    diffs = sorted(keys, key=lambda k: -abs(pat.get(k, zero)[1] - base.get(k, zero)[1]))
    print("largest GPU-time differences per step (patched - torch): name, count, ms")
    for k in diffs[:12]:
        pb, pp = base.get(k, zero), pat.get(k, zero)
        print(f"  {k[:70]:70s} {pp[0] - pb[0]:+7.1f} {pp[1] - pb[1]:+8.3f}")
    diffs = sorted(keys, key=lambda k: -abs(pat.get(k, zero)[2] - base.get(k, zero)[2]))
    print("largest CPU-self-time differences per step (patched - torch): name, count, ms")
    for k in diffs[:15]:
        pb, pp = base.get(k, zero), pat.get(k, zero)
        print(f"  {k[:70]:70s} {pp[0] - pb[0]:+7.1f} {pp[2] - pb[2]:+8.3f}")

    with tritonpatch.patch(model):
        prof = cProfile.Profile()
        prof.enable()
        wall(3)
        prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats("tritonpatch", 15)
    print("\n".join(out.getvalue().splitlines()[4:30]))


if __name__ == "__main__":
    main()
