"""LayerNorm forward: the shipped one-tile-per-program kernel against persistent variants, on a GPU.

    python benchmarks/sweep_ln_fwd_persistent.py

Persistent: a grid of (programs per SM x SMs) programs, each walking row tiles p, p + G, ...; weight and
bias loaded once per program. Variants: plain loop; the next tile's x loaded into registers before the
current tile is computed (``prefetch``); the loop as ``tl.range(..., num_stages=s)`` (Triton's pipeliner).
Tiles and warps are the shipped ones (``_fwd_config``). Per shape: GB/s (x read + y written, do_bench
median over 3 rotating inputs) and % of a clone of the same bytes; every variant is checked against
F.layer_norm first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.testing import do_bench

from tritonpatch.kernels.layer_norm import _load_f32, _store
from tritonpatch.ops import layer_norm as L
from tritonpatch.ops.common import num_sms


@triton.jit
def _normalize(x, w, b, mask, N, eps, EVEN: tl.constexpr):
    mean = tl.sum(x, axis=1) / N
    xc = x - mean[:, None]
    if not EVEN:
        xc = tl.where(mask, xc, 0.0)
    var = tl.sum(xc * xc, axis=1) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    return xc * rstd[:, None] * w[None, :] + b[None, :]


@triton.jit
def ln_fwd_persistent(X, Y, W, B, stride_x, stride_y, M, N, eps, n_tiles,
                      BLOCK_N: tl.constexpr, ROWS: tl.constexpr, EVEN: tl.constexpr,
                      PREFETCH: tl.constexpr, STAGES: tl.constexpr):
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    r = tl.arange(0, ROWS).to(tl.int64)  # rows (and so row * stride) in int64
    w = _load_f32(W + cols, col_ok, EVEN)
    b = _load_f32(B + cols, col_ok, EVEN)
    if PREFETCH:
        rows = pid * ROWS + r
        if EVEN:
            mask = (rows < M)[:, None]
        else:
            mask = (rows < M)[:, None] & col_ok[None, :]
        x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        for t in range(pid, n_tiles, G):
            nrows = (t + G) * ROWS + r
            if EVEN:
                nmask = (nrows < M)[:, None]
            else:
                nmask = (nrows < M)[:, None] & col_ok[None, :]
            x_next = tl.load(X + nrows[:, None] * stride_x + cols[None, :], mask=nmask, other=0.0).to(tl.float32)
            y = _normalize(x, w, b, mask, N, eps, EVEN)
            tl.store(Y + rows[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
            x, rows, mask = x_next, nrows, nmask
    else:
        for t in tl.range(pid, n_tiles, G, num_stages=STAGES):
            rows = t * ROWS + r
            mask = (rows < M)[:, None] & col_ok[None, :]
            x = _load_f32(X + rows[:, None] * stride_x + cols[None, :], mask, EVEN)
            y = _normalize(x, w, b, mask, N, eps, EVEN)
            _store(Y + rows[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask, EVEN)


SHAPES = [(32768, 768), (32768, 1024), (16384, 2048), (8192, 4096), (4096, 8192), (4096, 16384)]


def main() -> None:
    dev = torch.device("cuda")
    sms = num_sms(dev.index or 0)
    print(f"{torch.cuda.get_device_name()}; triton {triton.__version__}; {sms} SMs")
    for dtype in (torch.bfloat16, torch.float32):
        for m, n in SHAPES:
            xs = [torch.randn(m, n, device=dev, dtype=dtype) for _ in range(3)]
            w = torch.randn(n, device=dev, dtype=dtype)
            b = torch.randn(n, device=dev, dtype=dtype)
            y = torch.empty_like(xs[0])
            nbytes = 2 * xs[0].numel() * xs[0].element_size()
            i = [0]

            def nxt():
                i[0] = (i[0] + 1) % 3
                return xs[i[0]]

            copy_ms = do_bench(lambda: y.copy_(nxt()), warmup=10, rep=60, return_mode="median")
            fused, block, rows, warps = L._fwd_config(n, dtype.itemsize)
            even = n == block and m % rows == 0
            n_tiles = triton.cdiv(m, rows)
            variants = {"shipped": lambda x: L.forward_rows(x, n, w, b, 1e-5, False)[0]}
            for per_sm in (1, 2, 4, 8):
                g = min(n_tiles, sms * per_sm)
                for name, pre, st in (("loop", False, 1), ("prefetch", True, 1), ("stages2", False, 2),
                                      ("stages3", False, 3)):
                    def run(x, g=g, pre=pre, st=st):
                        ln_fwd_persistent[(g,)](x, y, w, b, x.stride(0), y.stride(0), m, n, 1e-5, n_tiles,
                                                BLOCK_N=block, ROWS=rows, EVEN=even, PREFETCH=pre, STAGES=st,
                                                num_warps=warps)
                        return y
                    variants[f"{name} x{per_sm}/SM"] = run
            ref = F.layer_norm(xs[0].float(), (n,), w.float(), b.float(), 1e-5)
            line = [f"{str(dtype)[6:]:8s} {m}x{n}: copy {nbytes / copy_ms / 1e6:.0f} GB/s"]
            for name, fn in variants.items():
                y.fill_(float("nan"))
                out = fn(xs[0]).float()
                err = ((out - ref).norm() / ref.norm()).item()
                if not err < (1e-2 if dtype != torch.float32 else 1e-5):
                    line.append(f"{name} WRONG {err:.1e}")
                    continue
                ms = do_bench(lambda: fn(nxt()), warmup=10, rep=60, return_mode="median")
                line.append(f"{name} {nbytes / ms / 1e6:.0f} ({copy_ms / ms * 100:.0f}%)")
            print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
