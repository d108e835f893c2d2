"""Triton kernels for LayerNorm over the last dimension of a row-major (M, N) view.

Math (per row x of length N, statistics always in fp32):

    mean = sum(x) / N
    var  = sum((x - mean)^2) / N                  (biased, as torch)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    y    = xhat * w + b                           (w, b optional)

Backward, with g = w * dy (g = dy without weight):

    c1 = sum(xhat * g) / N,   c2 = sum(g) / N     (per row)
    dx = rstd * (g - (xhat * c1 + c2))
    dw = sum over rows of dy * xhat,   db = sum over rows of dy

dw/db are reduced deterministically: every program of the backward kernel owns a fixed set of rows and
writes ONE fp32 partial row (its sum over those rows) into a (programs, N) buffer; a second kernel sums
that buffer over its first axis in a fixed order. No atomics, so repeated runs are bitwise identical.

Layout: row ``r`` of an input starts at ``ptr + r * stride_row`` and its elements are contiguous
(column stride 1). Row indices are int64 so ``r * stride_row`` cannot overflow int32.

Kernels (the launcher in ``tritonpatch/ops/layer_norm.py`` picks one by width):
  layer_norm_fwd_kernel          whole rows in registers, ROWS rows per program (2-D tile)
  layer_norm_fwd_looped_kernel   one row per program, walked twice in BLOCK_N chunks (wide rows), but
                                 for its first HEAD elements, held in registers and read once
  layer_norm_bwd_fused_kernel    whole rows (N <= 8192): dx and dw/db partials, persistent grid, each
                                 program a contiguous chunk of rows, next tile prefetched
  layer_norm_bwd_row_stats_kernel  c1, c2 per row, chunked (only for wide rows)
  layer_norm_bwd_kernel          wide rows: dx and dw/db partials per column block (c1/c2 precomputed)
The partials are summed by ``tritonpatch.kernels.column_sums`` (shared with the Linear+ReLU backward).
"""
import triton
import triton.language as tl

from tritonpatch.kernels.cache_hints import load_hinted


@triton.jit
def _load_f32(ptrs, mask, EVEN: tl.constexpr):
    """``ptrs`` loaded as fp32: a full unmasked vector when EVEN, else masked (0 where ``mask`` is off)."""
    if EVEN:
        v = tl.load(ptrs)
    else:
        v = tl.load(ptrs, mask=mask, other=0.0)
    return v.to(tl.float32)


@triton.jit
def _store(ptrs, value, mask, EVEN: tl.constexpr):
    """``value`` stored at ``ptrs``: unmasked when EVEN, else where ``mask`` is on."""
    if EVEN:
        tl.store(ptrs, value)
    else:
        tl.store(ptrs, value, mask=mask)


