"""Linear+ReLU on a CUDA GPU: fused Triton kernel vs ``F.relu(F.linear(x, w, b))`` vs ``F.linear`` alone.

    python benchmarks/bench_linear_relu.py [--csv out.csv] [--quick]

First a correctness check on a few shapes (against float64, same bar as the tests), then median times
(``triton.testing.do_bench``) in bf16 (and fp16 at one shape), forward and forward+backward. For the
backward it also times both implementations of the fused op (``BACKWARD_IMPL`` = "torch": cuBLAS mm +
one mask pass, "triton": masked Triton GEMMs with grad_b fused) so the per-shape choice can be made.

Columns: ms (median), TFLOP/s (forward 2MNK; fwd+bwd 6MNK), speedup vs F.linear + F.relu.
The first call per shape autotunes (not timed; do_bench warms up).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tritonpatch.ops import linear_relu as op  # noqa: E402
from results_io import write_csv  # noqa: E402 (benchmarks/ is on sys.path)

SHAPES = [  # (M, K, N)
    (8192, 768, 3072),
    (16384, 1024, 4096),
    (8192, 4096, 16384),
    (128, 4096, 4096),
    (2048, 768, 3072),
    (512, 1024, 4096),
]
FP16_SHAPES = [(8192, 768, 3072)]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm()).item()


def check(dtype: torch.dtype) -> bool:
    """Fused op (both backwards) vs float64 on a few shapes; bar: 1.5x torch's own error + quarter ulp."""
    ok = True
    floor = {torch.float16: 2.0**-12, torch.bfloat16: 2.0**-9}[dtype]
    for (M, K, N) in [(1000, 384, 1536), (257, 200, 333), (4096, 768, 3072)]:
        x = torch.randn(M, K, device="cuda", dtype=dtype)
        w = (torch.randn(N, K, device="cuda") * K**-0.5).to(dtype)
        b = torch.randn(N, device="cuda", dtype=dtype)
        dy = torch.randn(M, N, device="cuda", dtype=dtype)
        ref = [t.double().requires_grad_() for t in (x, w, b)]
        yr = F.relu(F.linear(*ref))
        yr.backward(dy.double())
        mine = [t.clone().requires_grad_() for t in (x, w, b)]
        yt = F.relu(F.linear(*mine))
        yt.backward(dy)
        for impl in ("torch", "triton"):
            op.BACKWARD_IMPL = impl
            ours = [t.clone().requires_grad_() for t in (x, w, b)]
            y = op.linear_relu(*ours)
            y.backward(dy)
            pairs = [("out", y, yr, yt)] + [(n, o.grad, r.grad, t.grad) for n, o, r, t in
                                            zip(("dx", "dw", "db"), ours, ref, mine)]
            for name, o, r, t in pairs:
                err, bar = rel_err(o, r), 1.5 * rel_err(t, r) + floor
                if not err <= bar:
                    ok = False
                    print(f"FAIL {dtype} {M}x{K}->{N} bwd={impl} {name}: {err:.3e} > {bar:.3e}")
    op.BACKWARD_IMPL = "torch"
    print(f"correctness {dtype}: {'ok' if ok else 'FAILED'}")
    return ok


def bench(fn, quick: bool) -> float:
    return triton.testing.do_bench(fn, warmup=10 if quick else 25, rep=30 if quick else 100,
                                   return_mode="median")


