"""Why a patched BERT-base (eager attention) forward at 8 x 512 is slower than unpatched while the same
model under SDPA is not: the difference is the 12 attention softmax calls, which the size policy gives to
Triton (48 MiB of bf16 scores, over the 32 MiB inference bar).

    python benchmarks/probe_eager_softmax_e2e.py [--model bert-base-relu] [--attn eager]

Variants, timed call by call in alternation (A B C D, D C B A, ...; CUDA events, synchronised): unpatched;
patched as shipped; patched with softmax kept on torch (its bar raised); patched with the size policy off;
patched for softmax alone (on Triton, and kept on torch); patched for all but softmax.
Per variant: median ms, and the host's issue time (call to return, device idle at the start). Then, for
one forward of each of the first two variants, torch.profiler's CUDA kernels (GPU time) and the CUDA
runtime calls that wait (synchronisations, copies), and torch's sync debug mode's count.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import tritonpatch
from bench_e2e import build  # noqa: E402 (benchmarks/ is on sys.path)
from profile_e2e_cpu import syncs_in  # noqa: E402
from tritonpatch.ops import common, size_policy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base-relu")
    ap.add_argument("--attn", default="eager")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build(args.model, args.attn).to("cuda", torch.bfloat16).train()
    ids = torch.randint(0, model.config.vocab_size, (8, 512), device="cuda")

    def fwd() -> None:
        with torch.no_grad():
            model(input_ids=ids)

    bars = dict(size_policy.MIN_SIZE)

    class Variant:
        def __init__(self, name: str, patched: bool, softmax_torch: bool = False, policy: bool = True,
                     **ops: bool):
            self.name, self.patched, self.softmax_torch, self.policy = name, patched, softmax_torch, policy
            self.ops = ops
            self.handle = None

        def __enter__(self):
            if self.softmax_torch:
                size_policy.MIN_SIZE["softmax"] = (2 ** 62, 2 ** 62)
            common.SETTINGS.size_policy = self.policy
            self.handle = tritonpatch.patch(model, **self.ops) if self.patched else None
            return self

        def __exit__(self, *exc):
            if self.handle is not None:
                self.report = str(self.handle).splitlines()
                self.handle.unpatch()
            size_policy.MIN_SIZE.update(bars)
            common.SETTINGS.size_policy = True

    variants = [Variant("unpatched", False), Variant("patched", True),
                Variant("patched, softmax on torch", True, softmax_torch=True),
                Variant("patched, size policy off", True, policy=False),
                Variant("patched: softmax only", True, layer_norm=False, linear_relu=False),
                Variant("patched: softmax only, on torch", True, softmax_torch=True, layer_norm=False,
                        linear_relu=False),
                Variant("patched: all but softmax", True, softmax=False)]
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    issue: dict[str, list[float]] = {v.name: [] for v in variants}
    for i in range(-1, args.iters):
        for v in (variants if i % 2 else variants[::-1]):
            with v:
                fwd()  # after each toggle, untimed
                torch.cuda.synchronize()
                if i < 0:
                    continue
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                t0 = time.perf_counter()
                e0.record()
                fwd()
                e1.record()
                t1 = time.perf_counter()
                torch.cuda.synchronize()
                times[v.name].append(e0.elapsed_time(e1))
                issue[v.name].append((t1 - t0) * 1e3)
    print(f"== {args.model}, {args.attn}, bf16, 8x512, forward (no_grad, train mode as bench_e2e), "
          f"{args.iters} alternations")
    base = statistics.median(times["unpatched"])
    for v in variants:
        t = statistics.median(times[v.name])
        print(f"  {v.name:28s} {t:8.3f} ms ({base / t:.3f}x)  host issue {statistics.median(issue[v.name]):8.3f} ms"
              + (f"  | {v.report[0]}" if v.patched else ""))
    for v in variants[1:2]:
        print("  report:\n    " + "\n    ".join(v.report[1:12]))

    if args.no_profile:
        return
    from torch.profiler import ProfilerActivity, profile
    for v in variants[:2]:
        with v:
            fwd()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                fwd()
                torch.cuda.synchronize()
        ev = prof.key_averages()
        kernels = sorted((e for e in ev if e.device_time_total > 0 and e.device_type.name == "CUDA"),
                         key=lambda e: -e.device_time_total)
        total = sum(e.device_time_total for e in kernels)
        print(f"== {v.name}: CUDA kernels, GPU time {total / 1e3:.3f} ms in all; top 12:")
        for e in kernels[:12]:
            print(f"    {e.device_time_total / 1e3:8.3f} ms  x{e.count:4d}  {e.key[:110]}")
        waits = [e for e in ev if any(s in e.key for s in ("Synchronize", "Memcpy", "cudaStreamWait",
                                                             "cudaEventSynchronize", "item", "_local_scalar"))]
        print("  waiting calls: " + (", ".join(f"{e.key} x{e.count} ({e.cpu_time_total / 1e3:.3f} ms)"
                                                for e in waits) or "none"))
        cpu = sorted((e for e in ev if e.device_type.name == "CPU"), key=lambda e: -e.self_cpu_time_total)
        print("  top CPU self time: " + "; ".join(f"{e.key[:50]} {e.self_cpu_time_total / 1e3:.3f} ms x{e.count}"
                                                  for e in cpu[:8]))
    with variants[1]:
        fwd()
        caught = syncs_in(fwd)
    print(f"== synchronising calls in one patched forward (sync debug mode): {len(caught)}")
    for w in caught[:5]:
        print("   -", str(w.message)[:200])


if __name__ == "__main__":
    main()
