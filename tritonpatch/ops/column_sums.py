"""Launching :mod:`tritonpatch.kernels.column_sums`: the fixed-order sum of a backward's fp32 partial rows
(LayerNorm: dweight and dbias; Linear+ReLU: dbias)."""
from __future__ import annotations

from tritonpatch.kernels import column_sums as _k
from tritonpatch.ops.common import cdiv, clamp, next_power_of_2
from tritonpatch.ops.launch import BoundLaunch, FastKernel

__all__ = ["column_sums_launch"]

column_sums_kernel = FastKernel(_k.column_sums_kernel)


def config(g: int, n: int) -> tuple[int, int, int]:
    """(BLOCK_G, BLOCK_N, num_warps) for summing a (g, n) fp32 partial buffer over its rows.

    The partials were just written (L2-resident); the sum is latency-bound, so each program takes a
    narrow column strip (many programs) and a tall row block (few loop trips)."""
    if n <= 2048:
        return clamp(next_power_of_2(g), 16, 512), 8, 4
    return clamp(next_power_of_2(g), 16, 256), 32, 8


def column_sums_launch(g: int, n: int, k: int, device: int | None) -> BoundLaunch:
    """The launch summing fp32 partials ``part`` (k, g, n), k in (1, 2), over g: called as
    ``launch(part, out0, out1)``, out_i (n,) = sum over rows of part[i] in out_i's dtype (out1 is not
    written when k == 1; pass out0)."""
    block_g, block_n, warps = config(g, n)
    return BoundLaunch(column_sums_kernel, (cdiv(n, block_n), k), (g, n),
                       dict(BLOCK_G=block_g, BLOCK_N=block_n), warps, device=device)
