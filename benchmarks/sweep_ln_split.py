"""Wide-row LayerNorm with each row split over K co-resident programs (a prototype: does reading each
row once beat the shipped kernels that read it twice?).

    python benchmarks/sweep_ln_split.py [--quick]

Shipped: the forward keeps rows up to 32768 wide in registers and walks wider rows twice (statistics,
then y); the backward keeps rows up to 8192 wide in registers and, wider, runs a per-row c1/c2 kernel
(reads x and dy) before the column-block kernel (reads x and dy again, writes dx and the dw/db partials).

Here, as in the softmax's split rows (``tritonpatch/kernels/softmax.py``, whose barrier and program
layout these kernels import), a row is cut into K chunks of CHUNK elements, one per program of a
persistent, cooperatively launched grid of G programs (G a multiple of K). Program p always takes chunk
p % K (so its weight/bias chunk is loaded once, and in the backward its dw/db accumulators cover fixed
columns across rounds); per round it writes its chunk's partials (forward: mean and M2 of the chunk;
backward: sum(xhat * g) and sum(g)), waits at its row group's barrier, combines the K partials and writes
its chunk. The backward's per-program dw/db partial rows ((G / K, N) per gradient) are summed by the
shipped column-sums kernel.

Prints per shape: the shipped op (the library's launch path), a copy of the same bytes, then each
(CHUNK, num_warps) candidate with its programs per SM and registers: us, % of the 1 GiB copy ceiling, and
the error of every output against float64 (outputs poisoned first). Results and the reading:
BENCHMARKS.md, "Found, not shipped: wide LayerNorm rows split over several programs" (H200, 2026-12-01).
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from tritonpatch.kernels.softmax import _row_group_barrier, _split_program
from tritonpatch.ops import layer_norm as L
from tritonpatch.ops.column_sums import column_sums_launch
from tritonpatch.ops.launch import BoundLaunch, FastKernel, programs_per_sm


@triton.jit
def ln_fwd_split(X, Y, W, B, Mean, Rstd, scratch_ptr, stride_x_row, stride_y_row, N, eps, n_tiles,
                 HAS_W: tl.constexpr, HAS_B: tl.constexpr, STORE_STATS: tl.constexpr,
                 K: tl.constexpr, KP: tl.constexpr, CHUNK: tl.constexpr):
    pid, G, slot, cols, cmask, ks, part = _split_program(scratch_ptr, N, K, KP, CHUNK)
    if HAS_W:
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    if HAS_B:
        b = tl.load(B + cols, mask=cmask, other=0.0).to(tl.float32)
    n_c = tl.minimum(N - (pid % K) * CHUNK, CHUNK).to(tl.float32)
    counts = tl.minimum(N - ks * CHUNK, CHUNK).to(tl.float32)
    for t in range(0, tl.cdiv(n_tiles, G)):
        tile = t * G + pid
        if tile < n_tiles:
            row = (tile // K).to(tl.int64)
            x = tl.load(X + row * stride_x_row + cols, mask=cmask, other=0.0).to(tl.float32)
            mean_c = tl.sum(x, axis=0) / n_c
            xc = tl.where(cmask, x - mean_c, 0.0)
            buf = part + (t % 2) * 2 * G
            tl.store(buf + pid, mean_c)
            tl.store(buf + G + pid, tl.sum(xc * xc, axis=0))
            _row_group_barrier(scratch_ptr, slot, K)
            means = tl.load(buf + slot * K + ks, mask=ks < K, other=0.0, volatile=True)
            m2s = tl.load(buf + G + slot * K + ks, mask=ks < K, other=0.0, volatile=True)
            cnt = tl.where(ks < K, counts, 0.0)
            mean = tl.sum(cnt * means, axis=0) / N
            d = means - mean
            m2 = tl.sum(m2s + cnt * d * d, axis=0)
            rstd = 1.0 / tl.sqrt(m2 / N + eps)
            y = (xc + (mean_c - mean)) * rstd
            if HAS_W:
                y = y * w
            if HAS_B:
                y = y + b
            tl.store(Y + row * stride_y_row + cols, y.to(Y.dtype.element_ty), mask=cmask)
            if STORE_STATS:
                if pid % K == 0:
                    tl.store(Mean + row, mean)
                    tl.store(Rstd + row, rstd)


@triton.jit
def ln_bwd_split(X, DY, DX, W, Mean, Rstd, Part, scratch_ptr, stride_x_row, stride_dy_row, N, db_row0, n_tiles,
                 HAS_W: tl.constexpr, COMPUTE_DW: tl.constexpr, COMPUTE_DB: tl.constexpr,
                 K: tl.constexpr, KP: tl.constexpr, CHUNK: tl.constexpr):
    pid, G, slot, cols, cmask, ks, part = _split_program(scratch_ptr, N, K, KP, CHUNK)
    if HAS_W:
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((CHUNK,), tl.float32)
    db_acc = tl.zeros((CHUNK,), tl.float32)
    for t in range(0, tl.cdiv(n_tiles, G)):
        tile = t * G + pid
        if tile < n_tiles:
            row = (tile // K).to(tl.int64)
            x = tl.load(X + row * stride_x_row + cols, mask=cmask, other=0.0).to(tl.float32)
            dy = tl.load(DY + row * stride_dy_row + cols, mask=cmask, other=0.0).to(tl.float32)
            mean = tl.load(Mean + row)
            rstd = tl.load(Rstd + row)
            xhat = tl.where(cmask, (x - mean) * rstd, 0.0)
            g = dy * w if HAS_W else dy
            buf = part + (t % 2) * 2 * G
            tl.store(buf + pid, tl.sum(xhat * g, axis=0))
            tl.store(buf + G + pid, tl.sum(g, axis=0))
            _row_group_barrier(scratch_ptr, slot, K)
            s1 = tl.load(buf + slot * K + ks, mask=ks < K, other=0.0, volatile=True)
            s2 = tl.load(buf + G + slot * K + ks, mask=ks < K, other=0.0, volatile=True)
            c1 = tl.sum(s1, axis=0) / N
            c2 = tl.sum(s2, axis=0) / N
            dx = (g - (xhat * c1 + c2)) * rstd
            tl.store(DX + row * N + cols, dx.to(DX.dtype.element_ty), mask=cmask)
            if COMPUTE_DW:
                dw_acc += dy * xhat
            if COMPUTE_DB:
                db_acc += dy
    p = slot.to(tl.int64)
    if COMPUTE_DW:
        tl.store(Part + p * N + cols, dw_acc, mask=cmask)
    if COMPUTE_DB:
        tl.store(Part + (db_row0 + p) * N + cols, db_acc, mask=cmask)


FWD = FastKernel(ln_fwd_split)
BWD = FastKernel(ln_bwd_split)


def bench(fn) -> float:
    return do_bench(fn, warmup=10, rep=50, return_mode="median")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b).norm() / b.norm()).item()


def plan(kernel: FastKernel, dtypes: tuple, scalars: tuple, m: int, n: int, chunk: int, warps: int, flags: dict):
    k = triton.cdiv(n, chunk)
    consts = dict(flags, K=k, KP=triton.next_power_of_2(k), CHUNK=chunk)
    tiles = m * k
    per_sm = programs_per_sm(kernel, 0, (*dtypes, torch.int32, *scalars, tiles), warps, consts)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    grid = min(tiles, per_sm * sms // k * k)
    if grid < k:
        return None, per_sm, k
    return BoundLaunch(kernel, (grid,), (*scalars, tiles), consts, warps, device=0, cooperative=True), per_sm, k


def main() -> None:
    quick = "--quick" in sys.argv
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, {props.multi_processor_count} SMs; torch {torch.__version__}, triton {triton.__version__}")
    big = torch.empty(1 << 29, dtype=torch.float16, device="cuda")
    copy_gbs = 2 * big.numel() * 2 / bench(lambda: big.clone()) / 1e6
    big = None  # free the GiB before the shapes
    print(f"copy ceiling (1 GiB clone, read + write): {copy_gbs:.0f} GB/s", flush=True)
    eps = 1e-5
    fwd_shapes = [(4096, 65536), (2048, 131072), (4096, 32768)]
    bwd_shapes = [(4096, 16384), (4096, 32768), (4096, 65536), (8192, 12288)]
    fwd_cfgs = [(2048, 4), (4096, 4), (4096, 8), (8192, 8), (8192, 16)]
    bwd_cfgs = [(1024, 4), (2048, 4), (2048, 8), (4096, 8), (4096, 16)]
    dtypes = [torch.bfloat16, torch.float32]
    if quick:
        fwd_shapes, bwd_shapes, fwd_cfgs, bwd_cfgs = fwd_shapes[:1], bwd_shapes[:1], fwd_cfgs[:2], bwd_cfgs[:2]
    for dt in dtypes:
        for m, n in fwd_shapes:
            x = torch.randn(m, n, device="cuda", dtype=dt) * 2 + 0.5
            w = torch.randn(n, device="cuda", dtype=dt)
            b = torch.randn(n, device="cuda", dtype=dt)
            ref = torch.nn.functional.layer_norm(x.double(), (n,), w.double(), b.double(), eps)
            nbytes = 2 * x.numel() * x.element_size()
            shipped = lambda: L.forward_rows(x, n, w, b, eps, True)
            ys = shipped()[0]
            t = bench(shipped)
            tc = bench(lambda: x.clone())
            print(f"\nfwd {m}x{n} {str(dt)[6:]}: shipped {t * 1e3:.1f} us ({nbytes / t / 1e6 / copy_gbs:.0%}) err "
                  f"{rel(ys, ref):.1e}; copy of the same bytes {tc * 1e3:.1f} us ({nbytes / tc / 1e6 / copy_gbs:.0%})",
                  flush=True)
            for chunk, warps in fwd_cfgs:
                if chunk >= n:
                    continue
                launch, per_sm, k = plan(FWD, (dt,) * 4 + (torch.float32,) * 2, (n, n, n, eps), m, n, chunk, warps,
                                         dict(HAS_W=True, HAS_B=True, STORE_STATS=True))
                if launch is None:
                    print(f"  chunk {chunk} warps {warps}: K={k} does not fit ({per_sm}/SM)")
                    continue
                y = torch.full_like(x, float("nan"))
                mean = torch.full((m,), float("nan"), device="cuda")
                rstd = torch.full((m,), float("nan"), device="cuda")
                words = 2 * (launch.grid[0] // k) + 4 * launch.grid[0]

                def run():
                    scratch = torch.zeros(words, dtype=torch.int32, device="cuda")
                    launch(x, y, w, b, mean, rstd, scratch)
                run()
                torch.cuda.synchronize()
                err = rel(y, ref)
                mref = x.double().mean(1)
                err_s = max(rel(mean, mref), rel(rstd, 1 / (x.double().var(1, unbiased=False) + eps).sqrt()))
                t2 = bench(run)
                print(f"  chunk {chunk} warps {warps}: K={k} {per_sm}/SM grid {launch.grid[0]}: {t2 * 1e3:.1f} us "
                      f"({nbytes / t2 / 1e6 / copy_gbs:.0%}) {t / t2:.2f}x shipped; err y {err:.1e} stats {err_s:.1e}",
                      flush=True)
        for m, n in bwd_shapes:
            x = torch.randn(m, n, device="cuda", dtype=dt) * 2 + 0.5
            dy = torch.randn(m, n, device="cuda", dtype=dt)
            w = torch.randn(n, device="cuda", dtype=dt)
            xd = x.double().requires_grad_(True)
            wd = w.double().requires_grad_(True)
            bd = torch.zeros(n, dtype=torch.float64, device="cuda", requires_grad=True)
            torch.nn.functional.layer_norm(xd, (n,), wd, bd, eps).backward(dy.double())
            mean = x.float().mean(1)
            rstd = 1 / (x.float().var(1, unbiased=False) + eps).sqrt()
            nbytes = 3 * x.numel() * x.element_size()
            shipped = lambda: L.backward_rows(x, dy, n, w, mean, rstd, True, True, True, dt)
            dx, dw, db = shipped()
            t = bench(shipped)
            tc = bench(lambda: (x.clone(), dy.clone()))  # 2 reads + 2 writes: scaled below to 3 units
            print(f"\nbwd {m}x{n} {str(dt)[6:]}: shipped {t * 1e3:.1f} us ({nbytes / t / 1e6 / copy_gbs:.0%}) err dx "
                  f"{rel(dx, xd.grad):.1e} dw {rel(dw, wd.grad):.1e} db {rel(db, bd.grad):.1e}; copy of x and dy "
                  f"{tc * 1e3:.1f} us ({4 * x.numel() * x.element_size() / tc / 1e6 / copy_gbs:.0%})", flush=True)
            for chunk, warps in bwd_cfgs:
                if chunk >= n:
                    continue
                launch, per_sm, k = plan(BWD, (dt,) * 4 + (torch.float32,) * 3, (n, n, n, n), m, n, chunk, warps,
                                         dict(HAS_W=True, COMPUTE_DW=True, COMPUTE_DB=True))
                if launch is None:
                    print(f"  chunk {chunk} warps {warps}: K={k} does not fit ({per_sm}/SM)")
                    continue
                gk = launch.grid[0] // k  # db_row0: the db partials follow the dw ones
                launch = BoundLaunch(BWD, launch.grid, (n, n, n, gk, m * k), launch.constexprs, warps, device=0,
                                     cooperative=True)
                reduce = column_sums_launch(gk, n, 2, 0)
                dx2 = torch.full_like(x, float("nan"))
                words = 2 * gk + 4 * launch.grid[0]
                outs = []

                def run():
                    scratch = torch.zeros(words, dtype=torch.int32, device="cuda")
                    part = torch.empty((2, gk, n), dtype=torch.float32, device="cuda")
                    launch(x, dy, dx2, w, mean, rstd, part, scratch)
                    dw2 = torch.empty(n, dtype=dt, device="cuda")
                    db2 = torch.empty(n, dtype=dt, device="cuda")
                    reduce(part, dw2, db2)
                    outs[:] = [dw2, db2]
                run()
                torch.cuda.synchronize()
                errs = f"dx {rel(dx2, xd.grad):.1e} dw {rel(outs[0], wd.grad):.1e} db {rel(outs[1], bd.grad):.1e}"
                t2 = bench(run)
                print(f"  chunk {chunk} warps {warps}: K={k} {per_sm}/SM grid {launch.grid[0]}: {t2 * 1e3:.1f} us "
                      f"({nbytes / t2 / 1e6 / copy_gbs:.0%}) {t / t2:.2f}x shipped; err {errs}", flush=True)


if __name__ == "__main__":
    main()
