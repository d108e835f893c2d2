"""Triton kernels for Linear+ReLU: a fused forward GEMM and a masked GEMM for the backward.

Forward, one program per (BLOCK_M x BLOCK_N) tile of the output::

    y[m, n] = relu( sum_k x[m, k] * W[n, k]  +  b[n] )          x: (M, K), W: (N, K), b: (N,)

W is read as its transpose through its strides (no copy). Accumulation is fp32; the bias is added and
the ReLU applied in fp32 in the epilogue; the result is rounded once to the output dtype.

Backward (optional alternative to cuBLAS), one masked GEMM used twice::

    C[p, q] = sum_r (A[p, r] * [Y[p, r] > 0]) * B[r, q]        and optionally   s[p] = sum_r A'[p, r]

    grad_x = (dy * [y > 0]) @ W      : A = dy (M, N),   Y = y (M, N),   B = W (N, K)
    grad_W = (dy * [y > 0])^T @ x    : A = dy^T (N, M), Y = y^T (N, M), B = x (M, K),  s = grad_b

The default backward keeps cuBLAS for both GEMMs and fuses the rest into one pass over dy and y
(``relu_grad_kernel``): it writes g = dy * [y > 0] for the GEMMs and, in the same pass, fp32 column sums
of g over each program's rows, which a second small kernel (``tritonpatch.kernels.column_sums``) adds up
in a fixed order into grad_b. torch's own backward reads g once more for grad_b.

All operands are taken through arbitrary strides. Programs are ordered in groups of GROUP_M row-tiles so
that neighbouring programs share operand tiles in L2. Tile offsets are int64 (no overflow for big
tensors or big strides).

Under the interpreter (``TRITON_INTERPRET=1``) a single small config is used (autotuning through the
interpreter would take minutes), and ``UPCAST`` converts half tiles to fp32 before ``tl.dot`` (the
interpreter's bf16 dot is wrong; fp16 and bf16 products are exact in fp32, as on tensor cores).
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

# Read here rather than from ops.common so that kernels/ depends on nothing above it; same rule.
_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _cfg(bm: int, bn: int, bk: int, group: int, stages: int, warps: int) -> triton.Config:
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group},
                         num_stages=stages, num_warps=warps)


if _INTERPRETING:
    FWD_CONFIGS = [_cfg(32, 32, 32, 4, 1, 4)]
    BWD_CONFIGS = [_cfg(32, 32, 32, 4, 1, 4)]
else:
    # Hopper (sm_90) friendly: wgmma wants BLOCK_M a multiple of 64 per warpgroup; big tiles for big M,
    # narrow ones for small M (few output tiles would leave most of the 132 SMs idle).
    FWD_CONFIGS = [
        _cfg(128, 256, 64, 8, 3, 8),
        _cfg(256, 128, 64, 8, 3, 8),
        _cfg(128, 256, 64, 8, 4, 8),
        _cfg(128, 128, 64, 8, 4, 4),
        _cfg(128, 128, 64, 8, 4, 8),
        _cfg(128, 64, 64, 8, 4, 4),
        _cfg(64, 128, 64, 8, 4, 4),   # small M
        _cfg(64, 64, 128, 8, 4, 4),   # small M, long K
    ]
    BWD_CONFIGS = [
        _cfg(128, 256, 64, 8, 3, 8),
        _cfg(128, 128, 64, 8, 4, 8),
        _cfg(128, 128, 64, 8, 4, 4),
        _cfg(64, 128, 64, 8, 4, 4),
        _cfg(128, 64, 64, 8, 4, 4),
    ]


#: Shared memory one H100 block may use (227 KB), less a margin for the epilogue and barriers.
_SMEM_BUDGET = 220 * 1024


#: Problems smaller than this (M*N*K) are not autotuned: one small config (tests, tiny layers that the
#: size policy usually sends to torch anyway). Keeps GPU test runs from compiling every config.
_TUNE_MIN_VOLUME = 1 << 24


def _prune(configs, named_args, *, tiles_a: int, first_ptr: str, dims: tuple[str, str, str]):
    """Drop configs whose pipelined operand tiles do not fit in shared memory (fp32 doubles them);
    for tiny problems keep only the smallest tile."""
    elem = named_args[first_ptr].element_size()

    def per_stage(c):
        k = c.kwargs
        return (tiles_a * k["BLOCK_M"] + k["BLOCK_N"]) * k["BLOCK_K"] * elem

    m, n, k = (named_args[d] for d in dims)
    if m * n * k < _TUNE_MIN_VOLUME:
        configs = [min(configs, key=per_stage)]
    fit = [c for c in configs if c.num_stages * per_stage(c) <= _SMEM_BUDGET]
    if fit:
        return fit
    c = min(configs, key=per_stage)  # nothing fits: fewer stages of the smallest tile
    stages = max(1, min(c.num_stages, _SMEM_BUDGET // per_stage(c)))
    return [triton.Config(dict(c.kwargs), num_warps=c.num_warps, num_stages=stages)]


def _prune_fwd(configs, named_args, **kwargs):
    return _prune(configs, named_args, tiles_a=1, first_ptr="x_ptr", dims=("M", "N", "K"))


def _prune_bwd(configs, named_args, **kwargs):
    return _prune(configs, named_args, tiles_a=2, first_ptr="a_ptr", dims=("P", "Q", "R"))  # A and mask Y


@triton.jit
def _grouped_tile(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) for program ``pid`` with GROUP_M row-tiles walked column by column (L2 reuse)."""
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _tile_offsets(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  GROUP_M: tl.constexpr):
    """The (BLOCK_M, BLOCK_N) output tile of program ``pid`` in an (M, N) result: (pid_n, offs_m, offs_n,
    offs_k, load_m, load_n), all int64. Rows/columns past the edge re-read valid ones (load_m, load_n
    wrap) so the main loads need no M/N mask; those results are never stored. (No contiguity hints: a
    wrapped edge tile is not contiguous, and M or N is the unit-stride axis for transposed operands.)"""
    pid_m, pid_n = _grouped_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
    return pid_n, offs_m, offs_n, offs_k, offs_m % M, offs_n % N


