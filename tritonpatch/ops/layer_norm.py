"""LayerNorm on Triton: the support check, the launchers and the autograd Function.

For ``x`` of shape ``(*, *normalized_shape)`` with ``N = prod(normalized_shape)``, each of the
``M = x.numel() // N`` rows is normalized over its N elements::

    y = (x - mean) / sqrt(var + eps) * weight + bias      (var biased; weight, bias optional)

Same semantics and output dtype as :func:`torch.nn.functional.layer_norm`. Statistics and all
accumulations are fp32; fp32, fp16 and bf16 inputs are taken. Any width runs on Triton: rows up to
``FUSED_FWD_MAX`` (fwd, 32768) / ``FUSED_BWD_MAX`` (bwd, 8192) wide are held in registers, wider rows are walked in
chunks (see ``tritonpatch/kernels/layer_norm.py``; an fp32 row's first ``LOOPED_HEAD_FP32`` elements stay in
registers).

Layout: the kernels read rows with a row stride and contiguous elements, so an input whose leading dims
are sliced/strided needs no copy (nor does an expanded upstream gradient). An input whose normalized
dims are not contiguous (e.g. a transposed last dim) is copied to contiguous by the op; that is not a
fallback reason. Outputs are contiguous, like torch's.

Gradients (dx, dweight, dbias; only those autograd asks for) are deterministic: dweight/dbias are
reduced through per-program fp32 partial rows and a fixed-order second reduction, never atomics.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from tritonpatch.kernels import layer_norm as _k
from tritonpatch.ops.column_sums import column_sums_launch
from tritonpatch.ops.common import (
    KERNEL_ERRORS,
    cdiv,
    clamp,
    kernel_failed,
    launcher,
    new_output,
    new_output_like,
    next_power_of_2,
    num_sms,
    records_grad,
    tensors_reason,
)
from tritonpatch.ops import size_policy
from tritonpatch.ops.launch import BoundLaunch, FastKernel

__all__ = ["unsupported", "layer_norm"]

#: Widest row the forward keeps whole in registers; wider rows use the chunked (looped) kernel, which
#: reads each row twice. Measured on an H100 80GB HBM3, 2026-11-26 (benchmarks/sweep_wide.py, % of the
#: copy ceiling): at 32768 the one-pass kernel with 32 warps reaches 95% (bf16) / 97% (fp32) against the
#: chunked kernel's 73% / 67%; at 65536 it spills and drops to 44-51%, below the chunked kernel's 66%.
FUSED_FWD_MAX = 32768
#: Widest row the backward keeps whole in registers (with fp32 dw/db accumulators); wider rows compute
#: per-row c1/c2 first, then dx and dw/db partials per column block (reads x and dy twice).
FUSED_BWD_MAX = 8192
#: The looped forward's L2 eviction hints, for 2-byte inputs: its first pass loads with ``evict_last``,
#: its second (which reads the row again, last chunk first) with ``evict_first``. The library before (no
#: hints, second pass first chunk first) and after, alternating processes on the H200, 2026-12-01
#: (benchmarks/ab_looped_l2.py, results_2026-12-01/session12/ab_looped_l2/): bf16 4096x65536 416.1 -> 372.4
#: us, 2048x131072 433.4 -> 406.9, 1024x49152 85.6 -> 76.6; fp16 4096x65536 416.3 -> 377.1; fp32 (the
#: reversed pass alone) 791.4 -> 769.5. In fp32 the hints cost 3-5% over the reversed pass alone
#: (benchmarks/sweep_looped_l2.py, results_2026-12-01/session12/sweep_looped_l2.txt).
LOOPED_L2_HINTS = True
#: The wide-row backward's per-row c1/c2 kernel (rows wider than FUSED_BWD_MAX) marks its loads
#: ``evict_last``. It takes the rows last first, so the rows it read last, still in L2, are the first
#: rows, where the dx kernel that re-reads them starts. The library before and after, alternating
#: processes on the H200, 2026-12-01 (benchmarks/ab_looped_l2.py --only ln_bwd,
#: results_2026-12-01/session12/ab_ln_bwd/): bf16 4096x16384 199.2 -> 189.0 us, 8192x12288 285.8 -> 269.2,
#: 4096x32768 363.8 -> 349.8, 4096x65536 689.7 -> 658.3; fp32 4096x16384 349.5 -> 346.5. The reversed
#: order without the hints: 1.00-1.01x.
BWD_STATS_L2_HINTS = True
#: fp32 rows wider than FUSED_FWD_MAX, up to twice LOOPED_HEAD_FP32: the looped forward holds each row's
#: first LOOPED_HEAD_FP32 elements in registers (32 warps, 32 registers a thread) and walks only the rest
#: twice, so a 65536-wide row costs 1.5 reads instead of 2. The library before and after, alternating
#: processes on the H200, 2026-12-01 (benchmarks/ab_looped_l2.py --only ln_fwd, three rounds each,
#: results_2026-12-01/session13/ab_ln_head/): fp32 4096x65536 776.1 -> 721.7 us (1.08x), 2048x49152
#: 1.15x, 4096x40000 1.22x, 4096x36864 1.15x, 64x65536 1.44x; but 1024x131072 414.2 -> 437.4 (0.95x: with
#: three quarters of the row in the tail, one 32-warp program per SM walks it slower than two 16-warp
#: ones), hence the limit. With the limit, on another H200 the same hour (two rounds each, ab_ln_head_limit/):
#: 4096x65536 769.8 -> 737.9 (1.04x), the others as above, 98304 and 131072 unchanged; the L2 hints on
#: top cost 3% at 40000 and gain 2% at 65536 (summary_fp32_hints.txt), so fp32 goes without them. Not for
#: 2-byte inputs: there the second walk already comes largely from L2 (the hints above) and the prototype
#: ran 0.80-0.86x at 4096x65536 (benchmarks/sweep_row_head.py, results_2026-12-01/session13/sweep_row_head{,2}.txt).
LOOPED_HEAD_FP32 = 32768
#: Chunk sizes of the wide-row kernels.
_FWD_LOOP_BLOCK = 8192
_BWD_STATS_BLOCK = 4096
_BWD_COLS_BLOCK = 1024
_BWD_COLS_ROWS = 4
#: Elements per program tile for narrow rows (several rows per program), and bytes of x per thread.
#: Measured on the H200, 2026-11-30 (benchmarks/sweep_fwd_configs.py, results_2026-11-30/sweep_fwd_ln.txt):
#: 2048-element tiles with 64 bytes per thread are within 4% of the best of 18-27 configs at every width
#: 768-16384 in bf16 and fp32; the previous 4096-element tiles at 8-16 elements per thread were up to 20% slower
#: (bf16 768), 8-12% at four other shapes, and within 1% elsewhere.
_TILE = 2048
_FWD_BYTES_PER_THREAD = 64
#: Elements per backward tile for narrow rows.
_BWD_TILE = 2048


# ----------------------------------------------------------------------------------------------------
# Support check
# ----------------------------------------------------------------------------------------------------
def _as_shape(normalized_shape) -> tuple[int, ...]:
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(normalized_shape)


def unsupported(x: torch.Tensor, normalized_shape: tuple[int, ...], weight: torch.Tensor | None,
                bias: torch.Tensor | None, eps: float) -> str | None:
    """Why Triton cannot take ``F.layer_norm(x, normalized_shape, weight, bias, eps)``, or None if it can.

    Reasons (stable text): the device (CPU without ``TRITON_INTERPRET=1``, non-CUDA devices, tensors on
    different devices), dtype (only fp32/fp16/bf16), mixed dtypes between input and parameters, autocast
    enabled, a call torch itself would reject (shape mismatch; torch then raises its own error), or a
    size where torch is faster (:mod:`tritonpatch.ops.size_policy`).
    There is no width limit and no layout condition (non-contiguous inputs are handled by the op).
    """
    reason = tensors_reason(x, weight, bias)
    if reason is not None:
        return reason
    shape = normalized_shape if type(normalized_shape) is tuple else _as_shape(normalized_shape)
    k = len(shape)
    if k == 0 or x.dim() < k or x.shape[x.dim() - k:] != shape:
        return "normalized_shape does not match the input"
    if weight is not None and weight.shape != shape:
        return "weight shape does not match normalized_shape"
    if bias is not None and bias.shape != shape:
        return "bias shape does not match normalized_shape"
    if size_policy.torch_is_faster("layer_norm", x.numel() * x.element_size(), records_grad(x, weight, bias)):
        return size_policy.REASON
    return None


# ----------------------------------------------------------------------------------------------------
# Launch parameters (functions of the width only, cached)
# ----------------------------------------------------------------------------------------------------
class _FwdConfig(NamedTuple):
    """The forward's launch parameters at one width (see :func:`_fwd_config`)."""

    fused: bool  # whole rows in registers (one pass), or the looped kernel
    block: int  # BLOCK_N: the row tile's width, or the looped kernel's chunk
    rows: int  # rows per program
    warps: int
    head: int  # looped: elements at the start of a row held in registers (HEAD), else 0


