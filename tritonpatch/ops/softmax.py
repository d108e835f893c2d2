"""Softmax through Triton: support check, launchers and the autograd Function.

    y = softmax(x, dim, dtype):   y_i = exp(x_i - max_j x_j) / sum_k exp(x_k - max_j x_j)   along ``dim``
    backward (from the saved output only):   dx_i = y_i * (dy_i - sum_k dy_k y_k)

Same semantics as ``torch.softmax(x, dim, dtype=dtype)``: with ``dtype`` torch first casts x to ``dtype``;
here that cast is fused (the kernel reads x in its own dtype, rounds it to ``dtype`` when that is a
narrower or different half format, computes in fp32 and writes ``dtype``). Gradients come back in x's
dtype, also written directly by the kernel. Statistics are always fp32.

Layout handling (no hidden copies for the common cases). The tensor is viewed as ``(outer, R, inner)``
with ``R = x.shape[dim]``:

* ``inner == 1`` and the reduced axis has stride 1 (softmax over a contiguous last dim; row slices,
  any row stride): row kernels. Rows up to :data:`MAX_SINGLE_N` wide are held in registers, several
  narrow rows per program; wider rows use the looped (online max/sum) kernel, which has no width limit,
  or, in fp32 where measured faster (:data:`SPLIT_ROWS`), are split over several co-resident programs
  that exchange partial statistics (read once instead of twice).
* otherwise (softmax over a non-last dim, over a transposed last dim, channels-last ``dim=1``):
  the strided kernel reduces along an axis of any stride, each program taking a tile of the other axis;
  a reduced axis too long for one tile is split over many programs in the forward (a stats kernel, then
  an apply kernel: :data:`SPLIT_BLOCK_R`), or, beyond :data:`SPLIT_MAX_CHUNKS` chunks and in the
  backward, walked by one looping program per tile of the other axis.
* A copy (``x.contiguous()``) is made only when the dims before ``dim`` (or after it) cannot be merged
  into one strided axis, e.g. a permutation that interleaves them around ``dim``. The output is always
  contiguous, like torch's.
"""
from __future__ import annotations

import functools
import logging
import math

import torch
from torch import Tensor

from tritonpatch.kernels import softmax as _k
from tritonpatch.ops.common import (
    FLOAT_DTYPES,
    KERNEL_ERRORS,
    autocast_reason,
    cdiv,
    clamp,
    device_reason,
    dtype_reason,
    interpreting,
    kernel_failed,
    launcher,
    new_output,
    new_output_like,
    next_power_of_2,
    num_sms,
    records_grad,
)
from tritonpatch.ops import size_policy
from tritonpatch.ops.launch import BoundLaunch, FastKernel, programs_per_sm

__all__ = ["unsupported", "softmax"]