@triton.jit
def layer_norm_fwd_kernel(
    X, Y, W, B, Mean, Rstd,
    stride_x_row, stride_y_row,
    M, N, eps,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, STORE_STATS: tl.constexpr,
    BLOCK_N: tl.constexpr, ROWS: tl.constexpr, EVEN: tl.constexpr,
):
    """Program p normalizes rows [p*ROWS, p*ROWS + ROWS) held whole in a (ROWS, BLOCK_N) tile, N <= BLOCK_N.

    EVEN (N == BLOCK_N and ROWS divides M): no masks, so every load and store is a full vector."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS)          # (ROWS,) int64 row indices
    cols = tl.arange(0, BLOCK_N)                    # (BLOCK_N,) column indices
    row_ok = rows < M
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]

    # x[r, c] lives at X + r * stride_x_row + c
    x = _load_f32(X + rows[:, None] * stride_x_row + cols[None, :], mask, EVEN)

    # Two-pass statistics on the registers: mean, then the centred second moment.
    mean = tl.sum(x, axis=1) / N                    # (ROWS,)
    xc = x - mean[:, None]
    if not EVEN:
        xc = tl.where(mask, xc, 0.0)                # padding stays 0 so it adds nothing below
    var = tl.sum(xc * xc, axis=1) / N
    rstd = 1.0 / tl.sqrt(var + eps)

    y = xc * rstd[:, None]                          # xhat
    if HAS_W:
        y = y * _load_f32(W + cols, col_ok, EVEN)[None, :]
    if HAS_B:
        y = y + _load_f32(B + cols, col_ok, EVEN)[None, :]

    _store(Y + rows[:, None] * stride_y_row + cols[None, :], y.to(Y.dtype.element_ty), mask, EVEN)
    if STORE_STATS:
        _store(Mean + rows, mean, row_ok, EVEN)
        _store(Rstd + rows, rstd, row_ok, EVEN)


@triton.jit
def layer_norm_fwd_looped_kernel(
    X, Y, W, B, Mean, Rstd,
    stride_x_row, stride_y_row,
    N, eps,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, STORE_STATS: tl.constexpr,
    BLOCK_N: tl.constexpr, L2_HINTS: tl.constexpr, HEAD: tl.constexpr,
):
    """Program p normalizes row p, any width N >= HEAD, in chunks of BLOCK_N.

    HEAD > 0: the row's first HEAD elements are loaded once and held in registers; only the rest (the
    tail) is walked twice, so a row costs N + (N - HEAD) element reads instead of 2 N.
    Pass 1 reads each chunk once and merges per-chunk (count, mean, M2) with Chan's formula, which is as
    stable as the two-pass formula:  n = na + nb,  d = mean_b - mean_a,
        mean = mean_a + d * nb / n,   M2 = M2_a + M2_b + d^2 * na * nb / n
    (the held head is the first part: its mean and M2 by the two-pass formula on the registers).
    Pass 2 re-reads the tail's chunks, last first (those are the likeliest still in L2), and writes y; then
    y of the head, from the registers.
    L2_HINTS: pass 1 loads with ``evict_last`` (keep the row in L2 for pass 2), pass 2 with ``evict_first``.
    """
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * stride_x_row
    y_row = Y + row * stride_y_row
    cols = tl.arange(0, BLOCK_N)

    if HEAD > 0:
        head = tl.arange(0, HEAD)
        x_head = tl.load(x_row + head).to(tl.float32)       # N >= HEAD: no mask
        mean = tl.sum(x_head, axis=0) / HEAD
        xc_head = x_head - mean
        m2 = tl.sum(xc_head * xc_head, axis=0)
        count = HEAD * 1.0
    else:
        mean = 0.0
        m2 = 0.0
        count = 0.0
    for start in range(HEAD, N, BLOCK_N):
        c = start + cols
        mask = c < N
        x = load_hinted(x_row + c, mask, 0.0, L2_HINTS, "evict_last").to(tl.float32)
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

    n_chunks = tl.cdiv(N - HEAD, BLOCK_N)
    for i in range(0, n_chunks):
        c = HEAD + (n_chunks - 1 - i) * BLOCK_N + cols
        mask = c < N
        x = load_hinted(x_row + c, mask, 0.0, L2_HINTS, "evict_first").to(tl.float32)
        y = (x - mean) * rstd
        if HAS_W:
            y = y * tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
        if HAS_B:
            y = y + tl.load(B + c, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + c, y.to(Y.dtype.element_ty), mask=mask)
    if HEAD > 0:
        y = (x_head - mean) * rstd
        if HAS_W:
            y = y * tl.load(W + head).to(tl.float32)
        if HAS_B:
            y = y + tl.load(B + head).to(tl.float32)
        tl.store(y_row + head, y.to(Y.dtype.element_ty))
    if STORE_STATS:
        tl.store(Mean + row, mean)
        tl.store(Rstd + row, rstd)


@triton.jit
def _dx_tile(g, xhat, rstd, c1, c2):
    """dx = (g - (xhat * c1 + c2)) * rstd for a (ROWS, BLOCK_N) tile, g = dy * w (dy without a weight);
    c1, c2 (ROWS,) are the row means of xhat * g and of g over the whole row."""
    return (g - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]


@triton.jit
def _store_partials(Part, p, N, cols, col_ok, dw_acc, db_acc, db_row0,
                    COMPUTE_DW: tl.constexpr, COMPUTE_DB: tl.constexpr):
    """Write program p's dw/db partial rows (the column sums of its fp32 accumulators) at ``cols``.

    Part is (K, G, N) fp32 with K = COMPUTE_DW + COMPUTE_DB: the dw partial of program p is row p
    (Part + p * N), the db partial row db_row0 + p (db_row0 = G when both are computed, else 0)."""
    p64 = p.to(tl.int64)
    if COMPUTE_DW:
        tl.store(Part + p64 * N + cols, tl.sum(dw_acc, axis=0), mask=col_ok)
    if COMPUTE_DB:
        tl.store(Part + (db_row0 + p64) * N + cols, tl.sum(db_acc, axis=0), mask=col_ok)


@triton.jit
def layer_norm_bwd_row_stats_kernel(
    X, DY, W, Mean, Rstd, C1, C2,
    stride_x_row, stride_dy_row,
    N,
    HAS_W: tl.constexpr, BLOCK_N: tl.constexpr, L2_HINTS: tl.constexpr,
):
    """Program p computes c1 = sum(xhat * g) / N and c2 = sum(g) / N for row M - 1 - p (g = w * dy),
    chunked. Rows are taken last first, so that the rows this kernel read last (the ones L2 still holds
    when layer_norm_bwd_kernel starts) are the first that kernel reads again. L2_HINTS: loads marked
    ``evict_last``."""
    row = (tl.num_programs(0) - 1 - tl.program_id(0)).to(tl.int64)
    x_row = X + row * stride_x_row
    dy_row = DY + row * stride_dy_row
    mean = tl.load(Mean + row)
    rstd = tl.load(Rstd + row)
    cols = tl.arange(0, BLOCK_N)
    acc1 = tl.zeros((BLOCK_N,), dtype=tl.float32)   # running xhat * g, per lane
    acc2 = tl.zeros((BLOCK_N,), dtype=tl.float32)   # running g, per lane
    for start in range(0, N, BLOCK_N):
        c = start + cols
        mask = c < N
        x = load_hinted(x_row + c, mask, 0.0, L2_HINTS, "evict_last").to(tl.float32)
        g = load_hinted(dy_row + c, mask, 0.0, L2_HINTS, "evict_last").to(tl.float32)
        if HAS_W:
            g = g * tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
        xhat = tl.where(mask, (x - mean) * rstd, 0.0)
        acc1 += xhat * g
        acc2 += g
    tl.store(C1 + row, tl.sum(acc1, axis=0) / N)
    tl.store(C2 + row, tl.sum(acc2, axis=0) / N)


@triton.jit
def layer_norm_bwd_kernel(
    X, DY, DX, W, Mean, Rstd, C1, C2, Part,
    stride_x_row, stride_dy_row, stride_dx_row,
    M, N, db_row0,
    HAS_W: tl.constexpr, FULL_ROW: tl.constexpr,
    COMPUTE_DX: tl.constexpr, COMPUTE_DW: tl.constexpr, COMPUTE_DB: tl.constexpr,
    BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
):
    """Grid (G, column blocks). Program (p, q) owns columns [q*BLOCK_N, q*BLOCK_N + BLOCK_N) and the
    row tiles p, p + G, p + 2G, ... (each tile = ROWS consecutive rows). It writes dx for its tiles and
    ONE fp32 partial row (columns of block q): dw partial = sum over its rows of dy * xhat, db partial =
    sum of dy (layout of Part as in layer_norm_bwd_fused_kernel).

    FULL_ROW (one column block covers the row, N <= BLOCK_N): c1, c2 are reduced here from the tile.
    Otherwise they come precomputed in C1, C2 (layer_norm_bwd_row_stats_kernel).
    """
    pid = tl.program_id(0)
    n_prog = tl.num_programs(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    if HAS_W:
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    db_acc = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)

    n_tiles = tl.cdiv(M, ROWS)
    for tile in range(pid, n_tiles, n_prog):
        # row indices fit int32 (M does); int64 so that rows * stride_row cannot overflow
        rows = (tile * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        row_ok = rows < M
        mask = row_ok[:, None] & col_ok[None, :]
        x = tl.load(X + rows[:, None] * stride_x_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * stride_dy_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(Mean + rows, mask=row_ok, other=0.0)
        rstd = tl.load(Rstd + rows, mask=row_ok, other=0.0)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        if COMPUTE_DX:
            g = dy * w[None, :] if HAS_W else dy
            if FULL_ROW:
                c1 = tl.sum(xhat * g, axis=1) / N
                c2 = tl.sum(g, axis=1) / N
            else:
                c1 = tl.load(C1 + rows, mask=row_ok, other=0.0)
                c2 = tl.load(C2 + rows, mask=row_ok, other=0.0)
            dx = _dx_tile(g, xhat, rstd, c1, c2)
            tl.store(DX + rows[:, None] * stride_dx_row + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if COMPUTE_DW:
            dw_acc += dy * xhat
        if COMPUTE_DB:
            db_acc += dy
    _store_partials(Part, pid, N, cols, col_ok, dw_acc, db_acc, db_row0, COMPUTE_DW, COMPUTE_DB)


@triton.jit
def layer_norm_bwd_fused_kernel(
    X, DY, DX, W, Mean, Rstd, Part,
    stride_x_row, stride_dy_row, stride_dx_row,
    M, N, rows_per_prog, db_row0,
    HAS_W: tl.constexpr,
    COMPUTE_DX: tl.constexpr, COMPUTE_DW: tl.constexpr, COMPUTE_DB: tl.constexpr,
    BLOCK_N: tl.constexpr, ROWS: tl.constexpr, PREFETCH: tl.constexpr,
):
    """Whole rows (N <= BLOCK_N). Grid (G,): program p owns the contiguous rows
    [p * rows_per_prog, min(M, (p + 1) * rows_per_prog)) (rows_per_prog a multiple of ROWS), walked
    ROWS rows at a time. Per tile: load x, dy (and the fp32 mean/rstd saved by the forward), reduce
    c1 = sum(xhat * g) / N, c2 = sum(g) / N per row, write dx, and accumulate dy * xhat and dy in fp32
    registers. At the end it writes ONE partial row per gradient (dw: Part[0, p, :], db: Part[K-1, p, :]).

    PREFETCH: the next tile's x/dy/mean/rstd are loaded before the current tile is computed (register
    double-buffering), so every program keeps two tiles of loads in flight.
    """
    pid = tl.program_id(0)
    start = pid * rows_per_prog
    end = tl.minimum(start + rows_per_prog, M)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    if HAS_W:
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    db_acc = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    r_ar = tl.arange(0, ROWS)

    if PREFETCH:
        rows_n = (start + r_ar).to(tl.int64)
        ok_n = rows_n < end
        mask_n = ok_n[:, None] & col_ok[None, :]
        x_n = tl.load(X + rows_n[:, None] * stride_x_row + cols[None, :], mask=mask_n, other=0.0)
        dy_n = tl.load(DY + rows_n[:, None] * stride_dy_row + cols[None, :], mask=mask_n, other=0.0)
        mean_n = tl.load(Mean + rows_n, mask=ok_n, other=0.0)
        rstd_n = tl.load(Rstd + rows_n, mask=ok_n, other=0.0)

    for r0 in range(start, end, ROWS):
        # row indices fit int32 (M does); int64 so that rows * stride_row cannot overflow
        rows = (r0 + r_ar).to(tl.int64)
        row_ok = rows < end
        mask = row_ok[:, None] & col_ok[None, :]
        if PREFETCH:
            x = x_n.to(tl.float32)
            dy = dy_n.to(tl.float32)
            mean = mean_n
            rstd = rstd_n
            rows_n = rows + ROWS
            ok_n = rows_n < end
            mask_n = ok_n[:, None] & col_ok[None, :]
            x_n = tl.load(X + rows_n[:, None] * stride_x_row + cols[None, :], mask=mask_n, other=0.0)
            dy_n = tl.load(DY + rows_n[:, None] * stride_dy_row + cols[None, :], mask=mask_n, other=0.0)
            mean_n = tl.load(Mean + rows_n, mask=ok_n, other=0.0)
            rstd_n = tl.load(Rstd + rows_n, mask=ok_n, other=0.0)
        else:
            x = tl.load(X + rows[:, None] * stride_x_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + rows[:, None] * stride_dy_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            mean = tl.load(Mean + rows, mask=row_ok, other=0.0)
            rstd = tl.load(Rstd + rows, mask=row_ok, other=0.0)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        if COMPUTE_DX:
            g = dy * w[None, :] if HAS_W else dy
            c1 = tl.sum(xhat * g, axis=1) / N
            c2 = tl.sum(g, axis=1) / N
            dx = _dx_tile(g, xhat, rstd, c1, c2)
            tl.store(DX + rows[:, None] * stride_dx_row + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if COMPUTE_DW:
            dw_acc += dy * xhat
        if COMPUTE_DB:
            db_acc += dy
    _store_partials(Part, pid, N, cols, col_ok, dw_acc, db_acc, db_row0, COMPUTE_DW, COMPUTE_DB)