@functools.lru_cache(maxsize=None)
def _fwd_config(n: int, elt: int = 2) -> _FwdConfig:
    """The forward's launch parameters at width n, element size elt.

    Fused: the row tile is (ROWS, next_pow2(n)) with ROWS*BLOCK_N = _TILE (2048) for narrow rows (several
    rows per program, 2-D tile), one row per program from 2048 up; each thread holds 64 bytes of x (32
    bf16 or 16 fp32 elements), i.e. warps = tile * elt / 2048 in [1, 32].
    Wider than FUSED_FWD_MAX: one row per program in 8192 chunks, 16 warps; fp32 up to twice
    LOOPED_HEAD_FP32 wide: the first LOOPED_HEAD_FP32 elements held, 32 warps.
    """
    if n > FUSED_FWD_MAX:
        head = LOOPED_HEAD_FP32 if elt >= 4 and LOOPED_HEAD_FP32 < n <= 2 * LOOPED_HEAD_FP32 else 0
        return _FwdConfig(False, _FWD_LOOP_BLOCK, 1, 32 if head else 16, head)
    block = next_power_of_2(n)
    rows = clamp(_TILE // block, 1, 64)
    warps = clamp(rows * block * elt // (32 * _FWD_BYTES_PER_THREAD), 1, 32)
    return _FwdConfig(True, block, rows, warps, 0)


@functools.lru_cache(maxsize=None)
def _bwd_config(n: int, elt: int = 2) -> tuple[bool, int, int, int, int]:
    """(fused, BLOCK_N, ROWS, num_warps, programs_per_sm) for the backward at width n, element size elt.

    Fused (n <= FUSED_BWD_MAX): tile (ROWS, next_pow2(n)) of ~_BWD_TILE elements (twice that for fp32:
    a tile is then as many bytes), 16 elements per thread (warps = tile/512 in [4, 16]), and
    16/warps programs per SM (~16 warps per SM: with the next tile prefetched, two tiles of loads are
    in flight per program, enough to keep HBM busy; more programs only make the dw/db partials
    larger). Each program owns a contiguous chunk of rows. Wide: column blocks of 1024 x 4 rows,
    8 warps, ~4 programs per SM.
    """
    if n > FUSED_BWD_MAX:
        return False, _BWD_COLS_BLOCK, _BWD_COLS_ROWS, 8, 4
    block = next_power_of_2(n)
    tile = _BWD_TILE * (2 if elt >= 4 else 1)
    rows = clamp(tile // block, 1, 64)
    warps = clamp(rows * block // 512, 4, 16)
    return True, block, rows, warps, clamp(16 // warps, 1, 4)


def _rows_view(t: torch.Tensor, n: int) -> torch.Tensor:
    """``t`` as an (M, n) matrix whose rows are contiguous (column stride 1); copies only if needed."""
    t2 = t.reshape(-1, n) if n else t.reshape(0, 0)  # n == 0: nothing to do, any empty matrix
    if n > 1 and t2.stride(1) != 1:
        t2 = t2.contiguous()
    return t2


def _param_row(p: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """A weight/bias as a contiguous (n,) vector; no reshape for the usual 1-D contiguous parameter."""
    if p is None or (p.dim() == 1 and p.is_contiguous()):
        return p
    return p.reshape(n).contiguous()


def _row_stride(t2: torch.Tensor) -> int:
    return t2.stride(0) if t2.shape[0] > 1 else t2.shape[1]


# ----------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------
layer_norm_fwd_kernel = FastKernel(_k.layer_norm_fwd_kernel)
layer_norm_fwd_looped_kernel = FastKernel(_k.layer_norm_fwd_looped_kernel)
layer_norm_bwd_fused_kernel = FastKernel(_k.layer_norm_bwd_fused_kernel)
layer_norm_bwd_row_stats_kernel = FastKernel(_k.layer_norm_bwd_row_stats_kernel)
layer_norm_bwd_kernel = FastKernel(_k.layer_norm_bwd_kernel)

def _rows(x: torch.Tensor, n: int) -> tuple[torch.Tensor, int, int]:
    """``x`` as rows of n elements: (tensor whose rows are contiguous, M, row stride). A contiguous ``x``
    is passed as it is (no reshape: a few microseconds of CPU per call), anything else through
    :func:`_rows_view`."""
    if n > 0 and x.is_contiguous():
        return x, x.numel() // n, n
    x2 = _rows_view(x, n)
    return x2, x2.shape[0], _row_stride(x2)


@functools.lru_cache(maxsize=4096)
def _fwd_plan(m: int, n: int, row_stride: int, eps: float, x_dtype: torch.dtype, w_dtype: torch.dtype | None,
              b_dtype: torch.dtype | None, store_stats: bool, device: int, l2_hints: bool) -> BoundLaunch:
    """The forward launch for M rows of width n, ``row_stride`` apart (cached: the planning and the
    launch's argument key are paid once per call shape, not per call). The dtypes, the scalars, the
    device and :data:`LOOPED_L2_HINTS` are its key; the launch takes (x, y, w, b, mean, rstd), absent ones
    replaced by x."""
    fused, block, rows, warps, head = _fwd_config(n, x_dtype.itemsize)
    flags = dict(HAS_W=w_dtype is not None, HAS_B=b_dtype is not None, STORE_STATS=store_stats, BLOCK_N=block)
    dev = device if device >= 0 else None
    if fused:
        even = n == block and m % rows == 0
        return BoundLaunch(layer_norm_fwd_kernel, (cdiv(m, rows),), (row_stride, n, m, n, eps),
                           dict(flags, ROWS=rows, EVEN=even), warps, device=dev)
    return BoundLaunch(layer_norm_fwd_looped_kernel, (m,), (row_stride, n, n, eps),
                       dict(flags, L2_HINTS=l2_hints and x_dtype.itemsize < 4, HEAD=head), warps, device=dev)


@launcher
def forward_rows(x: torch.Tensor, n: int, w: torch.Tensor | None, b: torch.Tensor | None, eps: float,
                 store_stats: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The forward for ``x`` of any shape normalised over its trailing n elements (M = numel / n rows):
    y in x's shape and dtype (contiguous), plus fp32 mean and rstd (M,) if ``store_stats``.
    w, b: contiguous (n,) or None."""
    x2, m, row_stride = _rows(x, n)
    y = new_output_like(x)
    mean = rstd = None
    if store_stats:
        mean = new_output((m,), torch.float32, x.device)
        rstd = new_output((m,), torch.float32, x.device)
    if m == 0 or n == 0:
        return y, mean, rstd
    launch = _fwd_plan(m, n, row_stride, eps, x.dtype, None if w is None else w.dtype,
                       None if b is None else b.dtype, store_stats, x.get_device(), LOOPED_L2_HINTS)
    # x stands in for absent pointers; never read (the constexpr flags are off)
    launch(x2, y, x2 if w is None else w, x2 if b is None else b, mean if store_stats else x2,
           rstd if store_stats else x2)
    return y, mean, rstd


class _BwdPlan(NamedTuple):
    """The backward's launches for one call shape (see :func:`_bwd_plan`)."""

    fused: bool  # rows held whole (one kernel), or wide rows walked per column block
    g: int  # rows of the fp32 dw/db partial buffer (one per program)
    stats: BoundLaunch | None  # wide rows that need dx: per-row c1/c2 first, taking (x, dy, w, mean, rstd, c1, c2)
    main: BoundLaunch  # dx and the dw/db partials: (x, dy, dx, w, mean, rstd, part), wide: (..., rstd, c1, c2, part)
    reduce: BoundLaunch | None  # dw/db from the partials: (part, out0, out1); None when neither is needed


@functools.lru_cache(maxsize=4096)
def _bwd_plan(m: int, n: int, rs_x: int, rs_dy: int, x_dtype: torch.dtype, dy_dtype: torch.dtype,
              w_dtype: torch.dtype | None, need_dx: bool, need_dw: bool, need_db: bool,
              param_dtype: torch.dtype, device: int, l2_hints: bool) -> _BwdPlan:
    """The backward launches for M rows of width n (row strides ``rs_x`` of x, ``rs_dy`` of dy), cached
    per call shape like :func:`_fwd_plan` (``l2_hints``: :data:`BWD_STATS_L2_HINTS`)."""
    fused, block, rows, warps, per_sm = _bwd_config(n, x_dtype.itemsize)
    n_tiles = cdiv(m, rows)
    dev = device if device >= 0 else None
    sms = num_sms(device)
    k = int(need_dw) + int(need_db)
    has_w = w_dtype is not None
    needs = dict(COMPUTE_DX=need_dx, COMPUTE_DW=need_dw, COMPUTE_DB=need_db)
    stats = None
    if fused:
        # contiguous chunks of whole tiles, one chunk per program
        g = min(n_tiles, sms * per_sm)
        rows_per_prog = cdiv(n_tiles, g) * rows
        g = cdiv(m, rows_per_prog)
        main = BoundLaunch(layer_norm_bwd_fused_kernel, (g,), (rs_x, rs_dy, n, m, n, rows_per_prog, g * (k - 1)),
                           dict(HAS_W=has_w, **needs, BLOCK_N=block, ROWS=rows, PREFETCH=True), warps, device=dev)
    else:
        n_col_blocks = cdiv(n, block)
        g = clamp(sms * per_sm // n_col_blocks, 1, n_tiles)
        if need_dx:
            stats = BoundLaunch(layer_norm_bwd_row_stats_kernel, (m,), (rs_x, rs_dy, n),
                                dict(HAS_W=has_w, BLOCK_N=_BWD_STATS_BLOCK, L2_HINTS=l2_hints), 8, device=dev)
        main = BoundLaunch(layer_norm_bwd_kernel, (g, n_col_blocks), (rs_x, rs_dy, n, m, n, g * (k - 1)),
                           dict(HAS_W=has_w, FULL_ROW=False, **needs, BLOCK_N=block, ROWS=rows), warps, device=dev)
    reduce = None
    if k:
        reduce = column_sums_launch(g, n, k, dev)
    return _BwdPlan(fused, g, stats, main, reduce)


def backward_rows(x: torch.Tensor, dy: torch.Tensor, n: int, w: torch.Tensor | None, mean: torch.Tensor,
                  rstd: torch.Tensor, need_dx: bool, need_dw: bool, need_db: bool, param_dtype: torch.dtype
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The backward for ``x`` and ``dy`` of one shape, normalised over their trailing n elements, with the
    forward's fp32 ``mean`` and ``rstd`` (M,): dx in x's shape and dtype (contiguous), dw and db (n,) in
    ``param_dtype``; None where not needed. w: contiguous (n,) or None.

    On Triton; where a kernel cannot be built or loaded on this GPU (:data:`KERNEL_ERRORS`), in torch ops
    from the same mean and rstd (:func:`_backward_rows_torch`)."""
    try:
        return _backward_rows_triton(x, dy, n, w, mean, rstd, need_dx, need_dw, need_db, param_dtype)
    except KERNEL_ERRORS as e:
        kernel_failed("layer_norm backward", e)
        return _backward_rows_torch(x, dy, n, w, mean, rstd, need_dx, need_dw, need_db, param_dtype)


def _backward_rows_torch(x: torch.Tensor, dy: torch.Tensor, n: int, w: torch.Tensor | None, mean: torch.Tensor,
                         rstd: torch.Tensor, need_dx: bool, need_dw: bool, need_db: bool, param_dtype: torch.dtype
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """:func:`backward_rows` in torch ops, in fp32: per row of n, xhat = (x - mean) * rstd, g = dy * w,
    dx = rstd * (g - xhat * mean(g * xhat) - mean(g)); dw = sum_rows(dy * xhat), db = sum_rows(dy)."""
    x2, dy2 = x.reshape(-1, n).float(), dy.reshape(-1, n).float()
    xhat = (x2 - mean[:, None]) * rstd[:, None]
    g = dy2 * w.float() if w is not None else dy2
    dx = dw = db = None
    if need_dx:
        c1, c2 = (g * xhat).mean(1, keepdim=True), g.mean(1, keepdim=True)
        dx = (rstd[:, None] * (g - xhat * c1 - c2)).to(x.dtype).reshape(x.shape)
    if need_dw:
        dw = (dy2 * xhat).sum(0).to(param_dtype)
    if need_db:
        db = dy2.sum(0).to(param_dtype)
    return dx, dw, db


@launcher
def _backward_rows_triton(x: torch.Tensor, dy: torch.Tensor, n: int, w: torch.Tensor | None, mean: torch.Tensor,
                          rstd: torch.Tensor, need_dx: bool, need_dw: bool, need_db: bool, param_dtype: torch.dtype
                          ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """:func:`backward_rows`'s launches."""
    x2, m, rs_x = _rows(x, n)
    dy2, _, rs_dy = _rows(dy, n)
    dx = new_output_like(x) if need_dx else None
    dev = x.device
    if m == 0 or n == 0:
        dw = torch.zeros(n, dtype=param_dtype, device=dev) if need_dw else None
        db = torch.zeros(n, dtype=param_dtype, device=dev) if need_db else None
        return dx, dw, db
    plan = _bwd_plan(m, n, rs_x, rs_dy, x.dtype, dy.dtype, None if w is None else w.dtype,
                     need_dx, need_dw, need_db, param_dtype, x.get_device(), BWD_STATS_L2_HINTS)
    k = int(need_dw) + int(need_db)
    w_arg = x2 if w is None else w
    dx_arg = x2 if dx is None else dx
    part = new_output((k, plan.g, n), torch.float32, dev) if k else x2
    if plan.fused:
        plan.main(x2, dy2, dx_arg, w_arg, mean, rstd, part)
        if need_dx and n == 1:
            # One-element rows: xhat == 0, so dx is exactly 0. The kernel gets g - mean(g) = 0 only up to
            # rounding (the compiler may fuse dy * w into the subtraction as an FMA), times rstd ~ 1/sqrt(eps).
            dx.zero_()
    else:
        c1 = c2 = mean  # placeholders unless dx (and so the row stats) is needed
        if plan.stats is not None:
            c1 = new_output((m,), torch.float32, dev)
            c2 = new_output((m,), torch.float32, dev)
            plan.stats(x2, dy2, w_arg, mean, rstd, c1, c2)
        plan.main(x2, dy2, dx_arg, w_arg, mean, rstd, c1, c2, part)
    if not k:
        return dx, None, None
    out0 = new_output((n,), param_dtype, dev)
    out1 = new_output((n,), param_dtype, dev) if k == 2 else out0
    plan.reduce(part, out0, out1)
    return dx, (out0 if need_dw else None), (out1 if need_db else None)


def _differentiable_backward(x: torch.Tensor, shape: tuple[int, ...], weight: torch.Tensor | None,
                             bias: torch.Tensor | None, eps: float, dy: torch.Tensor,
                             needs: tuple[bool, ...]) -> tuple[torch.Tensor | None, ...]:
    """(dx, dweight, dbias) of ``F.layer_norm(x, shape, weight, bias, eps)`` by torch's own op recomputed
    under autograd, as a graph that can be differentiated again (double backward: gradient penalties,
    Hessian-vector products). Only used by a backward run with ``create_graph=True``; None where no
    gradient is needed."""
    inputs = (x, weight, bias)
    wanted = [t for t, need in zip(inputs, needs) if need]
    with torch.enable_grad():
        y = F.layer_norm(x, shape, weight, bias, eps)
        grads = iter(torch.autograd.grad(y, wanted, dy, create_graph=True))
    return tuple(next(grads) if need else None for need in needs)


class _LayerNormFunction(torch.autograd.Function):
    """Autograd wrapper: saves x, weight and bias (the inputs) and keeps the fp32 mean/rstd for backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, shape, eps):  # type: ignore[override]
        n = math.prod(shape)
        y, mean, rstd = forward_rows(x, n, _param_row(weight, n), _param_row(bias, n), eps, True)
        # the inputs themselves: autograd checks they were not modified in place, and a double backward
        # (create_graph=True) differentiates through them
        ctx.save_for_backward(x, weight, bias)
        # mean/rstd are this op's own intermediates (never seen by the caller): kept on ctx directly,
        # which spares the saved-tensor unpacking on every backward.
        ctx.stats = (mean, rstd)
        ctx.n, ctx.shape, ctx.eps = n, shape, eps
        ctx.w_shape = weight.shape if weight is not None else None
        ctx.b_shape = bias.shape if bias is not None else None
        ctx.param_dtype = x.dtype
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        n = ctx.n
        if torch.is_grad_enabled():  # create_graph=True: a backward that is itself differentiable
            return (*_differentiable_backward(x, ctx.shape, weight, bias, ctx.eps, dy, ctx.needs_input_grad[:3]),
                    None, None)
        mean, rstd = ctx.stats
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        dx, dw, db = backward_rows(x, dy, n, _param_row(weight, n), mean, rstd, need_dx, need_dw, need_db,
                                   ctx.param_dtype)
        # reshape only where the shapes differ (each view costs a few microseconds of CPU per call)
        if dw is not None and dw.shape != ctx.w_shape:
            dw = dw.view(ctx.w_shape)
        if db is not None and db.shape != ctx.b_shape:
            db = db.view(ctx.b_shape)
        return dx, dw, db, None, None


def layer_norm(x: torch.Tensor, normalized_shape: tuple[int, ...], weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the trailing ``normalized_shape`` dims of ``x``, on Triton.

    Shapes: ``x`` is ``(*, *normalized_shape)`` (any number of leading dims, possibly none),
    ``weight`` and ``bias`` are ``normalized_shape`` or None. Returns ``y`` of ``x.shape`` and dtype,
    contiguous::

        y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias

    with mean and biased variance over the N = prod(normalized_shape) trailing elements of each row,
    computed in fp32. Differentiable w.r.t. x, weight and bias (only the gradients autograd needs are
    computed; dweight/dbias are deterministic). Callers check :func:`unsupported` first; this function
    assumes the call is supported.
    """
    if records_grad(x, weight, bias):
        return _LayerNormFunction.apply(x, weight, bias, _as_shape(normalized_shape), eps)
    n = normalized_shape if isinstance(normalized_shape, int) else math.prod(normalized_shape)
    # Inference: no autograd node and no statistics written.
    return forward_rows(x, n, _param_row(weight, n), _param_row(bias, n), eps, False)[0]
