"""Wide-row softmax (rows wider than MAX_SINGLE_N): does a persistent grid that keeps the rows in flight
inside L2 beat one program per row?

    python benchmarks/sweep_softmax_l2.py

The looped kernels read each row twice (statistics, then the output). With one program per row, every
row is in flight at once (512 x 65536 bf16 is 64 MiB, more than L2), so the second read comes from DRAM:
3 tensor passes instead of 2 (forward) or 5 instead of 3 (backward). A persistent grid of k programs per
SM, each looping over rows, keeps k * SMs rows in flight (k = 0 below: one program per row). The
forward also tries a row-wide running max (one exp per element in its first sweep instead of two). Prints per shape: torch, the shipped kernel,
then each (k, BLOCK_N, num_warps) candidate, as ms and % of the copy ceiling; every candidate is checked
against a float64 reference first.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from tritonpatch.kernels.softmax import _load_f32, _round
from tritonpatch.ops import softmax as S


@triton.jit
def fwd_persistent(x_ptr, y_ptr, n_rows, n_cols, stride_x_row, stride_y_row, BLOCK_N: tl.constexpr,
                   ROW_MAX: tl.constexpr):
    """The shipped looped forward with a row loop. ROW_MAX: the running max is the row's (one reduction
    per chunk) instead of per lane: one exp per element in the statistics sweep instead of two."""
    cols = tl.arange(0, BLOCK_N)
    for row in range(tl.program_id(0), n_rows, tl.num_programs(0)):
        x_row = x_ptr + tl.cast(row, tl.int64) * stride_x_row
        y_row = y_ptr + tl.cast(row, tl.int64) * stride_y_row
        m = tl.full([BLOCK_N], -float("inf"), tl.float32)
        if ROW_MAX:
            m = tl.max(m, axis=0)
        s = tl.zeros([BLOCK_N], tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            offs = start + cols
            x = _load_f32(x_row + offs, offs < n_cols, y_ptr.dtype.element_ty, False, False)
            if ROW_MAX:
                m_new = tl.maximum(m, tl.max(x, axis=0))
            else:
                m_new = tl.maximum(m, x)
            m_ref = tl.where(m_new == -float("inf"), 0.0, m_new)
            s = s * tl.exp(m - m_ref) + tl.exp(x - m_ref)
            m = m_new
        if ROW_MAX:
            m_row = m
            inv = 1.0 / tl.sum(s, axis=0)
        else:
            m_row = tl.max(m, axis=0)
            inv = 1.0 / tl.sum(s * tl.exp(m - m_row), axis=0)
        n_blocks = tl.cdiv(n_cols, BLOCK_N)
        for i in range(0, n_blocks):
            offs = (n_blocks - 1 - i) * BLOCK_N + cols
            mask = offs < n_cols
            x = _load_f32(x_row + offs, mask, y_ptr.dtype.element_ty, False, False)
            tl.store(y_row + offs, _round(tl.exp(x - m_row) * inv, y_ptr.dtype.element_ty, False), mask=mask)


@triton.jit
def bwd_persistent(y_ptr, dy_ptr, dx_ptr, n_rows, n_cols, stride_row, BLOCK_N: tl.constexpr):
    cols = tl.arange(0, BLOCK_N)
    for row in range(tl.program_id(0), n_rows, tl.num_programs(0)):
        base = tl.cast(row, tl.int64) * stride_row
        acc = tl.zeros([BLOCK_N], tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            offs = start + cols
            mask = offs < n_cols
            y = tl.load(y_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            acc += y * dy
        dot = tl.sum(acc, axis=0)
        n_blocks = tl.cdiv(n_cols, BLOCK_N)
        for i in range(0, n_blocks):
            offs = (n_blocks - 1 - i) * BLOCK_N + cols
            mask = offs < n_cols
            y = tl.load(y_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(dx_ptr + base + offs, _round(y * (dy - dot), dx_ptr.dtype.element_ty, False), mask=mask)


def bench(fn) -> float:
    return do_bench(fn, warmup=10, rep=50, return_mode="median")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b).norm() / b.norm()).item()


def copy_ceiling() -> float:
    a = torch.empty(2 ** 28, dtype=torch.uint8, device=DEVICE)
    return 2 * a.numel() / bench(lambda: a.clone()) / 1e6


SHAPES = ((512, 65536, torch.bfloat16), (2048, 65536, torch.bfloat16), (256, 131072, torch.bfloat16),
          (512, 65536, torch.float32), (1024, 49152, torch.bfloat16), (4096, 40000, torch.float16),
          (128, 65536, torch.bfloat16))
DEVICE = "cuda"
#: (k programs per SM, 0: one program per row; BLOCK_N; num_warps)
CANDIDATES = [(k, bn, nw) for k in (0, 1, 2) for bn, nw in ((8192, 16), (8192, 32), (16384, 32))]
FWD_VARIANTS = {"lane": False, "blockmax": True}  # name -> ROW_MAX


def sweep(title: str, line: list[str], runs: dict, out: torch.Tensor, ref: torch.Tensor, pct) -> None:
    """Time each candidate of ``runs`` (label -> launch writing ``out``) after checking ``out`` against
    ``ref`` (poisoned first); print the line and the fastest."""
    best = None
    for label, run in runs.items():
        out.fill_(float("nan"))
        run()
        e = rel(out, ref)
        t = bench(run)
        line.append(f"{label} {pct(t)} e{e:.0e}")
        if best is None or t < best[0]:
            best = (t, line[-1])
    print("; ".join(line), flush=True)
    print(f"  best {title}: {best[1]}", flush=True)


def main() -> None:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    ceiling = copy_ceiling()
    print(f"{torch.cuda.get_device_name()}, {sms} SMs, copy ceiling {ceiling:.0f} GB/s, triton {triton.__version__}")
    for m, n, dt in SHAPES:
        x = torch.randn(m, n, device=DEVICE, dtype=dt)
        y = torch.empty_like(x)
        shape = f"{m}x{n} {str(dt)[6:]}"

        def pct(t: float, b: int = 2 * x.numel() * x.element_size()) -> str:
            return f"{t:.4f} ms {b / t / 1e6 / ceiling:.0%}"
        line = [f"FWD {shape}: torch {pct(bench(lambda: torch.softmax(x, -1)))}",
                f"shipped {pct(bench(lambda: S._forward(x, 1, dt)))}"]
        runs = {f"{name} k{k} bn{bn} w{nw}": (lambda g=(min(m, k * sms) if k else m,), bn=bn, nw=nw, rm=row_max:
                                                fwd_persistent[g](x, y, m, n, n, n, BLOCK_N=bn, ROW_MAX=rm, num_warps=nw))
                for name, row_max in FWD_VARIANTS.items() for k, bn, nw in CANDIDATES}
        sweep(f"FWD {shape}", line, runs, y, torch.softmax(x.double(), -1), pct)
        # backward
        yv = torch.softmax(torch.randn(m, n, device=DEVICE), -1).to(dt)
        dy = torch.randn(m, n, device=DEVICE, dtype=dt)
        ref = yv.double() * (dy.double() - (yv.double() * dy.double()).sum(-1, keepdim=True))
        dx = torch.empty_like(dy)

        def pct3(t: float) -> str:
            return pct(t, 3 * dy.numel() * dy.element_size())
        line = [f"BWD {shape}: torch {pct3(bench(lambda: torch.ops.aten._softmax_backward_data(dy, yv, -1, dt)))}",
                f"shipped {pct3(bench(lambda: S._backward(yv, dy, 1, dt)))}"]
        runs = {f"k{k} bn{bn} w{nw}": (lambda g=(min(m, k * sms) if k else m,), bn=bn, nw=nw:
                                       bwd_persistent[g](yv, dy, dx, m, n, n, BLOCK_N=bn, num_warps=nw))
                for k, bn, nw in CANDIDATES}
        sweep(f"BWD {shape}", line, runs, dx, ref, pct3)


if __name__ == "__main__":
    main()
