"""LayerNorm backward for rows wider than FUSED_BWD_MAX: the shipped column-block path against the
whole-row ("fused") kernel forced to those widths, per launch configuration, on a GPU.

    python benchmarks/sweep_ln_bwd_wide.py [--csv PATH]

The shipped path reads x and dy twice (a per-row c1/c2 pass, then dx and the dw/db partials per column
block); the whole-row kernel reads them once but holds a row and its fp32 dw/db accumulators in
registers, which may spill at these widths. Each variant's dx, dw, db are checked against the shipped
path's before it is timed (do_bench median; effective rate = bytes of x, dy and dx / time).
"""
from __future__ import annotations

import argparse

import torch
from triton.testing import do_bench

from tritonpatch.ops import layer_norm as ln
from tritonpatch.ops.column_sums import column_sums_launch
from tritonpatch.ops.common import cdiv, next_power_of_2
from results_io import write_csv  # noqa: E402 (benchmarks/ is on sys.path)


def fused(x, dy, w, mean, rstd, warps: int, per_sm: int, prefetch: bool):
    """The whole-row kernel at any width: one row per tile, ``per_sm`` programs per SM."""
    m, n = x.shape
    dx = torch.empty_like(x)
    g = min(m, torch.cuda.get_device_properties(x.device).multi_processor_count * per_sm)
    rows_per_prog = cdiv(m, g)
    g = cdiv(m, rows_per_prog)
    part = torch.empty(2, g, n, dtype=torch.float32, device=x.device)
    ln.layer_norm_bwd_fused_kernel[(g,)](
        x, dy, dx, w, mean, rstd, part, n, n, n, m, n, rows_per_prog, g,
        HAS_W=True, COMPUTE_DX=True, COMPUTE_DW=True, COMPUTE_DB=True,
        BLOCK_N=next_power_of_2(n), ROWS=1, PREFETCH=prefetch, num_warps=warps)
    dw = torch.empty(n, dtype=x.dtype, device=x.device)
    db = torch.empty(n, dtype=x.dtype, device=x.device)
    column_sums_launch(g, n, 2, None)(part, dw, db)
    return dx, dw, db


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv")
    args = ap.parse_args()
    dev = "cuda"
    src = torch.empty(2 ** 29, dtype=torch.bfloat16, device=dev)  # 1 GiB copy: the ceiling
    dst = torch.empty_like(src)
    copy_gbs = 2 * src.numel() * 2 / do_bench(lambda: dst.copy_(src), return_mode="median") / 1e6
    print(f"copy ceiling {copy_gbs:.0f} GB/s", flush=True)
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        for m, n in ((4096, 12288), (4096, 16384), (2048, 32768)):
            x = torch.randn(m, n, device=dev, dtype=dtype)
            dy = torch.randn(m, n, device=dev, dtype=dtype)
            w = torch.randn(n, device=dev, dtype=dtype)
            _, mean, rstd = ln.forward_rows(x, n, w, w, 1e-5, True)
            nbytes = 3 * m * n * x.element_size()

            def shipped():
                return ln.backward_rows(x, dy, n, w, mean, rstd, True, True, True, dtype)
            ref = shipped()
            variants = [("shipped (column blocks)", shipped)]
            for warps in (16, 32):
                for per_sm in (1, 2):
                    for prefetch in ((False, True) if n <= 12288 else (False,)):
                        variants.append((f"whole row, {warps} warps, {per_sm}/SM{', prefetch' if prefetch else ''}",
                                         lambda w_=warps, p_=per_sm, f_=prefetch: fused(x, dy, w, mean, rstd, w_, p_, f_)))
            for name, fn in variants:
                try:
                    got = fn()
                    errs = [rel(a, b) for a, b in zip(got, ref)]
                    ms = do_bench(fn, return_mode="median")
                except Exception as e:  # noqa: BLE001 (a variant that does not compile is a result too)
                    print(f"{str(dtype):15s} {m}x{n} {name:40s} failed: {type(e).__name__}: {str(e)[:120]}")
                    continue
                gbs = nbytes / ms / 1e6
                row = dict(dtype=str(dtype).replace("torch.", ""), m=m, n=n, variant=name, ms=f"{ms:.4f}",
                           gbs=f"{gbs:.0f}", pct_copy=f"{100 * gbs / copy_gbs:.1f}",
                           max_rel_err=f"{max(errs):.2e}")
                rows.append(row)
                print(f"{row['dtype']:9s} {m}x{n} {name:40s} {ms:8.4f} ms {gbs:6.0f} GB/s "
                      f"{row['pct_copy']:>5s}% of copy  err {row['max_rel_err']}", flush=True)
            x = dy = ref = None  # free before the next shape
            torch.cuda.empty_cache()
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