@triton.jit
def _to_output(acc, out_ptr, UPCAST: tl.constexpr):
    """Cast the fp32 tile to the element dtype of ``out_ptr``, rounding to nearest even.

    The interpreter's fp32 -> bf16 cast truncates (2x the rounding error); there (UPCAST), round the
    fp32 bits to bf16 precision first so the cast that follows is exact. Compiled kernels round already.
    """
    if UPCAST:
        if out_ptr.dtype.element_ty == tl.bfloat16:
            bits = acc.to(tl.uint32, bitcast=True)
            bits = (bits + (((bits >> 16) & 1) + 0x7FFF)) & 0xFFFF0000
            acc = bits.to(tl.float32, bitcast=True)
    return acc.to(out_ptr.dtype.element_ty)


@triton.autotune(configs=FWD_CONFIGS, key=["M_BUCKET", "N", "K"],
                 prune_configs_by={"early_config_prune": _prune_fwd})
@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def linear_relu_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, N, K,
    stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_b,
    stride_ym, stride_yn,
    M_BUCKET,  # autotune key only: M rounded up to a power of two (retune per size class, not per M)
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """y = relu(x @ W^T + b) for one (BLOCK_M, BLOCK_N) tile; y is (M, N) in y's dtype."""
    _, offs_m, offs_n, offs_k, load_m, load_n = _tile_offsets(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, BLOCK_K,
                                                              GROUP_M)
    x_ptrs = x_ptr + load_m[:, None] * stride_xm + offs_k[None, :] * stride_xk   # (BM, BK)
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + load_n[None, :] * stride_wn   # (BK, BN) = W^T tile
    step_x = BLOCK_K * tl.cast(stride_xk, tl.int64)
    step_w = BLOCK_K * tl.cast(stride_wk, tl.int64)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
        else:
            k_left = K - k * BLOCK_K
            a = tl.load(x_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        x_ptrs += step_x
        w_ptrs += step_w

    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n * stride_b, mask=offs_n < N, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    # relu as torch has it: negatives -> 0, NaN stays NaN.
    acc = tl.where(acc < 0.0, 0.0, acc)

    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, _to_output(acc, y_ptr, UPCAST), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.autotune(configs=BWD_CONFIGS, key=["P_BUCKET", "Q", "R_BUCKET", "HAS_SUM"],
                 prune_configs_by={"early_config_prune": _prune_bwd})
@triton.heuristics({"EVEN_R": lambda args: args["R"] % args["BLOCK_K"] == 0})
@triton.jit
def masked_matmul_kernel(
    a_ptr, y_ptr, b_ptr, c_ptr, s_ptr,
    P, Q, R,
    stride_ap, stride_ar,
    stride_yp, stride_yr,
    stride_br, stride_bq,
    stride_cp, stride_cq,
    P_BUCKET, R_BUCKET,  # autotune keys only (powers of two)
    HAS_SUM: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    EVEN_R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """C = (A * [Y > 0]) @ B for one (BLOCK_M, BLOCK_N) tile of C (P, Q); reduction over R.

    With HAS_SUM the programs of the first column of tiles also write s[p] = sum_r (A * [Y > 0])[p, r]
    (the bias gradient when A = dy^T). C and s are in C's / s's dtype; accumulation is fp32.
    """
    pid_n, offs_m, offs_n, offs_k, load_m, load_n = _tile_offsets(tl.program_id(0), P, Q, BLOCK_M, BLOCK_N,
                                                                   BLOCK_K, GROUP_M)
    a_ptrs = a_ptr + load_m[:, None] * stride_ap + offs_k[None, :] * stride_ar   # (BM, BK)
    y_ptrs = y_ptr + load_m[:, None] * stride_yp + offs_k[None, :] * stride_yr   # (BM, BK)
    b_ptrs = b_ptr + offs_k[:, None] * stride_br + load_n[None, :] * stride_bq   # (BK, BN)
    step_a = BLOCK_K * tl.cast(stride_ar, tl.int64)
    step_y = BLOCK_K * tl.cast(stride_yr, tl.int64)
    step_b = BLOCK_K * tl.cast(stride_br, tl.int64)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if HAS_SUM:
        rowsum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k in range(0, tl.cdiv(R, BLOCK_K)):
        if EVEN_R:
            a = tl.load(a_ptrs)
            yv = tl.load(y_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = R - k * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            yv = tl.load(y_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        a = tl.where(yv > 0, a, 0.0).to(b.dtype)
        if HAS_SUM:
            rowsum += tl.sum(a.to(tl.float32), axis=1)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += step_a
        y_ptrs += step_y
        b_ptrs += step_b

    c_ptrs = c_ptr + offs_m[:, None] * stride_cp + offs_n[None, :] * stride_cq
    tl.store(c_ptrs, _to_output(acc, c_ptr, UPCAST), mask=(offs_m[:, None] < P) & (offs_n[None, :] < Q))
    if HAS_SUM:
        if pid_n == 0:
            tl.store(s_ptr + offs_m, _to_output(rowsum, s_ptr, UPCAST), mask=offs_m < P)


@triton.jit
def relu_grad_kernel(
    dy_ptr, y_ptr, g_ptr, part_ptr,
    M, N, stride_dy, stride_y, ROWS_PER_PROG,
    EVEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """g = dy * [y > 0] for (M, N) dy and y with unit column stride (row strides given), g contiguous (M, N).

    Grid (G, cdiv(N, BLOCK_N)): program (i, j) owns rows [i * ROWS_PER_PROG, (i + 1) * ROWS_PER_PROG)
    (a multiple of BLOCK_M) of column block j, and writes part[i, c] = sum of g[r, c] over its rows, in
    fp32 (part is (G, N) fp32). EVEN: M % ROWS_PER_PROG == 0 and N % BLOCK_N == 0 (no masks).
    As torch's ``threshold_backward(dy, y, 0)``: g is 0 where y <= 0 and dy elsewhere (a NaN y passes dy).
    """
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    row0 = pid * ROWS_PER_PROG
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for r in range(0, ROWS_PER_PROG, BLOCK_M):
        rows = row0 + r + tl.arange(0, BLOCK_M)
        dy_ptrs = dy_ptr + rows[:, None] * stride_dy + cols[None, :]
        y_ptrs = y_ptr + rows[:, None] * stride_y + cols[None, :]
        g_ptrs = g_ptr + rows[:, None] * N + cols[None, :]
        if EVEN:
            dy = tl.load(dy_ptrs)
            y = tl.load(y_ptrs)
        else:
            mask = (rows < M)[:, None] & col_ok[None, :]
            dy = tl.load(dy_ptrs, mask=mask, other=0.0)
            y = tl.load(y_ptrs, mask=mask, other=0.0)
        # compared and selected in fp32 (exact for every input dtype; the interpreter compares bf16 wrongly)
        g = tl.where(y.to(tl.float32) <= 0, 0.0, dy.to(tl.float32))
        if EVEN:
            tl.store(g_ptrs, g.to(g_ptr.dtype.element_ty))
        else:
            tl.store(g_ptrs, g.to(g_ptr.dtype.element_ty), mask=mask)
        acc += g
    tl.store(part_ptr + pid * N + cols, tl.sum(acc, axis=0), mask=col_ok)
