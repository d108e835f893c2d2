"""Do cache hints let the second read of a looped (two-pass) kernel come from L2? A prototype sweep.

    python benchmarks/sweep_looped_l2.py [--quick]

Rows too wide for one pass are walked twice by one program: the LayerNorm forward (statistics, then y)
beyond 32768, the softmax forward (max and sum, then y) beyond 32768 (bf16/fp16; fp32 rows are split over
programs). The second walk reads the row again, from HBM unless it is still in L2. Variants of the same
kernels, each a constexpr:

- REV: walk the row backwards the second time (the chunks loaded last come first; the shipped softmax
  kernel already does, the LayerNorm one does not);
- EV1: the first walk's loads marked ``evict_last`` (keep them in L2);
- EV2: the second walk's loads marked ``evict_first`` (they are done with);
- ST: stores marked ``evict_first`` (y is not read again here).

over (BLOCK_N, num_warps) in {(4096, 8), (8192, 16), (16384, 32)}. Prints per shape the shipped op, a copy
of the same bytes and each variant: us, % of the 1 GiB copy ceiling, and the error against float64.
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from tritonpatch.kernels.cache_hints import load_hinted, store_streaming as _st
from tritonpatch.ops import layer_norm as L
from tritonpatch.ops import softmax as S


@triton.jit
def _ld(ptrs, mask, other, EV: tl.constexpr, POLICY: tl.constexpr):
    return load_hinted(ptrs, mask, other, EV, POLICY).to(tl.float32)


@triton.jit
def ln_fwd_looped(X, Y, W, B, Mean, Rstd, stride_x_row, stride_y_row, N, eps, BLOCK_N: tl.constexpr,
                  REV: tl.constexpr, EV1: tl.constexpr, EV2: tl.constexpr, ST: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * stride_x_row
    y_row = Y + row * stride_y_row
    cols = tl.arange(0, BLOCK_N)
    mean = 0.0
    m2 = 0.0
    count = 0.0
    for start in range(0, N, BLOCK_N):
        c = start + cols
        mask = c < N
        x = _ld(x_row + c, mask, 0.0, EV1, "evict_last")
        n_b = tl.minimum(N - start, BLOCK_N).to(tl.float32)
        mean_b = tl.sum(x, axis=0) / n_b
        xc = tl.where(mask, x - mean_b, 0.0)
        m2_b = tl.sum(xc * xc, axis=0)
        n_ab = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / n_ab)
        m2 = m2 + m2_b + delta * delta * (count * (n_b / n_ab))
        count = n_ab
    rstd = 1.0 / tl.sqrt(m2 / N + eps)
    n_blocks = tl.cdiv(N, BLOCK_N)
    for i in range(0, n_blocks):
        if REV:
            c = (n_blocks - 1 - i) * BLOCK_N + cols
        else:
            c = i * BLOCK_N + cols
        mask = c < N
        x = _ld(x_row + c, mask, 0.0, EV2, "evict_first")
        y = (x - mean) * rstd
        y = y * tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
        y = y + tl.load(B + c, mask=mask, other=0.0).to(tl.float32)
        _st(y_row + c, y.to(Y.dtype.element_ty), mask, ST)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)


@triton.jit
def softmax_fwd_looped(x_ptr, y_ptr, n_cols, stride_x_row, stride_y_row, BLOCK_N: tl.constexpr,
                       REV: tl.constexpr, EV1: tl.constexpr, EV2: tl.constexpr, ST: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x_row
    y_row = y_ptr + row * stride_y_row
    cols = tl.arange(0, BLOCK_N)
    m = tl.full([BLOCK_N], -float("inf"), tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        offs = start + cols
        x = _ld(x_row + offs, offs < n_cols, -float("inf"), EV1, "evict_last")
        m_new = tl.maximum(m, x)
        m_ref = tl.where(m_new == -float("inf"), 0.0, m_new)
        s = s * tl.exp(m - m_ref) + tl.exp(x - m_ref)
        m = m_new
    m_row = tl.max(m, axis=0)
    inv = 1.0 / tl.sum(s * tl.exp(m - m_row), axis=0)
    n_blocks = tl.cdiv(n_cols, BLOCK_N)
    for i in range(0, n_blocks):
        if REV:
            offs = (n_blocks - 1 - i) * BLOCK_N + cols
        else:
            offs = i * BLOCK_N + cols
        mask = offs < n_cols
        x = _ld(x_row + offs, mask, -float("inf"), EV2, "evict_first")
        _st(y_row + offs, (tl.exp(x - m_row) * inv).to(y_ptr.dtype.element_ty), mask, ST)


VARIANTS = [  # (name, REV, EV1, EV2, ST)
    ("plain", 0, 0, 0, 0), ("rev", 1, 0, 0, 0), ("rev+ev1", 1, 1, 0, 0), ("rev+ev1+ev2", 1, 1, 1, 0),
    ("rev+ev1+ev2+st", 1, 1, 1, 1), ("rev+st", 1, 0, 0, 1),
]
BLOCKS = [(4096, 8), (8192, 16), (16384, 32)]


def bench(fn) -> float:
    return do_bench(fn, warmup=10, rep=50, return_mode="median")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b).norm() / b.norm()).item()


def main() -> None:
    quick = "--quick" in sys.argv
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, {props.multi_processor_count} SMs, L2 {getattr(props, 'L2_cache_size', 0) >> 20} MiB; "
          f"torch {torch.__version__}, triton {triton.__version__}")
    big = torch.empty(1 << 29, dtype=torch.float16, device="cuda")
    copy_gbs = 2 * big.numel() * 2 / bench(lambda: big.clone()) / 1e6
    big = None
    print(f"copy ceiling (1 GiB clone, read + write): {copy_gbs:.0f} GB/s", flush=True)
    eps = 1e-5
    ln_shapes = [(4096, 65536, torch.bfloat16), (4096, 65536, torch.float32), (2048, 131072, torch.bfloat16),
                 (1024, 49152, torch.bfloat16)]
    sm_shapes = [(512, 65536, torch.bfloat16), (256, 131072, torch.bfloat16), (512, 128256, torch.bfloat16),
                 (1024, 49152, torch.float16), (4096, 65536, torch.bfloat16)]
    variants, blocks = VARIANTS, BLOCKS
    if quick:
        ln_shapes, sm_shapes, variants, blocks = ln_shapes[:1], sm_shapes[:1], VARIANTS[:2], BLOCKS[1:2]
    for m, n, dt in ln_shapes:
        x = torch.randn(m, n, device="cuda", dtype=dt) * 2 + 0.5
        w = torch.randn(n, device="cuda", dtype=dt)
        b = torch.randn(n, device="cuda", dtype=dt)
        ref = torch.nn.functional.layer_norm(x.double(), (n,), w.double(), b.double(), eps)
        nbytes = 2 * x.numel() * x.element_size()
        t = bench(lambda: L.forward_rows(x, n, w, b, eps, True))
        tc = bench(lambda: x.clone())
        print(f"\nLN fwd {m}x{n} {str(dt)[6:]}: shipped {t * 1e3:.1f} us ({nbytes / t / 1e6 / copy_gbs:.0%}); copy of "
              f"the same bytes {tc * 1e3:.1f} us ({nbytes / tc / 1e6 / copy_gbs:.0%})", flush=True)
        mean = torch.empty(m, device="cuda")
        rstd = torch.empty(m, device="cuda")
        for block, warps in blocks:
            for name, rev, ev1, ev2, st in variants:
                y = torch.full_like(x, float("nan"))

                def run():
                    ln_fwd_looped[(m,)](x, y, w, b, mean, rstd, n, n, n, eps, BLOCK_N=block, REV=rev, EV1=ev1,
                                        EV2=ev2, ST=st, num_warps=warps)
                run()
                err = rel(y, ref)
                t2 = bench(run)
                print(f"  {block}/{warps}w {name:16s} {t2 * 1e3:7.1f} us ({nbytes / t2 / 1e6 / copy_gbs:.0%}) "
                      f"{t / t2:.2f}x shipped; err {err:.1e}", flush=True)
    for m, n, dt in sm_shapes:
        x = torch.randn(m, n, device="cuda", dtype=dt) * 3
        ref = torch.softmax(x.double(), -1)
        nbytes = 2 * x.numel() * x.element_size()
        t = bench(lambda: S._forward(x, 1, dt))
        tc = bench(lambda: x.clone())
        print(f"\nsoftmax fwd {m}x{n} {str(dt)[6:]}: shipped {t * 1e3:.1f} us ({nbytes / t / 1e6 / copy_gbs:.0%}); "
              f"copy of the same bytes {tc * 1e3:.1f} us ({nbytes / tc / 1e6 / copy_gbs:.0%})", flush=True)
        for block, warps in blocks:
            for name, rev, ev1, ev2, st in variants:
                y = torch.full_like(x, float("nan"))

                def run():
                    softmax_fwd_looped[(m,)](x, y, n, n, n, BLOCK_N=block, REV=rev, EV1=ev1, EV2=ev2, ST=st,
                                             num_warps=warps)
                run()
                err = rel(y, ref)
                t2 = bench(run)
                print(f"  {block}/{warps}w {name:16s} {t2 * 1e3:7.1f} us ({nbytes / t2 / 1e6 / copy_gbs:.0%}) "
                      f"{t / t2:.2f}x shipped; err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