def run_shape(M: int, K: int, N: int, dtype: torch.dtype, quick: bool) -> list[dict]:
    x = torch.randn(M, K, device="cuda", dtype=dtype, requires_grad=True)
    w = (torch.randn(N, K, device="cuda") * K**-0.5).to(dtype).requires_grad_()
    b = torch.randn(N, device="cuda", dtype=dtype).requires_grad_()
    dy = torch.randn(M, N, device="cuda", dtype=dtype)
    reason = op.unsupported(x, w, b)

    def fwd_bwd(f):
        def run():
            x.grad = w.grad = b.grad = None
            f().backward(dy)
        return run

    fused = lambda: op.linear_relu(x, w, b)  # noqa: E731
    eager = lambda: F.relu(F.linear(x, w, b))  # noqa: E731
    linear = lambda: F.linear(x, w, b)  # noqa: E731

    t0 = time.perf_counter()
    with torch.no_grad():
        op.linear_relu(x, w, b)  # autotune the forward outside the timings
    tune_s = time.perf_counter() - t0
    rows = []
    flops_f, flops_fb = 2 * M * N * K, 6 * M * N * K
    with torch.no_grad():
        t_eager = bench(eager, quick)
        times = {"F.linear+F.relu": t_eager, "F.linear": bench(linear, quick), "fused": bench(fused, quick)}
    for name, t in times.items():
        rows.append(dict(dtype=str(dtype).replace("torch.", ""), M=M, K=K, N=N, pass_="fwd", impl=name, ms=t,
                         tflops=flops_f / t * 1e-9, speedup=t_eager / t, policy=reason or ""))
    t_eager_fb = bench(fwd_bwd(eager), quick)
    times = {"F.linear+F.relu": t_eager_fb, "F.linear": bench(fwd_bwd(linear), quick)}
    for impl in ("torch", "triton"):
        op.BACKWARD_IMPL = impl
        fwd_bwd(fused)()  # autotune the backward kernels outside the timings
        times[f"fused bwd={impl}"] = bench(fwd_bwd(fused), quick)
    op.BACKWARD_IMPL = "torch"
    for name, t in times.items():
        rows.append(dict(dtype=str(dtype).replace("torch.", ""), M=M, K=K, N=N, pass_="fwd+bwd", impl=name,
                         ms=t, tflops=flops_fb / t * 1e-9, speedup=t_eager_fb / t, policy=reason or ""))
    print(f"  ({M}, {K}, {N}) {dtype}: first fused call (autotune) {tune_s:.1f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, help="write all rows to this CSV file")
    ap.add_argument("--quick", action="store_true", help="shorter timings, first two shapes only")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness check")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}")
    start = time.perf_counter()
    if not args.no_check:
        if not (check(torch.bfloat16) & check(torch.float16)):
            print("correctness check FAILED (timings follow anyway)")
    shapes = [(s, torch.bfloat16) for s in SHAPES] + [(s, torch.float16) for s in FP16_SHAPES]
    if args.quick:
        shapes = shapes[:2]
    rows = []
    for (M, K, N), dtype in shapes:
        rows += run_shape(M, K, N, dtype, args.quick)
        torch.cuda.empty_cache()

    print(f"\n{'dtype':5} {'M':>6} {'K':>5} {'N':>6} {'pass':8} {'impl':18} {'ms':>8} {'TFLOP/s':>8} "
          f"{'vs lin+relu':>11}  policy")
    for r in rows:
        print(f"{r['dtype']:5} {r['M']:6d} {r['K']:5d} {r['N']:6d} {r['pass_']:8} {r['impl']:18} {r['ms']:8.4f} "
              f"{r['tflops']:8.1f} {r['speedup']:10.2f}x  {r['policy']}")
    # Best backward per shape, for the lead's per-shape choice.
    print("\nbackward choice (fwd+bwd ms): shape -> torch / triton -> pick")
    by = {}
    for r in rows:
        if r["pass_"] == "fwd+bwd" and r["impl"].startswith("fused"):
            by.setdefault((r["dtype"], r["M"], r["K"], r["N"]), {})[r["impl"].split("=")[1]] = r["ms"]
    for key, d in by.items():
        print(f"  {key}: {d['torch']:.4f} / {d['triton']:.4f} -> {min(d, key=d.get)}")
    gm = math.exp(sum(math.log(r["speedup"]) for r in rows if r["impl"] == "fused") /
                  max(1, sum(1 for r in rows if r["impl"] == "fused")))
    print(f"geomean fused fwd speedup vs linear+relu: {gm:.2f}x; total {time.perf_counter() - start:.0f} s")
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