# Launch heuristics. Module constants so tests can lower them (e.g. to reach the looped paths at small
# widths); they are part of the config cache key, so changing them takes effect on the next call.
#: widest row (elements, after rounding up to a power of two) held in registers in one pass (forward)
MAX_SINGLE_N = 32768
#: same for the backward, which holds two rows (y, dy). Measured on an H100 80GB HBM3, 2026-11-26
#: (benchmarks/sweep_wide.py, bf16, % of copy): at 32768 one pass reaches 87% (1024 rows) / 96% (4096
#: rows) against the looped kernel's 67% / 68%; wider rows take the looped kernel (60% at 512x65536,
#: no looped config did better than 61%).
MAX_SINGLE_N_BWD = 32768
#: elements per program for narrow rows (several rows per program), forward. Measured on the H200,
#: 2026-11-30 (benchmarks/sweep_fwd_configs.py, results_2026-11-30/sweep_fwd_softmax.txt, bf16): 2048-element
#: tiles at 16 elements per thread are the best or within 2% of the best config at widths 512-4096 (87% of
#: the 1 GiB copy at 16384x2048, where copying the same bytes reaches 87%); 4096-element tiles were 3-5%
#: slower at widths 512 and 2048 (a 4096-wide row is one program either way).
ROWS_TILE = 2048
#: the same for the backward (two rows read per row written; swept on the H100, 2026-11-26)
ROWS_TILE_BWD = 4096
#: bytes of one chunk of the looped kernels (per tensor read)
LOOP_BLOCK_BYTES = 16384
#: the same for the looped backward over rows (wider than MAX_SINGLE_N_BWD), and its warps. Measured on the
#: H200, 2026-12-01 (benchmarks/sweep_softmax_l2.py, results_2026-12-01/session7/sweep_softmax_l2_b.txt, %
#: of copy): 32 KiB chunks at 32 warps against 16 KiB at 16 warps: bf16 512x65536 57 -> 67%, 2048x65536
#: 64 -> 75%, 1024x49152 63 -> 74%, 128x65536 46 -> 52%; fp16 4096x40000 67 -> 76%; fp32 512x65536 57 -> 65%.
#: (A persistent grid keeping fewer rows in flight, so that the second sweep reads from L2, changed
#: nothing; nor did either setting help the forward's looped kernel.)
LOOP_BLOCK_BYTES_BWD = 32768
LOOP_WARPS_BWD = 32
#: L2 eviction hints in the looped row kernels, for 2-byte dtypes (:mod:`tritonpatch.kernels.cache_hints`:
#: the first sweep's loads ``evict_last``, the second's ``evict_first``, the output's stores
#: ``evict_first``). Forward measured on the H200, 2026-12-01 (benchmarks/sweep_looped_l2.py,
#: results_2026-12-01/session12/sweep_looped_l2.txt, 16 KiB chunks at 16 warps, as shipped): bf16 512x65536
#: 57.3 -> 52.7 us, 256x131072 61.6 -> 55.5, 512x128256 112.1 -> 101.7, 4096x65536 401.7 -> 371.3; fp16
#: 1024x49152 77.6 -> 71.2 (1.08-1.12x). fp32 wide rows are split (SPLIT_ROWS), so not measured there.
LOOP_L2_HINTS = True
#: the same for the looped backward (rows wider than 32768 in bf16/fp16). The library with and without,
#: alternating processes on the H200, 2026-12-01 (benchmarks/ab_looped_l2.py, results_2026-12-01/session12/
#: ab_looped_l2/): bf16 512x65536 71.7 -> 64.9 us, 2048x65536 259.8 -> 237.7, 256x131072 80.2 -> 77.0,
#: 512x128256 151.8 -> 143.8; fp16 1024x49152 97.1 -> 96.8 (BENCHMARKS.md, "L2 eviction hints in the looped
#: kernels").
LOOP_L2_HINTS_BWD = True
#: Strided kernels (softmax over a dim that is not the last, e.g. dim=1 of (B, R, C)): the largest
#: [BLOCK_R, BLOCK_P] tile reduced in one pass (a longer R: the split forward below, or the looped kernels);
#: the tile targeted per program and the fp32 elements each thread holds (warps = tile / (32 * that)),
#: forward and backward.
#: Swept on the H200, 2026-12-01 (benchmarks/sweep_softmax_strided.py, results_2026-12-01/session8/
#: sweep_softmax_strided*.txt, GPU time): whole columns with BLOCK_P >= 32 and 32 elements per thread
#: (forward; 64 in the backward, which holds y and dy) are the best config or within 3% of it at every
#: shape swept. Forward bf16, us: (64, 512, 1024) dim=1 94.2 -> 52.1, (512, 64, 1024) 160.0 -> 50.4,
#: (16, 128, 4096) 25.5 -> 13.2; backward 70.4 -> 60.9, 97.0 -> 50.8, 18.4 -> 15.4. The previous
#: heuristic gave these tiles 16-32 warps (8-16 elements per thread), which starved the bf16 forward
#: (31-34% of copy; fp32 was not hurt).
STRIDED_SINGLE_TILE = 32768
STRIDED_TILE = 4096
STRIDED_PER_THREAD = 32
STRIDED_TILE_BWD = 8192
STRIDED_PER_THREAD_BWD = 64
#: Strided forward with an R too long for one pass: split R into chunks of SPLIT_BLOCK_R, each its own
#: program (stats, then apply: two kernels), for up to SPLIT_MAX_CHUNKS chunks; longer R loops in one
#: program per column block. Swept on the H200, 2026-12-01 (benchmarks/sweep_softmax_strided.py --split,
#: results_2026-12-01/session8/sweep_softmax_split.txt, GPU time): [256, 32] chunks at 4 warps were the
#: best or within 2% of the best of 24 configs at every shape, against the looped kernel bf16 (8, 4096,
#: 1024) dim=1 92.0 -> 70.4 us, (4, 8192, 512) 137.8 -> 36.9 us, (1, 16384, 1024) 264.6 -> 36.7 us, fp32
#: 1.35-7.9x; at R = 512 the one-pass tile stays faster (52.8 vs 68.0 us).
SPLIT_BLOCK_R = 256
SPLIT_BLOCK_P = 32
SPLIT_WARPS = 4
SPLIT_MAX_CHUNKS = 128
#: Rows split over K programs (``softmax_*_rows_split_kernel``): a row's chunks are held in registers by K
#: co-resident programs that exchange partial statistics at a barrier, so the row is read once instead of
#: twice. Chunks of SPLIT_ROWS_CHUNK_BYTES, SPLIT_ROWS_PER_THREAD fp32 elements per thread. Used for fp32
#: rows too wide for one pass (forward and backward) and fp32 backward rows of 16385-32768. Measured on the
#: H200, 2026-12-01 (benchmarks/ab_softmax_split_rows.py, results_2026-12-01/session11/
#: ab_softmax_split_rows.txt, GPU time, split against the kernels these rows took before): fp32 forward
#: 512x65536 105.1 -> 89.7 us, 256x131072 115.7 -> 97.1, 64x65536 32.2 -> 18.3; backward 512x65536
#: 149.4 -> 122.5, 256x131072 159.2 -> 136.7, 1024x32768 126.3 -> 118.2, 64x65536 25.4 -> 24.5. Not used:
#: bf16/fp16 (backward 0.79-0.91x of the looped kernel's speed there, at 2 programs per SM; the forward
#: 55-57% of copy at every width, no better than the looped kernel: see BENCHMARKS.md, "Wide softmax rows
#: split over several programs") and fp32 rows up to 16384, or forward rows up to 32768 (one pass is faster).
SPLIT_ROWS = True
SPLIT_ROWS_CHUNK_BYTES = 16384
SPLIT_ROWS_PER_THREAD = 32


