"""Hold the head of a wide row in registers, walk only the tail twice: a prototype sweep.

    python benchmarks/sweep_row_head.py [--quick]

A row too wide for one pass is walked twice by one program (the LayerNorm forward beyond 32768, the
bf16/fp16 softmax forward and backward beyond 32768): statistics, then the output. The second walk reads
the row again, from HBM unless it is still in L2 (in fp32 it mostly is not: 4096x65536 LayerNorm runs at
about three traversals' time). Here the program first loads the row's first HEAD elements into registers
and keeps them there; only the rest (the tail) is walked twice, in BLOCK_N chunks. The reads per row drop
from 2 N to N + (N - HEAD). Variants:

- HEAD, BLOCK_N, num_warps: how much is held, the tail chunk, and the warps holding it;
- EV: tail pass 1 loads ``evict_last``, pass 2 ``evict_first`` (the shipped hints);
- RAW (bf16 only): hold the head as loaded (2 bytes an element) and widen it again for the output,
  instead of holding fp32 (the widening is spelled with integer ops so the compiler cannot merge the
  two conversions and keep the fp32 copy alive).

Prints per shape the shipped op and each variant: us, % of the copy ceiling, registers and spills of the
compiled kernel, the error against float64, and the speedup over the shipped op.
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from tritonpatch.kernels.cache_hints import load_hinted, store_streaming
from tritonpatch.ops import layer_norm as L
from tritonpatch.ops import softmax as S


@triton.jit
def _widen(v, RAW: tl.constexpr):
    """bf16 ``v`` as fp32; RAW: through integer ops (a conversion the compiler does not merge with .to)."""
    if RAW:
        out = (v.to(tl.int16, bitcast=True).to(tl.int32) << 16).to(tl.float32, bitcast=True)
    else:
        out = v.to(tl.float32)
    return out


@triton.jit
def ln_fwd_head(X, Y, W, B, Mean, Rstd, stride_x_row, stride_y_row, N, eps, HEAD: tl.constexpr,
                BLOCK_N: tl.constexpr, EV: tl.constexpr, RAW: tl.constexpr, NS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * stride_x_row
    y_row = Y + row * stride_y_row
    if HEAD > 0:
        hc = tl.arange(0, HEAD)
        x_raw = tl.load(x_row + hc)                  # N >= HEAD: no mask
        xh = x_raw.to(tl.float32)
        mean = tl.sum(xh, axis=0) / HEAD
        xc = xh - mean
        m2 = tl.sum(xc * xc, axis=0)
        count = HEAD * 1.0
    else:
        mean = 0.0
        m2 = 0.0
        count = 0.0
    cols = tl.arange(0, BLOCK_N)
    for start in tl.range(HEAD, N, BLOCK_N, num_stages=NS):
        c = start + cols
        mask = c < N
        x = load_hinted(x_row + c, mask, 0.0, EV, "evict_last").to(tl.float32)
        n_b = tl.minimum(N - start, BLOCK_N).to(tl.float32)
        mean_b = tl.sum(x, axis=0) / n_b
        xcb = tl.where(mask, x - mean_b, 0.0)
        m2_b = tl.sum(xcb * xcb, axis=0)
        n_ab = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / n_ab)
        m2 = m2 + m2_b + delta * delta * (count * (n_b / n_ab))
        count = n_ab
    rstd = 1.0 / tl.sqrt(m2 / N + eps)
    n_tail = tl.cdiv(N - HEAD, BLOCK_N)
    for i in tl.range(0, n_tail, num_stages=NS):
        c = HEAD + (n_tail - 1 - i) * BLOCK_N + cols
        mask = c < N
        x = load_hinted(x_row + c, mask, 0.0, EV, "evict_first").to(tl.float32)
        y = (x - mean) * rstd
        y = y * tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
        y = y + tl.load(B + c, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + c, y.to(Y.dtype.element_ty), mask=mask)
    if HEAD > 0:
        if RAW:
            xh = _widen(x_raw, RAW)
        y = (xh - mean) * rstd * tl.load(W + hc).to(tl.float32) + tl.load(B + hc).to(tl.float32)
        tl.store(y_row + hc, y.to(Y.dtype.element_ty))
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)


@triton.jit
def softmax_fwd_head(x_ptr, y_ptr, n_cols, stride_x_row, stride_y_row, HEAD: tl.constexpr,
                     BLOCK_N: tl.constexpr, EV: tl.constexpr, RAW: tl.constexpr, NS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x_row
    y_row = y_ptr + row * stride_y_row
    if HEAD > 0:
        hc = tl.arange(0, HEAD)
        x_raw = tl.load(x_row + hc)
        xh = x_raw.to(tl.float32)
        m_h = tl.max(xh, axis=0)
        s_h = tl.sum(tl.exp(xh - m_h), axis=0)
    else:
        m_h = -float("inf")
        s_h = 0.0
    cols = tl.arange(0, BLOCK_N)
    m = tl.full([BLOCK_N], -float("inf"), tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    for start in tl.range(HEAD, n_cols, BLOCK_N, num_stages=NS):
        offs = start + cols
        x = load_hinted(x_row + offs, offs < n_cols, -float("inf"), EV, "evict_last").to(tl.float32)
        m_new = tl.maximum(m, x)
        m_ref = tl.where(m_new == -float("inf"), 0.0, m_new)
        s = s * tl.exp(m - m_ref) + tl.exp(x - m_ref)
        m = m_new
    m_row = tl.maximum(m_h, tl.max(m, axis=0))
    if HEAD > 0:
        inv = 1.0 / (s_h * tl.exp(m_h - m_row) + tl.sum(s * tl.exp(m - m_row), axis=0))
    else:
        inv = 1.0 / tl.sum(s * tl.exp(m - m_row), axis=0)
    n_tail = tl.cdiv(n_cols - HEAD, BLOCK_N)
    for i in tl.range(0, n_tail, num_stages=NS):
        offs = HEAD + (n_tail - 1 - i) * BLOCK_N + cols
        mask = offs < n_cols
        x = load_hinted(x_row + offs, mask, -float("inf"), EV, "evict_first").to(tl.float32)
        store_streaming(y_row + offs, (tl.exp(x - m_row) * inv).to(y_ptr.dtype.element_ty), mask, EV)
    if HEAD > 0:
        if RAW:
            xh = _widen(x_raw, RAW)
        tl.store(y_row + hc, (tl.exp(xh - m_row) * inv).to(y_ptr.dtype.element_ty))


@triton.jit
def softmax_bwd_head(y_ptr, dy_ptr, dx_ptr, n_cols, stride_row, HEAD: tl.constexpr, BLOCK_N: tl.constexpr,
                     EV: tl.constexpr, RAW: tl.constexpr, NS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    y_row = y_ptr + row * stride_row
    dy_row = dy_ptr + row * stride_row
    dx_row = dx_ptr + row * stride_row
    if HEAD > 0:
        hc = tl.arange(0, HEAD)
        y_raw = tl.load(y_row + hc)
        dy_raw = tl.load(dy_row + hc)
        yh = y_raw.to(tl.float32)
        dyh = dy_raw.to(tl.float32)
        dot_h = tl.sum(yh * dyh, axis=0)
    else:
        dot_h = 0.0
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], tl.float32)
    for start in tl.range(HEAD, n_cols, BLOCK_N, num_stages=NS):
        offs = start + cols
        mask = offs < n_cols
        y = load_hinted(y_row + offs, mask, 0.0, EV, "evict_last").to(tl.float32)
        dy = load_hinted(dy_row + offs, mask, 0.0, EV, "evict_last").to(tl.float32)
        acc += y * dy
    dot = dot_h + tl.sum(acc, axis=0)
    n_tail = tl.cdiv(n_cols - HEAD, BLOCK_N)
    for i in tl.range(0, n_tail, num_stages=NS):
        offs = HEAD + (n_tail - 1 - i) * BLOCK_N + cols
        mask = offs < n_cols
        y = load_hinted(y_row + offs, mask, 0.0, EV, "evict_first").to(tl.float32)
        dy = load_hinted(dy_row + offs, mask, 0.0, EV, "evict_first").to(tl.float32)
        store_streaming(dx_row + offs, (y * (dy - dot)).to(dx_ptr.dtype.element_ty), mask, EV)
    if HEAD > 0:
        if RAW:
            yh = _widen(y_raw, RAW)
            dyh = _widen(dy_raw, RAW)
        tl.store(dx_row + hc, (yh * (dyh - dot)).to(dx_ptr.dtype.element_ty))


# (HEAD, BLOCK_N, num_warps, EV, RAW, NS): NS the loops' pipeline stages (tl.range num_stages; 1: none).
# HEAD 0 is the shipped looped algorithm (EV as the library sets it per dtype: -1).
VARIANTS = [
    (0, 8192, 16, -1, 0, 1), (0, 8192, 16, -1, 0, 2), (0, 8192, 16, -1, 0, 3), (0, 4096, 8, -1, 0, 3),
    (0, 4096, 16, -1, 0, 3), (0, 4096, 8, -1, 0, 4), (0, 8192, 16, 0, 0, 2), (0, 8192, 16, 1, 0, 2),
    (32768, 8192, 32, 1, 0, 1), (32768, 8192, 32, 1, 0, 2), (32768, 4096, 32, 1, 0, 3),
    (32768, 8192, 16, 1, 0, 2), (32768, 4096, 16, 1, 0, 3), (16384, 4096, 16, 1, 0, 3),
    (16384, 8192, 16, 1, 0, 2), (16384, 4096, 8, 1, 0, 3),
]
BWD_VARIANTS = [
    (0, 4096, 16, 1, 0, 1), (0, 4096, 16, 1, 0, 2), (0, 4096, 16, 1, 0, 3), (0, 2048, 8, 1, 0, 3),
    (0, 4096, 8, 1, 0, 2), (16384, 8192, 32, 1, 1, 1), (16384, 4096, 32, 1, 1, 2), (16384, 4096, 16, 1, 0, 2),
    (16384, 2048, 16, 1, 0, 3), (8192, 4096, 16, 1, 0, 2),
]


def bench(fn) -> float:
    return do_bench(fn, warmup=10, rep=60, return_mode="median")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b).norm() / b.norm()).item()


def usable(variant, n: int, dt: torch.dtype) -> bool:
    head, block, warps, ev, raw, ns = variant
    return head <= n and (not raw or dt == torch.bfloat16) and (head < 65536 or dt == torch.bfloat16)


def shipped_ev(variant, dt: torch.dtype) -> tuple:
    """The variant with EV -1 replaced by the library's per-dtype choice (hints for 2-byte dtypes)."""
    head, block, warps, ev, raw, ns = variant
    return head, block, warps, (int(dt.itemsize < 4) if ev < 0 else ev), raw, ns


