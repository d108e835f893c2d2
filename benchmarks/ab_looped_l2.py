"""GPU time of the library's looped (two-pass) row kernels, for an A/B of two checkouts in alternation.

    PYTHONPATH=<checkout> python benchmarks/ab_looped_l2.py > times.txt     # one side, one round
    python benchmarks/ab_looped_l2.py --summarize old_*.txt -- new_*.txt    # medians, new vs old
    options: --only OP (ln_fwd, ln_bwd, sm_fwd, sm_bwd; repeatable), --off NAME (set the module constant
    NAME of tritonpatch.ops.layer_norm / softmax to False first, where it exists), --torch (also time
    torch's own op for each case, as "torch_<op>"), --fp32-hints (a probe: the LayerNorm looped
    forward takes its L2 hints in fp32 too)

Times (``do_bench`` medians, warmup 10 ms, rep 50 ms) the ops the wide rows take: the LayerNorm forward
beyond 32768 (looped kernel), the LayerNorm backward beyond 8192 (per-row c1/c2 kernel, then the
column-block kernel), the softmax forward beyond 32768 in bf16/fp16 (looped; fp32 rows are split) and the
softmax backward beyond 32768 in bf16/fp16 (looped). Each case is checked against float64 first.
"""
from __future__ import annotations

import statistics
import sys

import torch

CASES = [
    ("ln_fwd", 4096, 65536, torch.bfloat16), ("ln_fwd", 4096, 65536, torch.float16),
    ("ln_fwd", 4096, 65536, torch.float32), ("ln_fwd", 2048, 131072, torch.bfloat16),
    ("ln_fwd", 1024, 49152, torch.bfloat16), ("ln_fwd", 2048, 49152, torch.float32),
    ("ln_fwd", 4096, 40000, torch.float32), ("ln_fwd", 1024, 131072, torch.float32),
    ("ln_fwd", 1024, 98304, torch.float32),
    ("ln_fwd", 4096, 36864, torch.float32), ("ln_fwd", 64, 65536, torch.float32),
    ("sm_fwd", 512, 65536, torch.bfloat16), ("sm_fwd", 256, 131072, torch.bfloat16),
    ("sm_fwd", 512, 128256, torch.bfloat16), ("sm_fwd", 1024, 49152, torch.float16),
    ("sm_fwd", 4096, 65536, torch.bfloat16),
    ("sm_bwd", 512, 65536, torch.bfloat16), ("sm_bwd", 256, 131072, torch.bfloat16),
    ("sm_bwd", 512, 128256, torch.bfloat16), ("sm_bwd", 1024, 49152, torch.float16),
    ("sm_bwd", 2048, 65536, torch.bfloat16),
    ("ln_bwd", 4096, 16384, torch.bfloat16), ("ln_bwd", 4096, 16384, torch.float32),
    ("ln_bwd", 4096, 32768, torch.bfloat16), ("ln_bwd", 8192, 12288, torch.bfloat16),
    ("ln_bwd", 4096, 65536, torch.bfloat16),
]


def measure(only: list[str], off: list[str], with_torch: bool, fp32_hints: bool) -> None:
    from triton.testing import do_bench

    from tritonpatch.ops import layer_norm as L
    from tritonpatch.ops import softmax as S

    for name in off:
        for mod in (L, S):
            if hasattr(mod, name):
                setattr(mod, name, False)
    if fp32_hints:
        plan_fwd = L._fwd_plan

        def hinted_plan(*args):
            plan = plan_fwd(*args)
            if "L2_HINTS" in plan.constexprs:  # before its first call, so the compiled kernel takes it
                plan.constexprs = dict(plan.constexprs, L2_HINTS=True)
            return plan
        L._fwd_plan = hinted_plan
    for op, m, n, dt in CASES:
        if only and op not in only:
            continue
        x = torch.randn(m, n, device="cuda", dtype=dt) * 2 + 0.5
        torch_run = None
        if op == "ln_bwd":
            w = torch.randn(n, device="cuda", dtype=dt)
            dy = torch.randn(m, n, device="cuda", dtype=dt)
            mean = x.float().mean(1)
            rstd = 1 / (x.float().var(1, unbiased=False) + 1e-5).sqrt()
            xd = x.double().requires_grad_(True)
            torch.nn.functional.layer_norm(xd, (n,), w.double(), None, 1e-5).backward(dy.double())
            ref = xd.grad
            run = lambda: L.backward_rows(x, dy, n, w, mean, rstd, True, True, True, dt)[0]  # noqa: E731
            nbytes = 3 * x.numel() * x.element_size()
        elif op == "ln_fwd":
            w = torch.randn(n, device="cuda", dtype=dt)
            b = torch.randn(n, device="cuda", dtype=dt)
            ref = torch.nn.functional.layer_norm(x.double(), (n,), w.double(), b.double(), 1e-5)
            run = lambda: L.forward_rows(x, n, w, b, 1e-5, True)[0]  # noqa: E731
            torch_run = lambda: torch.nn.functional.layer_norm(x, (n,), w, b, 1e-5)  # noqa: E731
            nbytes = 2 * x.numel() * x.element_size()
        elif op == "sm_fwd":
            ref = torch.softmax(x.double(), -1)
            run = lambda: S._forward(x, 1, dt)  # noqa: E731
            torch_run = lambda: torch.softmax(x, -1)  # noqa: E731
            nbytes = 2 * x.numel() * x.element_size()
        else:
            y = torch.softmax(x.float(), -1).to(dt)
            dy = torch.randn(m, n, device="cuda", dtype=dt)
            yd = y.double()
            ref = yd * (dy.double() - (yd * dy.double()).sum(-1, keepdim=True))
            run = lambda: S._backward(y, dy, 1, dt)  # noqa: E731
            nbytes = 3 * x.numel() * x.element_size()
        out = run()
        err = ((out.double() - ref).norm() / ref.norm()).item()
        t = do_bench(run, warmup=10, rep=50, return_mode="median")
        print(f"{op} {m}x{n} {str(dt)[6:]} {t * 1e3:.2f} us {nbytes / t / 1e6:.0f} GB/s err {err:.1e}", flush=True)
        if with_torch and torch_run is not None:
            t = do_bench(torch_run, warmup=10, rep=50, return_mode="median")
            print(f"torch_{op} {m}x{n} {str(dt)[6:]} {t * 1e3:.2f} us {nbytes / t / 1e6:.0f} GB/s", flush=True)


def summarize(old: list[str], new: list[str]) -> None:
    def load(paths: list[str]) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {}
        for p in paths:
            for line in open(p):
                parts = line.split()
                if len(parts) > 4 and parts[4] == "us":
                    times.setdefault(" ".join(parts[:3]), []).append(float(parts[3]))
        return times
    a, b = load(old), load(new)
    print(f"case: old us -> new us (median of {len(old)} / {len(new)} runs), old / new")
    for case in a:
        if case in b:
            o, n = statistics.median(a[case]), statistics.median(b[case])
            print(f"{case}: {o:.1f} -> {n:.1f} us, {o / n:.2f}x  (old {a[case]}, new {b[case]})")


if __name__ == "__main__":
    if "--summarize" in sys.argv:
        args = sys.argv[sys.argv.index("--summarize") + 1:]
        cut = args.index("--")
        summarize(args[:cut], args[cut + 1:])
    else:
        argv = sys.argv[1:]
        measure([argv[i + 1] for i, a in enumerate(argv) if a == "--only"],
                [argv[i + 1] for i, a in enumerate(argv) if a == "--off"], "--torch" in argv, "--fp32-hints" in argv)