# ----------------------------------------------------------------------------------------------------------
# support check
# ----------------------------------------------------------------------------------------------------------
def unsupported(x: Tensor, dim: int | None, dtype: torch.dtype | None = None) -> str | None:
    """Why ``torch.softmax(x, dim, dtype=dtype)`` cannot run on Triton, or None when it can.

    Reasons are short and stable: ``"dim is None"`` (torch's implicit-dim legacy path always falls back),
    ``"dim out of range"`` (torch raises the error), dtype reasons for x or for ``dtype``
    (e.g. ``"dtype torch.float64 is not supported"``), device reasons, ``"autocast is enabled"``,
    ``"layout torch.sparse_coo is not supported"`` and sizes where torch is faster
    (:mod:`tritonpatch.ops.size_policy`).
    """
    if dim is None:
        return "dim is None"
    if not isinstance(x, Tensor):
        return "input is not a tensor"
    if x.layout != torch.strided:
        return f"layout {x.layout} is not supported"
    reason = device_reason(x) or dtype_reason(x)
    if reason:
        return reason
    if dtype is not None and dtype not in FLOAT_DTYPES:
        return f"dtype {dtype} is not supported"
    nd = max(x.dim(), 1)
    if not isinstance(dim, int) or not -nd <= dim < nd:
        return "dim out of range"
    reason = autocast_reason(x)
    if reason:
        return reason
    if size_policy.torch_is_faster("softmax", x.numel() * x.element_size(), records_grad(x)):
        return size_policy.REASON
    return None


# ----------------------------------------------------------------------------------------------------------
# layout planning
# ----------------------------------------------------------------------------------------------------------
def _merged_stride(sizes: tuple[int, ...], strides: tuple[int, ...]) -> int | None:
    """Stride s with element i (row-major over ``sizes``) at i*s, or None if the dims do not merge."""
    s = None
    expect = 0
    for n, st in zip(reversed(sizes), reversed(strides)):
        if n == 1:
            continue
        if s is None:
            s = st
        elif st != expect:
            return None
        expect = st * n
    return 0 if s is None else s