def line(name: str, t: float, t_ref: float, nbytes: int, copy_gbs: float, err: float, k) -> str:
    regs = f"{k.n_regs:3d} regs {k.n_spills:4d} spills" if k is not None else ""
    return (f"  {name:30s} {t * 1e3:7.1f} us ({nbytes / t / 1e6 / copy_gbs:4.0%}) {t_ref / t:5.2f}x shipped  "
            f"{regs}  err {err:.1e}")


def launch_options(v) -> dict:
    """The prototype kernels' constexprs and warps for variant v (EV already resolved)."""
    head, block, warps, ev, raw, ns = v
    return dict(HEAD=head, BLOCK_N=block, EV=ev, RAW=raw, NS=ns, num_warps=warps)


def sweep(title: str, shipped, ref: torch.Tensor, like: torch.Tensor, nbytes: int, copy_gbs: float,
          variants: list, launch) -> None:
    """Time the shipped op, then every usable variant of its prototype on the same inputs, one line each.
    ``launch(out, v)`` runs the prototype for variant v into ``out`` and returns the compiled kernel."""
    n, dt = like.shape[-1], like.dtype
    out0 = shipped()
    t = bench(shipped)
    print(f"\n{title} {like.shape[0]}x{n} {str(dt)[6:]}", flush=True)
    print(line("shipped", t, t, nbytes, copy_gbs, rel(out0, ref), None), flush=True)
    for v in variants:
        if not usable(v, n, dt):
            continue
        v = shipped_ev(v, dt)
        out = torch.full_like(like, float("nan"))
        try:
            k = launch(out, v)
        except Exception as e:  # noqa: BLE001 - a config that does not compile is a result
            print(f"  {v}: {type(e).__name__}: {str(e)[:120]}", flush=True)
            continue
        err = rel(out, ref)
        t2 = bench(lambda: launch(out, v))
        head, block, warps, ev, raw, ns = v
        print(line(f"h{head} b{block} w{warps} ev{ev} raw{raw} ns{ns}", t2, t, nbytes, copy_gbs, err, k), flush=True)


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
    bf, f16, f32 = torch.bfloat16, torch.float16, torch.float32
    ln_shapes = [(4096, 65536, f32), (4096, 65536, bf), (2048, 131072, bf), (1024, 49152, bf), (2048, 49152, f32),
                 (4096, 40000, f32), (4096, 65536, f16)]
    sm_shapes = [(512, 65536, bf), (256, 131072, bf), (512, 128256, bf), (1024, 49152, f16)]
    bwd_shapes = [(512, 65536, bf), (512, 128256, bf), (2048, 65536, bf), (1024, 49152, f16)]
    variants, bwd_variants = VARIANTS, BWD_VARIANTS
    if quick:
        ln_shapes, sm_shapes, bwd_shapes = ln_shapes[:2], sm_shapes[:1], bwd_shapes[:1]
    gen = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape, dt):
        return torch.randn(*shape, device="cuda", dtype=torch.float32, generator=gen).to(dt)

    for m, n, dt in ln_shapes:
        x = randn(m, n, dt=dt) * 2 + 0.5
        w, b = randn(n, dt=dt), randn(n, dt=dt)
        ref = torch.nn.functional.layer_norm(x.double(), (n,), w.double(), b.double(), eps)
        mean = torch.empty(m, device="cuda")
        rstd = torch.empty(m, device="cuda")
        sweep("LN fwd", lambda: L.forward_rows(x, n, w, b, eps, True)[0], ref, x, 2 * x.numel() * x.element_size(),
              copy_gbs, variants, lambda y, v: ln_fwd_head[(m,)](x, y, w, b, mean, rstd, n, n, n, eps,
                                                                 **launch_options(v)))
    for m, n, dt in sm_shapes:
        x = randn(m, n, dt=dt) * 3
        sweep("softmax fwd", lambda: S._forward(x, 1, dt), torch.softmax(x.double(), -1), x,
              2 * x.numel() * x.element_size(), copy_gbs, variants,
              lambda y, v: softmax_fwd_head[(m,)](x, y, n, n, n, **launch_options(v)))
    for m, n, dt in bwd_shapes:
        y = torch.softmax(randn(m, n, dt=torch.float32) * 3, -1).to(dt)
        dy = randn(m, n, dt=dt)
        yd, dyd = y.double(), dy.double()
        sweep("softmax bwd", lambda: S._backward(y, dy, 1, dt), yd * (dyd - (yd * dyd).sum(-1, keepdim=True)), y,
              3 * y.numel() * y.element_size(), copy_gbs, bwd_variants,
              lambda dx, v: softmax_bwd_head[(m,)](y, dy, dx, n, n, **launch_options(v)))

if __name__ == "__main__":
    main()
