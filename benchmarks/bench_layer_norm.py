"""LayerNorm: tritonpatch's Triton kernels vs torch.nn.functional.layer_norm on a CUDA GPU.

    python benchmarks/bench_layer_norm.py [--csv PATH] [--quick]

1. Correctness: fp32 relative error vs a float64 reference (out, dx, dw, db) for a few shapes, ours and
   torch's side by side; bf16 too. Exits non-zero if fp32 is above 1e-6 or bf16 above 1.5x torch.
2. Timing (triton.testing.do_bench, median): forward, and backward alone (torch.autograd.grad with
   retain_graph on an output created once; dx, dw, db), for bf16 and fp32.
   fwd GB/s = 2*M*N*elt / t (read x, write y); bwd GB/s = 3*M*N*elt / t (read x, dy, write dx).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
import triton
import triton.testing

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tritonpatch.ops.layer_norm import layer_norm, unsupported  # noqa: E402
from results_io import write_csv  # noqa: E402 (benchmarks/ is on sys.path)

SHAPES = [(32768, 768), (16384, 1024), (8192, 4096), (4096, 8192), (2048, 32768), (1024, 65536)]
CHECK_SHAPES = [(64, 1), (300, 127), (257, 768), (64, 4097), (16, 12000), (8, 65536)]
DTYPES = [torch.bfloat16, torch.float32]


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double(), ref.double()
    return ((a - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def run_both(fn, x, w, b, dy):
    xs, ws, bs = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y = fn(xs, ws, bs)
    return (y, *torch.autograd.grad(y, (xs, ws, bs), dy))


def check() -> bool:
    ok = True
    print("correctness: rel err vs float64 (out / dx / dw / db)")
    for m, n in CHECK_SHAPES:
        for dtype in DTYPES:
            x = torch.randn(m, n, device="cuda").to(dtype)
            w = torch.randn(n, device="cuda").to(dtype)
            b = torch.randn(n, device="cuda").to(dtype)
            dy = torch.randn(m, n, device="cuda").to(dtype)
            assert unsupported(x, (n,), w, b, 1e-5) is None
            ours = run_both(lambda x_, w_, b_: layer_norm(x_, (n,), w_, b_), x, w, b, dy)
            ref = run_both(lambda x_, w_, b_: F.layer_norm(x_, (n,), w_, b_), x.double(), w.double(),
                           b.double(), dy.double())
            own = run_both(lambda x_, w_, b_: F.layer_norm(x_, (n,), w_, b_), x, w, b, dy)
            names = ("out", "dx", "dw", "db")
            errs_o, errs_t = [], []
            for i, name in enumerate(names):
                if n == 1 and name in ("dx", "dw"):  # exact value 0
                    errs_o.append(ours[i].abs().max().item())
                    errs_t.append(own[i].abs().max().item())
                    continue
                eo, et = rel_err(ours[i], ref[i]), rel_err(own[i], ref[i])
                errs_o.append(eo)
                errs_t.append(et)
                bad = eo > 1e-6 if dtype == torch.float32 else eo > 1.5 * et + 2.0**-9
                if bad:
                    ok = False
                    print(f"  FAIL {name} {m}x{n} {dtype}: ours {eo:.2e} torch {et:.2e}")
            fmt = lambda es: " / ".join(f"{e:.1e}" for e in es)  # noqa: E731
            print(f"  {m:>6}x{n:<6} {str(dtype)[6:]:>8}  ours {fmt(errs_o)}   torch {fmt(errs_t)}")
    # determinism
    x = torch.randn(4096, 1024, device="cuda", requires_grad=True)
    w = torch.randn(1024, device="cuda", requires_grad=True)
    b = torch.randn(1024, device="cuda", requires_grad=True)
    dy = torch.randn(4096, 1024, device="cuda")
    y = layer_norm(x, (1024,), w, b)
    g1 = torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)
    g2 = torch.autograd.grad(y, (x, w, b), dy)
    det = all(torch.equal(a, c) for a, c in zip(g1, g2))
    print(f"  backward bitwise deterministic: {det}")
    return ok and det


def bench(quick: bool) -> list[dict]:
    rows = []
    shapes = SHAPES[:2] if quick else SHAPES
    for m, n in shapes:
        for dtype in DTYPES:
            elt = torch.finfo(dtype).bits // 8
            x = torch.randn(m, n, device="cuda", dtype=dtype, requires_grad=True)
            w = torch.randn(n, device="cuda", dtype=dtype, requires_grad=True)
            b = torch.randn(n, device="cuda", dtype=dtype, requires_grad=True)
            dy = torch.randn(m, n, device="cuda", dtype=dtype)
            res = {"M": m, "N": n, "dtype": str(dtype).replace("torch.", "")}
            for name, fn in (("torch", F.layer_norm), ("ours", layer_norm)):
                with torch.no_grad():
                    t_f = triton.testing.do_bench(lambda: fn(x, (n,), w, b), return_mode="median")
                y = fn(x, (n,), w, b)
                t_b = triton.testing.do_bench(
                    lambda: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True),
                    return_mode="median")
                res[f"fwd_ms_{name}"] = t_f
                res[f"bwd_ms_{name}"] = t_b
                res[f"fwd_GBs_{name}"] = 2 * m * n * elt / t_f / 1e6
                res[f"bwd_GBs_{name}"] = 3 * m * n * elt / t_b / 1e6
                del y
            res["fwd_speedup"] = res["fwd_ms_torch"] / res["fwd_ms_ours"]
            res["bwd_speedup"] = res["bwd_ms_torch"] / res["bwd_ms_ours"]
            rows.append(res)
            print(f"{m:>6}x{n:<6} {res['dtype']:>8} | fwd ms {res['fwd_ms_torch']:.4f}/{res['fwd_ms_ours']:.4f}"
                  f"  GB/s {res['fwd_GBs_torch']:6.0f}/{res['fwd_GBs_ours']:6.0f}  x{res['fwd_speedup']:.2f}"
                  f" | bwd ms {res['bwd_ms_torch']:.4f}/{res['bwd_ms_ours']:.4f}"
                  f"  GB/s {res['bwd_GBs_torch']:6.0f}/{res['bwd_GBs_ours']:6.0f}  x{res['bwd_speedup']:.2f}",
                  flush=True)
            del x, w, b, dy
            torch.cuda.empty_cache()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", help="write the timing rows to this CSV file")
    ap.add_argument("--quick", action="store_true", help="two shapes only")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness pass")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
    ok = True if args.no_check else check()
    print("\ntiming (median), columns are torch/ours")
    rows = bench(args.quick)
    if args.csv:
        write_csv(rows, args.csv)
    if not ok:
        print("CORRECTNESS CHECK FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