def _split(shape: tuple[int, ...], strides: tuple[int, ...], d: int):
    """(outer, R, inner, s_outer, s_r, s_inner), or None when outer or inner dims do not merge."""
    so = _merged_stride(shape[:d], strides[:d])
    si = _merged_stride(shape[d + 1:], strides[d + 1:])
    if so is None or si is None:
        return None
    return math.prod(shape[:d]), shape[d], math.prod(shape[d + 1:]), so, strides[d], si


@functools.lru_cache(maxsize=4096)
def _rows_config(n_cols: int, n_rows: int, elt: int, sms: int, consts: tuple) -> tuple[bool, int, int, int]:
    """(looped, ROWS, BLOCK_N, num_warps) for the row kernels. Cached per (width, row-count, dtype)."""
    max_single, rows_tile, loop_bytes = consts
    block_n = next_power_of_2(n_cols)
    if block_n > max_single:
        block = min(block_n, next_power_of_2(max(1, loop_bytes // elt)))
        return True, 1, block, 16 if block >= 4096 else (8 if block >= 1024 else 4)
    rows = max(1, rows_tile // block_n)
    rows = min(rows, next_power_of_2(n_rows))
    # keep the GPU busy: at least ~2 programs per SM when there are enough rows
    while rows > 1 and -(-n_rows // rows) < 2 * sms:
        rows //= 2
    num_warps = min(32, max(4, rows * block_n // 512))
    return False, rows, block_n, num_warps


@functools.lru_cache(maxsize=4096)
def _strided_config(R: int, P: int, elt: int, consts: tuple) -> tuple[bool, int, int, int]:
    """(looped, BLOCK_R, BLOCK_P, num_warps) for the strided kernels. ``consts``: (largest one-pass tile,
    target tile, fp32 elements per thread, bytes per chunk of the looped kernel)."""
    single_tile, tile, per_thread, loop_bytes = consts
    p2 = next_power_of_2(P)
    p_min = min(p2, 32)  # >= 32 columns: >= 64 contiguous bytes of each row of P per load in 16 bits
    r2 = next_power_of_2(R)
    if r2 * p_min <= single_tile:
        block_p = min(p2, max(p_min, tile // r2), max(p_min, single_tile // r2))
        return False, r2, block_p, clamp(r2 * block_p // (32 * per_thread), 4, 32)
    block_p = min(p2, max(p_min, 64))
    block_r = max(1, next_power_of_2(max(1, loop_bytes // elt)) // block_p)
    return True, block_r, block_p, min(16, max(4, block_r * block_p // 512))


# ----------------------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------------------
class K:
    """The softmax kernels, launched through :class:`FastKernel` (same call syntax)."""

    softmax_fwd_rows_kernel = FastKernel(_k.softmax_fwd_rows_kernel)
    softmax_fwd_rows_looped_kernel = FastKernel(_k.softmax_fwd_rows_looped_kernel)
    softmax_fwd_rows_split_kernel = FastKernel(_k.softmax_fwd_rows_split_kernel)
    softmax_fwd_strided_kernel = FastKernel(_k.softmax_fwd_strided_kernel)
    softmax_fwd_strided_stats_kernel = FastKernel(_k.softmax_fwd_strided_stats_kernel)
    softmax_fwd_strided_apply_kernel = FastKernel(_k.softmax_fwd_strided_apply_kernel)
    softmax_bwd_rows_kernel = FastKernel(_k.softmax_bwd_rows_kernel)
    softmax_bwd_rows_looped_kernel = FastKernel(_k.softmax_bwd_rows_looped_kernel)
    softmax_bwd_rows_split_kernel = FastKernel(_k.softmax_bwd_rows_split_kernel)
    softmax_bwd_strided_kernel = FastKernel(_k.softmax_bwd_strided_kernel)

def _heuristics() -> tuple[int, ...]:
    """The forward's launch heuristics (module constants, read per call)."""
    return (MAX_SINGLE_N, ROWS_TILE, LOOP_BLOCK_BYTES, STRIDED_SINGLE_TILE, STRIDED_TILE, STRIDED_PER_THREAD,
            SPLIT_BLOCK_R, SPLIT_BLOCK_P, SPLIT_WARPS, SPLIT_MAX_CHUNKS,
            (SPLIT_ROWS, SPLIT_ROWS_CHUNK_BYTES, SPLIT_ROWS_PER_THREAD), LOOP_L2_HINTS)


class _SplitLaunch:
    """The split-R strided forward (see :data:`SPLIT_BLOCK_R`): fp32 partials (G, chunks, P) for max and sum,
    then the stats and apply kernels; called as ``launch(x, y)`` like a :class:`BoundLaunch`."""

    __slots__ = ("stats", "apply", "partials")

    def __init__(self, stats: BoundLaunch, apply: BoundLaunch, partials: tuple[int, int, int]) -> None:
        self.stats, self.apply, self.partials = stats, apply, partials

    def __call__(self, x: Tensor, y: Tensor) -> None:
        m = new_output(self.partials, torch.float32, x.device)
        s = new_output(self.partials, torch.float32, x.device)
        self.stats(x, y, m, s)
        self.apply(x, y, m, s)


class _RowsSplitLaunch:
    """Rows split over K co-resident programs (see :data:`SPLIT_ROWS`), called like the
    :class:`BoundLaunch` it replaces (``launch(x, y)`` / ``launch(y, dy, dx)``). Each call allocates its
    own zeroed scratch (the barrier words and the partials), so concurrent calls on other streams, and
    CUDA graphs, never share barrier state. Should the driver refuse the cooperative launch, the call and
    every later one of this plan run ``fallback`` (the kernel these rows take unsplit: looped, or one
    pass), logged once."""

    __slots__ = ("main", "words", "fallback")

    def __init__(self, main: BoundLaunch, words: int, fallback: BoundLaunch) -> None:
        self.main, self.words, self.fallback = main, words, fallback

    def __call__(self, *tensors: Tensor) -> None:
        main = self.main
        if main is not None:
            scratch = torch.zeros(self.words, dtype=torch.int32, device=tensors[0].device)
            try:
                main(*tensors, scratch)
                return
            except RuntimeError as e:  # e.g. a grid the driver cannot make co-resident
                if isinstance(e, KERNEL_ERRORS):
                    raise
                self.main = None
                logging.getLogger("tritonpatch").warning(
                    "softmax: rows split over several programs cannot be launched here (%s: %s); the unsplit "
                    "kernel runs instead", type(e).__name__, e)
        self.fallback(*tensors)


def _rows_split(kernel: FastKernel, tensor_dtypes: tuple, scalars: tuple, n_rows: int, n_cols: int, elt: int,
                flags: dict, dev: int | None, sms: int, consts: tuple, parts: int, fallback: BoundLaunch):
    """A :class:`_RowsSplitLaunch` of ``kernel`` for n_rows rows of n_cols (``scalars``: the launch's
    scalars before ``n_tiles``), or ``fallback`` where the rows are not split: the split off, not fp32
    (``elt``, the widest tensor read, is not 4 bytes: measured slower, see :data:`SPLIT_ROWS`), too many
    chunks for the programs that fit on the GPU at once, or under the interpreter (which runs programs one
    after another) more than one chunk per row. ``sms``: the device's SM count (:func:`num_sms`); ``parts``:
    fp32 partials per program (forward 2, backward 1)."""
    on, chunk_bytes, per_thread = consts
    chunk = max(1, chunk_bytes // elt)
    chunks = cdiv(n_cols, chunk)
    if not on or elt != 4 or (dev is None and chunks > 1):
        return fallback
    warps = clamp(chunk // (32 * per_thread), 1, 32)
    kp = next_power_of_2(chunks)
    constexprs = dict(K=chunks, KP=kp, CHUNK=chunk, **flags)
    tiles = n_rows * chunks
    if dev is None:  # interpreter: a few programs, one chunk per row
        per_sm = 2
    else:
        per_sm = programs_per_sm(kernel, dev, (*tensor_dtypes, torch.int32, *scalars, tiles), warps, constexprs)
    grid = min(tiles, per_sm * sms // chunks * chunks)
    if grid < chunks:
        return fallback
    main = BoundLaunch(kernel, (grid,), (*scalars, tiles), constexprs, warps, device=dev, cooperative=True)
    return _RowsSplitLaunch(main, 2 * (grid // chunks) + 2 * parts * grid, fallback)


@functools.lru_cache(maxsize=4096)
def _fwd_plan(shape: tuple[int, ...], strides: tuple[int, ...], d: int, x_dtype: torch.dtype,
              out_dtype: torch.dtype, device: torch.device, consts: tuple):
    """The forward launch for this shape/layout/dtypes, taking (x, y), or None when the leading/trailing
    dims do not merge (the caller makes x contiguous). Cached: the Python planning and the launch's
    argument key are paid once per distinct call shape, not per call. ``consts`` is
    :func:`_heuristics` (part of the key, so tests that change the module constants take effect)."""
    (max_single, rows_tile, loop_bytes, strided_single, strided_tile, per_thread, split_r, split_p, split_warps,
     split_max, split_rows, l2_hints) = consts
    plan = _split(shape, strides, d)
    if plan is None:
        return None
    outer, R, inner, so, sr, si = plan
    rnd = out_dtype != x_dtype and out_dtype != torch.float32
    elt = x_dtype.itemsize
    soft = interpreting()
    dev = device.index if device.type == "cuda" else None
    if inner == 1 and (sr == 1 or R == 1):
        sms = num_sms(-1 if dev is None else dev)
        looped, rows, block_n, nw = _rows_config(R, outer, elt, sms, (max_single, rows_tile, loop_bytes))
        if looped:
            flags = dict(ROUND=rnd, SOFT_BF16=soft)
            launch = BoundLaunch(K.softmax_fwd_rows_looped_kernel, (outer,), (R, so, R),
                                 dict(BLOCK_N=block_n, **flags, L2_HINTS=l2_hints and elt < 4), nw, device=dev)
            return _rows_split(K.softmax_fwd_rows_split_kernel, (x_dtype, out_dtype), (R, so, R), outer, R, elt,
                               flags, dev, sms, split_rows, 2, launch)
        return BoundLaunch(K.softmax_fwd_rows_kernel, (cdiv(outer, rows),), (outer, R, so, R),
                           dict(ROWS=rows, BLOCK_N=block_n, ROUND=rnd, SOFT_BF16=soft), nw, device=dev)
    if inner == 1:  # reduced axis strided, rows (outer) are the parallel axis: e.g. a transposed 2-D x
        G, P, sx = 1, outer, (0, sr, so)
        sy = (0, 1, R)
    else:
        G, P, sx = outer, inner, (so, sr, si)
        sy = (R * inner, inner, 1)
    looped, block_r, block_p, nw = _strided_config(R, P, elt, (strided_single, strided_tile, per_thread,
                                                               loop_bytes))
    units = dict(X_R_UNIT=sx[1] == 1, X_P_UNIT=sx[2] == 1)
    chunks = cdiv(R, split_r)
    if looped and chunks <= split_max:
        block_p = min(next_power_of_2(P), split_p)
        n_pb = cdiv(P, block_p)
        grid, args = (G * n_pb, chunks), (R, P, n_pb, chunks)
        flags = dict(BLOCK_R=split_r, BLOCK_P=block_p, **units, ROUND=rnd, SOFT_BF16=soft)
        return _SplitLaunch(
            BoundLaunch(K.softmax_fwd_strided_stats_kernel, grid, (*args, *sx), flags, split_warps, device=dev),
            BoundLaunch(K.softmax_fwd_strided_apply_kernel, grid, (*args, *sx, *sy),
                        dict(flags, BLOCK_C=max(2, next_power_of_2(chunks)), Y_R_UNIT=sy[1] == 1,
                             Y_P_UNIT=sy[2] == 1), split_warps, device=dev),
            (G, chunks, P))
    n_pb = cdiv(P, block_p)
    return BoundLaunch(K.softmax_fwd_strided_kernel, (G * n_pb,), (R, P, n_pb, *sx, *sy),
                       dict(BLOCK_R=block_r, BLOCK_P=block_p, LOOPED=looped, **units, Y_R_UNIT=sy[1] == 1,
                            Y_P_UNIT=sy[2] == 1, ROUND=rnd, SOFT_BF16=soft), nw, device=dev)


@launcher
def _forward(x: Tensor, d: int, out_dtype: torch.dtype) -> Tensor:
    """y = softmax(x.to(out_dtype), d) as a new contiguous tensor; x any float dtype/layout, d >= 0."""
    y = new_output_like(x, out_dtype)
    if x.numel() == 0:
        return y
    y2 = y
    if x.dim() == 0:
        x, y2, d = x.reshape(1), y.view(1), 0
    consts = _heuristics()
    plan = _fwd_plan(x.shape, x.stride(), d, x.dtype, out_dtype, x.device, consts)
    if plan is None:  # odd layout: leading/trailing dims that do not merge into one axis
        x = x.contiguous()
        plan = _fwd_plan(x.shape, x.stride(), d, x.dtype, out_dtype, x.device, consts)
    plan(x, y2)
    return y


def _bwd_heuristics() -> tuple:
    """The backward's launch heuristics (module constants, read per call)."""
    return (MAX_SINGLE_N_BWD, ROWS_TILE_BWD, LOOP_BLOCK_BYTES, STRIDED_SINGLE_TILE, STRIDED_TILE_BWD,
            STRIDED_PER_THREAD_BWD, LOOP_BLOCK_BYTES_BWD, LOOP_WARPS_BWD,
            (SPLIT_ROWS, SPLIT_ROWS_CHUNK_BYTES, SPLIT_ROWS_PER_THREAD), LOOP_L2_HINTS_BWD)


@functools.lru_cache(maxsize=4096)
def _bwd_plan(shape: tuple[int, ...], dy_strides: tuple[int, ...], d: int, y_dtype: torch.dtype,
              dy_dtype: torch.dtype, dx_dtype: torch.dtype, device: torch.device, consts: tuple):
    """The backward launch for this shape, dy layout and dtypes (y and dx contiguous), taking (y, dy, dx),
    or None when dy's leading/trailing dims do not merge (the caller makes dy contiguous). Cached like
    :func:`_fwd_plan`; ``consts`` is :func:`_bwd_heuristics`."""
    (max_single, rows_tile, loop_bytes, strided_single, strided_tile, per_thread, rows_loop_bytes,
     rows_loop_warps, split_rows, l2_hints) = consts
    plan = _split(shape, dy_strides, d)
    if plan is None:
        return None
    outer, R, inner, dso, dsr, dsi = plan
    elt = max(y_dtype.itemsize, dy_dtype.itemsize)
    soft = interpreting()
    dev = device.index if device.type == "cuda" else None
    if inner == 1:
        sms = num_sms(-1 if dev is None else dev)
        looped, rows, block_n, nw = _rows_config(R, outer, elt, sms, (max_single, rows_tile, rows_loop_bytes))
        unit = dsr == 1 or R == 1
        flags = dict(DY_COL_UNIT=unit, SOFT_BF16=soft)
        if looped:
            launch = BoundLaunch(K.softmax_bwd_rows_looped_kernel, (outer,), (R, R, dso, dsr),
                                 dict(BLOCK_N=block_n, **flags, L2_HINTS=l2_hints and elt < 4), rows_loop_warps,
                                 device=dev)
        else:
            launch = BoundLaunch(K.softmax_bwd_rows_kernel, (cdiv(outer, rows),), (outer, R, R, dso, dsr),
                                 dict(ROWS=rows, BLOCK_N=block_n, **flags), nw, device=dev)
        if looped or 2 * block_n > max_single:  # the widest one-pass rows gain too (SPLIT_ROWS)
            return _rows_split(K.softmax_bwd_rows_split_kernel, (y_dtype, dy_dtype, dx_dtype), (R, R, dso, dsr),
                               outer, R, elt, flags, dev, sms, split_rows, 1, launch)
        return launch
    looped, block_r, block_p, nw = _strided_config(R, inner, elt, (strided_single, strided_tile, per_thread,
                                                                   loop_bytes))
    n_pb = cdiv(inner, block_p)
    return BoundLaunch(K.softmax_bwd_strided_kernel, (outer * n_pb,),
                       (R, inner, n_pb, R * inner, inner, 1, dso, dsr, dsi),
                       dict(BLOCK_R=block_r, BLOCK_P=block_p, LOOPED=looped, O_R_UNIT=False, O_P_UNIT=True,
                            D_R_UNIT=dsr == 1, D_P_UNIT=dsi == 1, SOFT_BF16=soft), nw, device=dev)


def _backward(y: Tensor, dy: Tensor, d: int, dx_dtype: torch.dtype) -> Tensor:
    """dx = y * (dy - sum(dy * y, d)) in ``dx_dtype``, contiguous; y contiguous (the forward's output), dy
    any layout. On Triton; where the kernel cannot be built or loaded on this GPU (:data:`KERNEL_ERRORS`),
    torch's formula (:func:`_backward_torch`)."""
    try:
        return _backward_triton(y, dy, d, dx_dtype)
    except KERNEL_ERRORS as e:
        kernel_failed("softmax backward", e)
        return _backward_torch(y, dy, d, dx_dtype).contiguous()


def _backward_torch(y: Tensor, dy: Tensor, d: int, dx_dtype: torch.dtype) -> Tensor:
    """:func:`_backward` by torch's own backward op (differentiable: a double backward flows through y)."""
    return torch.ops.aten._softmax_backward_data(dy, y, d, y.dtype).to(dx_dtype)


@launcher
def _backward_triton(y: Tensor, dy: Tensor, d: int, dx_dtype: torch.dtype) -> Tensor:
    """:func:`_backward`'s launch."""
    dx = new_output_like(y, dx_dtype)
    if y.numel() == 0:
        return dx
    dx2 = dx
    if y.dim() == 0:
        y, dy, dx2, d = y.reshape(1), dy.reshape(1), dx.view(1), 0
    consts = _bwd_heuristics()
    plan = _bwd_plan(y.shape, dy.stride(), d, y.dtype, dy.dtype, dx_dtype, y.device, consts)
    if plan is None:
        dy = dy.contiguous()
        plan = _bwd_plan(y.shape, dy.stride(), d, y.dtype, dy.dtype, dx_dtype, y.device, consts)
    plan(y, dy, dx2)
    return dx


class _SoftmaxFunction(torch.autograd.Function):
    """Autograd wrapper: saves only the output; backward is one Triton pass writing dx in x's dtype."""

    @staticmethod
    def forward(ctx, x: Tensor, d: int, out_dtype: torch.dtype) -> Tensor:  # type: ignore[override]
        y = _forward(x, d, out_dtype)
        ctx.save_for_backward(y)
        ctx.d = d
        ctx.x_dtype = x.dtype
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True: torch's backward formula, differentiable again (y is this node's output,
            # so a double backward flows through it)
            return _backward_torch(y, dy, ctx.d, ctx.x_dtype), None, None
        return _backward(y, dy, ctx.d, ctx.x_dtype), None, None


def softmax(x: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    """``torch.softmax(x, dim, dtype=dtype)`` on Triton.

    Args:
        x: tensor of any shape (0-d and empty included), fp32/fp16/bf16, any strides.
        dim: the dim to normalise over, negative allowed.
        dtype: if given, x is cast to it first (fused into the kernel) and the output has this dtype.

    Returns:
        A contiguous tensor of ``x.shape`` and dtype ``dtype or x.dtype`` with
        ``y = exp(x - max(x, dim)) / sum(exp(x - max(x, dim)), dim)``; computed in fp32. Differentiable
        once (the backward computes ``dx = y * (dy - sum(dy * y, dim))`` from the saved y, in x's dtype).

    Callers check :func:`unsupported` first; this function assumes the call is supported.
    """
    d = dim + max(x.dim(), 1) if dim < 0 else dim
    out_dtype = x.dtype if dtype is None else dtype
    if records_grad(x):
        return _SoftmaxFunction.apply(x, d, out_dtype)
    return _forward(x, d, out_dtype)
