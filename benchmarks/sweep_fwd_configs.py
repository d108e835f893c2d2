"""Forward launch-config sweep for LayerNorm and softmax rows on a GPU (the suite's forward shapes).

    python benchmarks/sweep_fwd_configs.py [--csv OUT.csv]

Per shape it prints the copy of the same bytes (``y.copy_(x)``: what HBM gives at this size), the shipped
forward, then every candidate, each as ms and % of the 1 GiB copy ceiling. Every candidate is checked
against a float64 reference before it is timed (a wrong one is reported, not timed). Candidates:

* LayerNorm: the shipped whole-row kernel over tile sizes (ROWS * BLOCK_N) and warps, and an experimental
  variant (defined here) that splits a non-power-of-two row into two power-of-two pieces (768 = 512 + 256:
  no idle lanes), drops the masks when the tile divides the matrix exactly, and can load x evict-first.
* softmax: the shipped whole-row kernel over tiles and warps, and the looped kernel over block sizes and
  warps (for wide rows with few rows: smaller programs, more of them resident). Commit 75a3d9d also swept
  a persistent kernel that prefetches the next row (``results_2026-11-30/sweep_fwd_softmax_persistent.txt``:
  no faster, removed).

The result sets ``_fwd_config`` (tritonpatch/ops/layer_norm.py) and ``_rows_config`` / ``ROWS_TILE``
(tritonpatch/ops/softmax.py).
"""
from __future__ import annotations

import argparse
import itertools

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from tritonpatch.kernels import layer_norm as LK
from tritonpatch.kernels import softmax as SK
from tritonpatch.ops import layer_norm as L
from tritonpatch.ops import softmax as S
from tritonpatch.ops.common import next_power_of_2
from harness import rel_err  # noqa: E402 (benchmarks/ is on sys.path)
from results_io import write_csv  # noqa: E402

DEVICE = "cuda"
EPS = 1e-5


