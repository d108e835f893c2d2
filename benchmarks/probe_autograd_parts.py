"""Where the host time of a Python autograd node goes on this host: forward + backward of tiny tensors
(the GPU idles, so the figures are host time), C++ ops against Python ``autograd.Function``s, with the
autograd engine's device threads on and off, ``Function.apply`` against the C ``_FunctionBase.apply`` it
wraps. Each variant is timed in ``--rounds`` shuffled rounds; per call: wall, the calling thread's CPU,
and the whole process's CPU (so also the engine's device thread).

    python benchmarks/probe_autograd_parts.py [--rounds 7] [--n 400]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from typing import Callable

import torch
from torch import nn

import tritonpatch
import tritonpatch.ops.common


class Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g


class Mul2(torch.autograd.Function):
    """Identity's cost plus one kernel launch each way (as a patched op has)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.mul(2)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g.mul(2)


# the C apply that Function.apply wraps (after its Python-level argument binding and functorch checks)
_C_APPLY = torch._C._FunctionBase.__dict__["apply"]
identity_fast = _C_APPLY.__get__(None, Identity)
mul2_fast = _C_APPLY.__get__(None, Mul2)


def timed(fn: Callable[[], object], n: int) -> tuple[float, float, float]:
    """us per call: wall, calling thread CPU, process CPU."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    w0, t0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
    for _ in range(n):
        fn()
    w1, t1, p1 = time.perf_counter(), time.thread_time(), time.process_time()
    torch.cuda.synchronize()
    return (w1 - w0) / n * 1e6, (t1 - t0) / n * 1e6, (p1 - p0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--profile", action="store_true", help="also take the grad-recording forward apart")
    args = ap.parse_args()
    dev = "cuda"
    x = torch.randn(64, 64, device=dev, requires_grad=True)
    g = torch.randn(64, 64, device=dev)
    xb = torch.randn(64, 64, device=dev, dtype=torch.bfloat16, requires_grad=True)
    gb = torch.randn(64, 64, device=dev, dtype=torch.bfloat16)
    ln = nn.LayerNorm(64).to(dev, torch.bfloat16)
    ln_p = nn.LayerNorm(64).to(dev, torch.bfloat16)
    engine = torch.autograd.Variable._execution_engine  # type: ignore[attr-defined]

    def direct(y, gy):
        engine.run_backward((y,), (gy,), False, False, (), True, True)  # as Tensor.backward

    variants: dict[str, Callable[[], object]] = {
        "C++ mul .backward": lambda: x.mul(2).backward(g),
        "C++ mul engine direct": lambda: direct(x.mul(2), g),
        "Identity.apply only": lambda: Identity.apply(x),
        "Identity C apply only": lambda: identity_fast(x),
        "Identity .backward": lambda: Identity.apply(x).backward(g),
        "Identity C apply .backward": lambda: identity_fast(x).backward(g),
        "Identity engine direct": lambda: direct(identity_fast(x), g),
        "Mul2 .backward": lambda: Mul2.apply(x).backward(g),
        "Mul2 C apply .backward": lambda: mul2_fast(x).backward(g),
        "nn.LayerNorm bf16 .backward": lambda: ln(xb).backward(gb),
        "patched LayerNorm bf16 .backward": lambda: ln_p(xb).backward(gb),
        "patched LayerNorm bf16 fwd only": lambda: ln_p(xb),
        "nn.LayerNorm bf16 fwd only": lambda: ln(xb),
    }
    single = {f"{k} [single thread]": v for k, v in variants.items() if ".backward" in k or "direct" in k}
    # several env facts that bear on thread handoffs
    print(f"# python {sys.version.split()[0]}, torch {torch.__version__}, switchinterval "
          f"{sys.getswitchinterval() * 1e3:.1f} ms, threads at start: {[t.name for t in threading.enumerate()]}")
    with tritonpatch.ops.common.environment(TRITONPATCH_SIZE_POLICY="0"), \
            tritonpatch.patch(ln_p, softmax=False, linear_relu=False) as p:
        ln_p(xb).backward(gb)
        print("# patch report:", str(p).replace(chr(10), " | "))
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in [*variants, *single]}
        names = list(results)
        for _ in range(args.rounds):
            random.shuffle(names)
            for name in names:
                if name in single:
                    with torch.autograd.set_multithreading_enabled(False):
                        results[name].append(timed(single[name], args.n))
                else:
                    results[name].append(timed(variants[name], args.n))
    print(f"# us per call, median of {args.rounds} rounds of {args.n} calls (shuffled order)")
    print(f"{'variant':48s} {'wall':>8s} {'main CPU':>9s} {'proc CPU':>9s}")
    for name in [*variants, *single]:
        cols = list(zip(*results[name]))
        w, t, p_ = (statistics.median(c) for c in cols)
        print(f"{name:48s} {w:8.1f} {t:9.1f} {p_:9.1f}")
    print(f"# threads at end: {[t.name for t in threading.enumerate()]}")
    if args.profile:
        profile_forward(xb, ln_p, args.n)


def profile_forward(xb: torch.Tensor, ln_p: nn.Module, n: int) -> None:
    """The patched LayerNorm's forward when autograd records it, taken apart: each layer of the call
    timed alone, then cProfile of the whole."""
    import cProfile
    import pstats

    from tritonpatch.ops import layer_norm as ln_op
    w, b = ln_p.weight, ln_p.bias
    xd = xb.detach()
    parts: dict[str, Callable[[], object]] = {
        "forward_rows, no stats": lambda: ln_op.forward_rows(xd, 64, w, b, 1e-5, False),
        "forward_rows, stats": lambda: ln_op.forward_rows(xd, 64, w, b, 1e-5, True),
        "_LayerNormFunction.apply": lambda: ln_op._LayerNormFunction.apply(xb, w, b, (64,), 1e-5),
        "ln_op.layer_norm, grad": lambda: ln_op.layer_norm(xb, (64,), w, b, 1e-5),
        "ln_op.layer_norm, no grad": lambda: ln_op.layer_norm(xd, (64,), w.detach(), b.detach(), 1e-5),
        "F.layer_norm, grad": lambda: torch.nn.functional.layer_norm(xb, (64,), w, b, 1e-5),
        "torch.empty(64) x3": lambda: (torch.empty(64, device="cuda"), torch.empty(64, device="cuda"),
                                       torch.empty(64, device="cuda")),
    }
    with tritonpatch.ops.common.environment(TRITONPATCH_SIZE_POLICY="0"), \
            tritonpatch.patch(ln_p, softmax=False, linear_relu=False):
        parts["patched module, grad"] = lambda: ln_p(xb)
        parts["patched module, no grad"] = lambda: ln_p(xd)
        res = {k: [] for k in parts}
        for _ in range(5):
            for k, f in parts.items():
                res[k].append(timed(f, n)[0])
        for k, v in res.items():
            print(f"{k:48s} {statistics.median(v):8.1f} us")
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(n):
            ln_p(xb)
        pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