@triton.jit
def ln_fwd_pieces_kernel(X, Y, W, B, stride_x, stride_y, M, N, eps,
                         BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, TAIL: tl.constexpr,
                         ROWS: tl.constexpr, MASKED: tl.constexpr, EVICT: tl.constexpr):
    """LayerNorm forward (weight and bias) of ROWS rows per program; a row is held as two power-of-two
    pieces [0, BLOCK_A) and [BLOCK_A, BLOCK_A + BLOCK_B) (TAIL), so N = 768 uses 512 + 256 lanes."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS)
    ca = tl.arange(0, BLOCK_A)
    xa_p = X + rows[:, None] * stride_x + ca[None, :]
    if MASKED:
        ma = (rows < M)[:, None] & (ca < N)[None, :]
        xa = tl.load(xa_p, mask=ma, other=0.0, eviction_policy="evict_first" if EVICT else "").to(tl.float32)
    else:
        xa = tl.load(xa_p, eviction_policy="evict_first" if EVICT else "").to(tl.float32)
    s = tl.sum(xa, axis=1)
    if TAIL:
        cb = BLOCK_A + tl.arange(0, BLOCK_B)
        mb = (rows < M)[:, None] & (cb < N)[None, :]
        xb = tl.load(X + rows[:, None] * stride_x + cb[None, :], mask=mb, other=0.0,
                     eviction_policy="evict_first" if EVICT else "").to(tl.float32)
        s += tl.sum(xb, axis=1)
    mean = s / N
    xca = xa - mean[:, None]
    if MASKED:
        xca = tl.where(ma, xca, 0.0)
    q = tl.sum(xca * xca, axis=1)
    if TAIL:
        xcb = tl.where(mb, xb - mean[:, None], 0.0)
        q += tl.sum(xcb * xcb, axis=1)
    rstd = 1.0 / tl.sqrt(q / N + eps)
    ya = xca * rstd[:, None] * tl.load(W + ca).to(tl.float32)[None, :] + tl.load(B + ca).to(tl.float32)[None, :]
    ya_p = Y + rows[:, None] * stride_y + ca[None, :]
    if MASKED:
        tl.store(ya_p, ya.to(Y.dtype.element_ty), mask=ma)
    else:
        tl.store(ya_p, ya.to(Y.dtype.element_ty))
    if TAIL:
        okb = cb < N
        yb = (xcb * rstd[:, None] * tl.load(W + cb, mask=okb, other=0.0).to(tl.float32)[None, :]
              + tl.load(B + cb, mask=okb, other=0.0).to(tl.float32)[None, :])
        tl.store(Y + rows[:, None] * stride_y + cb[None, :], yb.to(Y.dtype.element_ty), mask=mb)


def bench(fn) -> float:
    return do_bench(fn, warmup=5, rep=25, return_mode="median")


def copy_ceiling() -> float:
    """GB/s of a 1 GiB device-to-device copy, bytes read + written."""
    a = torch.empty(2 ** 30, dtype=torch.uint8, device=DEVICE)
    return 2 * a.numel() / bench(lambda: a.clone()) / 1e6


TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-5}
LN_SHAPES = [(m, n, dt) for dt in (torch.bfloat16, torch.float32) for m, n in
             ((32768, 768), (32768, 1024), (16384, 2048), (8192, 3072), (8192, 4096), (4096, 8192), (4096, 16384))]
SM_SHAPES = [(m, n, torch.bfloat16) for m, n in
             ((65536, 512), (16384, 2048), (8192, 4096), (2048, 16384), (1024, 32768), (512, 65536))]


def ln_candidates(m: int, n: int):
    """(name, launch(x, y, w, b)) for the LayerNorm forward at (m, n)."""
    block = next_power_of_2(n)
    a = 1 << (n.bit_length() - 1)  # largest power of two <= n
    tail = n - a
    b = next_power_of_2(tail) if tail else 1
    for tile, nw in itertools.product((2048, 4096, 8192, 16384, 32768), (2, 4, 8, 16, 32)):
        rows = max(1, tile // block)
        per_thread = rows * block // (32 * nw)
        if rows * block != max(tile, block) or not 8 <= per_thread <= 32:
            continue

        def plain(x, y, w, bb, rows=rows, nw=nw):
            LK.layer_norm_fwd_kernel[(triton.cdiv(m, rows),)](
                x, y, w, bb, x, x, n, n, m, n, EPS, HAS_W=True, HAS_B=True, STORE_STATS=False,
                BLOCK_N=block, ROWS=rows, EVEN=False, num_warps=nw)
        yield f"whole tile={rows}x{block} w={nw}", plain
        rows_p = max(1, tile // (a + (b if tail else 0)))
        rows_p = 1 << (rows_p.bit_length() - 1)
        masked = bool(tail) or m % rows_p != 0
        for evict in (False, True) if per_thread == 16 else (False,):
            def pieces(x, y, w, bb, rows_p=rows_p, nw=nw, masked=masked, evict=evict):
                ln_fwd_pieces_kernel[(triton.cdiv(m, rows_p),)](
                    x, y, w, bb, n, n, m, n, EPS, BLOCK_A=a, BLOCK_B=b, TAIL=bool(tail), ROWS=rows_p,
                    MASKED=masked, EVICT=evict, num_warps=nw)
            yield (f"pieces {a}+{b if tail else 0} rows={rows_p} w={nw} mask={int(masked)} "
                   f"evict={int(evict)}"), pieces


def sm_candidates(m: int, n: int):
    block = next_power_of_2(n)
    for tile, nw in itertools.product((1024, 2048, 4096, 8192, 16384, 32768, 65536), (4, 8, 16, 32)):
        rows = max(1, tile // block)
        per_thread = rows * block // (32 * nw)
        if block > 32768 or rows * block != max(tile, block) or not 4 <= per_thread <= 64:
            continue

        def single(x, y, rows=rows, nw=nw):
            SK.softmax_fwd_rows_kernel[(triton.cdiv(m, rows),)](
                x, y, m, n, n, n, ROWS=rows, BLOCK_N=block, ROUND=False, SOFT_BF16=False, num_warps=nw)
        yield f"whole tile={rows}x{block} w={nw}", single
    if n >= 4096:
        for blk, nw in itertools.product((1024, 2048, 4096, 8192), (4, 8, 16)):
            if not 4 <= blk // (32 * nw) <= 64:
                continue

            def looped(x, y, blk=blk, nw=nw):
                SK.softmax_fwd_rows_looped_kernel[(m,)](x, y, n, n, n, BLOCK_N=blk, ROUND=False,
                                                        SOFT_BF16=False, L2_HINTS=False, num_warps=nw)
            yield f"looped block={blk} w={nw}", looped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv")
    ap.add_argument("--only", choices=("ln", "softmax"))
    ap.add_argument("--widths", help="softmax: only these widths (comma-separated)")
    args = ap.parse_args()
    torch.manual_seed(0)
    ceiling = copy_ceiling()
    print(f"{torch.cuda.get_device_name()}: copy ceiling {ceiling:.0f} GB/s (1 GiB, read + write)", flush=True)
    out = []

    def report(op, m, n, dt, name, ms, err=None):
        pct = 2 * m * n * dt.itemsize / ms / 1e6 / ceiling
        out.append(dict(op=op, m=m, n=n, dtype=str(dt)[6:], candidate=name, ms=ms, pct_copy=pct, err=err))
        e = "" if err is None else f" err {err:.1e}"
        print(f"  {name:<48} {ms * 1e3:8.2f} us {pct:6.1%}{e}", flush=True)

    def try_all(op, m, n, dt, candidates, call, y, ref):
        """Run each candidate once (``call(fn)``) into a NaN-poisoned y, check it, then time it."""
        for name, fn in candidates:
            y.fill_(float("nan"))
            try:
                call(fn)
            except Exception as ex:  # noqa: BLE001 (out of resources: report and go on)
                print(f"  {name}: {type(ex).__name__}", flush=True)
                continue
            err = rel_err(y, ref)
            if not err <= TOL[dt]:
                print(f"  {name}: WRONG err {err:.1e}", flush=True)
                continue
            report(op, m, n, dt, name, bench(lambda: call(fn)), err)

    if args.only != "softmax":
        for m, n, dt in LN_SHAPES:
            x = torch.randn(m, n, device=DEVICE, dtype=dt) * 2 + 0.5
            w = torch.randn(n, device=DEVICE, dtype=dt)
            b = torch.randn(n, device=DEVICE, dtype=dt)
            ref = torch.nn.functional.layer_norm(x.double(), (n,), w.double(), b.double(), EPS)
            y = torch.empty_like(x)
            print(f"LN fwd {m}x{n} {str(dt)[6:]}", flush=True)
            report("ln", m, n, dt, "copy of the same bytes", bench(lambda: y.copy_(x)))
            report("ln", m, n, dt, "torch", bench(lambda: torch.nn.functional.layer_norm(x, (n,), w, b, EPS)))
            report("ln", m, n, dt, f"shipped {L._fwd_config(n, dt.itemsize)}", bench(lambda: L.forward_rows(x, n, w, b, EPS, False)))
            try_all("ln", m, n, dt, ln_candidates(m, n), lambda fn: fn(x, y, w, b), y, ref)
    if args.only != "ln":
        for m, n, dt in SM_SHAPES:
            if args.widths and str(n) not in args.widths.split(","):
                continue
            x = torch.randn(m, n, device=DEVICE, dtype=dt) * 3
            ref = torch.softmax(x.double(), -1)
            y = torch.empty_like(x)
            print(f"softmax fwd {m}x{n} {str(dt)[6:]}", flush=True)
            report("softmax", m, n, dt, "copy of the same bytes", bench(lambda: y.copy_(x)))
            report("softmax", m, n, dt, "torch", bench(lambda: torch.softmax(x, -1)))
            report("softmax", m, n, dt, "shipped", bench(lambda: S._forward(x, 1, dt)))
            try_all("softmax", m, n, dt, sm_candidates(m, n), lambda fn: fn(x, y), y, ref)
    if args.csv:
        write_csv(out, args.csv)


if __name__ == "__main__":
    main()
