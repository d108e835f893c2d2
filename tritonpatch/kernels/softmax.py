"""Triton kernels for softmax, forward and backward. ``@triton.jit`` functions only; launch logic lives in
``tritonpatch/ops/softmax.py``.

Math, over the reduced axis of length ``R`` (one "row"), always in fp32:

    forward:   y_i  = exp(x_i - max_j x_j) / sum_k exp(x_k - max_j x_j)
    backward:  dx_i = y_i * (dy_i - sum_k dy_k * y_k)          (from the saved output y only)

Three layouts of the same math:

* ``*_rows_kernel``: the reduced axis is contiguous (stride 1). A program takes ``ROWS`` whole rows as a
  ``[ROWS, BLOCK_N]`` tile held in registers (single pass; ``BLOCK_N >= n_cols``).
* ``*_rows_looped_kernel``: the same layout for rows too wide for registers. One program per row loops
  over ``BLOCK_N`` chunks. Forward keeps a per-lane running max and a per-lane sum rescaled to it
  ("online softmax"), then a second sweep writes y; backward sums dy*y in one sweep and writes dx in a
  second. The second sweep walks the row backwards so that the most recently read chunks (still in
  cache) are read first.
* ``*_rows_split_kernel``: the same layout, each row split over ``K`` programs of ``CHUNK`` columns held
  in registers, so the row is read once. Each program writes its chunk's partial statistics (forward: max
  and sum of exp; backward: dot(dy, y)), waits at a barrier shared by its row's K programs
  (:func:`_row_group_barrier`), combines the K partials and writes its chunk. The grid is persistent
  (program p takes tiles p, p + G, ...; G a multiple of K, so a row's K tiles are one round's K
  consecutive programs) and must be co-resident: the op launches it cooperatively.
* ``*_strided_kernel``: the reduced axis has any stride. The tensor is seen as ``(G, R, P)``; a program
  takes ``BLOCK_P`` columns of ``P`` for one ``g`` and reduces over ``R`` (axis 0 of a
  ``[BLOCK_R, BLOCK_P]`` tile), in one pass when ``BLOCK_R >= R`` or looped (online) otherwise. This is
  a softmax over a non-last dim (``P`` = the trailing dims, contiguous) or over a transposed last dim
  (``P`` = the leading dims). ``*_UNIT`` flags say which strides are 1, so the compiler knows which
  axis is contiguous and vectorises the loads/stores along it.
* ``softmax_fwd_strided_{stats,apply}_kernel``: the strided forward for a long ``R`` split over many
  programs. Pass 1: each ``[BLOCK_R, BLOCK_P]`` chunk's column max ``m_c`` and ``s_c = sum exp(x - m_c)``
  into fp32 partials (G, C, P); pass 2: each chunk combines its columns' C partials,
  ``M = max_c m_c``, ``S = sum_c s_c * exp(m_c - M)``, and writes ``y = exp(x - M) / S``. Every chunk is
  its own program (the looped kernel has one program per column block, too few when G * P is small).

Masking rules follow torch exactly because the arithmetic is the same: padding lanes load ``-inf``; a
row whose max is ``-inf`` (fully masked) or ``+inf`` gives NaN everywhere (``exp(-inf - -inf)``), a NaN
anywhere in a row makes the row sum NaN, hence the whole row NaN, as torch does. The online update
guards only the *internal* rescaling against ``-inf - -inf`` so that a chunk that is entirely ``-inf``
(e.g. a causal mask) does not poison a row that has finite entries elsewhere.

``ROUND`` (forward): round x to the output dtype before computing, i.e. torch's
``softmax(x, dim, dtype=d)`` which casts x to ``d`` first (only needed when ``d`` is narrower than x or
a different half format). Offsets derived from ``program_id`` are int64.
"""
import triton
import triton.language as tl

from tritonpatch.kernels.cache_hints import load_hinted, store_streaming


@triton.jit
def _scaled(idx, stride, UNIT: tl.constexpr):
    """``idx * stride``, or ``idx`` when the stride is known to be 1 (lets the compiler vectorise)."""
    if UNIT:
        out = idx
    else:
        out = idx * stride
    return out


@triton.jit
def _round(x, TY: tl.constexpr, SOFT_BF16: tl.constexpr):
    """fp32 ``x`` to ``TY``, round to nearest even.

    ``SOFT_BF16`` (set under TRITON_INTERPRET only): do fp32 -> bf16 with integer ops, because the
    interpreter's own conversion truncates; on a GPU the native conversion already rounds to nearest even.
    """
    if SOFT_BF16 and TY == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        out = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        out = x.to(TY)
    return out


@triton.jit
def _load_f32(ptrs, mask, OUT_TY: tl.constexpr, ROUND: tl.constexpr, SOFT_BF16: tl.constexpr):
    """Load x (padding ``-inf``) as fp32, rounded to ``OUT_TY`` first if ROUND (torch's ``dtype=`` cast)."""
    return _input_f32(tl.load(ptrs, mask=mask, other=-float("inf")), OUT_TY, ROUND, SOFT_BF16)


@triton.jit
def _input_f32(x, OUT_TY: tl.constexpr, ROUND: tl.constexpr, SOFT_BF16: tl.constexpr):
    """Loaded x as fp32, rounded to ``OUT_TY`` first if ROUND (torch's ``dtype=`` cast)."""
    x = x.to(tl.float32)
    if ROUND:
        x = _round(x, OUT_TY, SOFT_BF16).to(tl.float32)
    return x


# ----------------------------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------------------------
@triton.jit
def softmax_fwd_rows_kernel(
    x_ptr, y_ptr, n_rows, n_cols, stride_x_row, stride_y_row,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, ROUND: tl.constexpr, SOFT_BF16: tl.constexpr,
):
    """y[r, :] = softmax(x[r, :]) for ROWS rows per program; whole rows in registers (BLOCK_N >= n_cols)."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    x = _load_f32(x_ptr + rows[:, None] * stride_x_row + cols[None, :], mask,
                  y_ptr.dtype.element_ty, ROUND, SOFT_BF16)
    m = tl.max(x, axis=1)
    p = tl.exp(x - m[:, None])
    inv = 1.0 / tl.sum(p, axis=1)
    y = p * inv[:, None]
    tl.store(y_ptr + rows[:, None] * stride_y_row + cols[None, :],
             _round(y, y_ptr.dtype.element_ty, SOFT_BF16), mask=mask)


@triton.jit
def softmax_fwd_rows_looped_kernel(
    x_ptr, y_ptr, n_cols, stride_x_row, stride_y_row,
    BLOCK_N: tl.constexpr, ROUND: tl.constexpr, SOFT_BF16: tl.constexpr, L2_HINTS: tl.constexpr,
):
    """One row per program, any width: online max/sum sweep, then a (reversed) sweep writing y.
    L2_HINTS: the first sweep loads with ``evict_last``, the second with ``evict_first``, and y is stored
    ``evict_first`` (:mod:`tritonpatch.kernels.cache_hints`)."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x_row
    y_row = y_ptr + row * stride_y_row
    cols = tl.arange(0, BLOCK_N)
    m = tl.full([BLOCK_N], -float("inf"), tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        offs = start + cols
        x = _input_f32(load_hinted(x_row + offs, offs < n_cols, -float("inf"), L2_HINTS, "evict_last"),
                       y_ptr.dtype.element_ty, ROUND, SOFT_BF16)
        m_new = tl.maximum(m, x)
        # a lane that has only seen -inf so far keeps s == 0 (instead of exp(-inf - -inf) = NaN)
        m_ref = tl.where(m_new == -float("inf"), 0.0, m_new)
        s = s * tl.exp(m - m_ref) + tl.exp(x - m_ref)
        m = m_new
    m_row = tl.max(m, axis=0)
    # lanes behind the row max are rescaled; m_row == -inf (fully masked row) gives NaN like torch
    inv = 1.0 / tl.sum(s * tl.exp(m - m_row), axis=0)
    n_blocks = tl.cdiv(n_cols, BLOCK_N)
    for i in range(0, n_blocks):
        offs = (n_blocks - 1 - i) * BLOCK_N + cols
        mask = offs < n_cols
        x = _input_f32(load_hinted(x_row + offs, mask, -float("inf"), L2_HINTS, "evict_first"),
                       y_ptr.dtype.element_ty, ROUND, SOFT_BF16)
        y = tl.exp(x - m_row) * inv
        store_streaming(y_row + offs, _round(y, y_ptr.dtype.element_ty, SOFT_BF16), mask, L2_HINTS)


@triton.jit
def _row_group_barrier(scratch_ptr, slot, K: tl.constexpr):
    """Wait until the K programs of group ``slot`` have arrived. Two int32 words per group at
    ``scratch_ptr + 2 * slot``: a count and a generation. The last program to arrive resets the count and
    bumps the generation (release); the others spin on the generation (acquire). The count is back at 0
    after every barrier, so the words serve any number of rounds, and any K. Partials written before the
    call are visible to every program of the group after it (read them with ``volatile=True``). With K == 1
    nothing waits (so the interpreter, which runs programs one after another, can run it)."""
    cnt = scratch_ptr + 2 * slot
    gen = cnt + 1
    tl.debug_barrier()  # every thread's partials are written before the arrival
    g0 = tl.atomic_add(gen, 0, sem="acquire")
    old = tl.atomic_add(cnt, 1, sem="acq_rel")
    if old == K - 1:
        tl.atomic_xchg(cnt, 0, sem="relaxed")
        tl.atomic_add(gen, 1, sem="release")
    else:
        g = tl.atomic_add(gen, 0, sem="acquire")
        while g == g0:
            g = tl.atomic_add(gen, 0, sem="acquire")
    tl.debug_barrier()


@triton.jit
def _split_program(scratch_ptr, n_cols, K: tl.constexpr, KP: tl.constexpr, CHUNK: tl.constexpr):
    """This program's place in a split-rows grid: (pid, grid size G, its group ``slot``, its chunk's
    columns and their mask, the K partials' lanes (padded to KP), the fp32 partials after the groups'
    barrier words)."""
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    cols = (pid % K) * CHUNK + tl.arange(0, CHUNK)
    part = (scratch_ptr + 2 * (G // K)).to(tl.pointer_type(tl.float32), bitcast=True)
    return pid, G, pid // K, cols, cols < n_cols, tl.arange(0, KP), part


@triton.jit
def softmax_fwd_rows_split_kernel(
    x_ptr, y_ptr, scratch_ptr, n_cols, stride_x_row, stride_y_row, n_tiles,
    K: tl.constexpr, KP: tl.constexpr, CHUNK: tl.constexpr, ROUND: tl.constexpr, SOFT_BF16: tl.constexpr,
):
    """Rows split over K programs (module docstring); tile t is chunk t % K of row t // K. Scratch: int32
    barrier words (2 per group of K programs), then fp32 partials, two rounds' worth (a program may write
    round t + 1's before a partner has read round t's). Chunk c's partials: m_c = max x, s_c = sum
    exp(x - m_c); the row's M = max_c m_c, S = sum_c s_c exp(m_c - M); y = exp(x - m_c) * (exp(m_c - M) / S),
    one exp per element (m_c <= M: no overflow; a chunk of -inf only has exp(x - m_c) = 0)."""
    pid, G, slot, cols, cmask, ks, part = _split_program(scratch_ptr, n_cols, K, KP, CHUNK)
    for t in range(0, tl.cdiv(n_tiles, G)):
        tile = t * G + pid
        if tile < n_tiles:
            row = (tile // K).to(tl.int64)
            x = _load_f32(x_ptr + row * stride_x_row + cols, cmask, y_ptr.dtype.element_ty, ROUND, SOFT_BF16)
            m = tl.max(x, axis=0)
            m_ref = tl.where(m == -float("inf"), 0.0, m)
            p = tl.exp(x - m_ref)
            buf = part + (t % 2) * 2 * G
            tl.store(buf + pid, m)
            tl.store(buf + G + pid, tl.sum(p, axis=0))
            _row_group_barrier(scratch_ptr, slot, K)
            ms = tl.load(buf + slot * K + ks, mask=ks < K, other=-float("inf"), volatile=True)
            ss = tl.load(buf + G + slot * K + ks, mask=ks < K, other=0.0, volatile=True)
            row_max = tl.max(ms, axis=0)
            # a NaN or +inf anywhere, or a row of -inf, makes ``total`` NaN: the whole row NaN, as torch
            total = tl.sum(ss * tl.exp(ms - row_max), axis=0)
            scale = tl.where(m == -float("inf"), 0.0, tl.exp(m_ref - row_max)) / total
            tl.store(y_ptr + row * stride_y_row + cols, _round(p * scale, y_ptr.dtype.element_ty, SOFT_BF16),
                     mask=cmask)


@triton.jit
def softmax_fwd_strided_kernel(
    x_ptr, y_ptr, R, P, n_pblocks,
    sx_g, sx_r, sx_p, sy_g, sy_r, sy_p,
    BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, LOOPED: tl.constexpr,
    X_R_UNIT: tl.constexpr, X_P_UNIT: tl.constexpr, Y_R_UNIT: tl.constexpr, Y_P_UNIT: tl.constexpr,
    ROUND: tl.constexpr, SOFT_BF16: tl.constexpr,
):
    """Softmax over axis R of a (G, R, P) view; a program owns BLOCK_P columns of one g."""
    pid = tl.program_id(0).to(tl.int64)
    g = pid // n_pblocks
    p = (pid % n_pblocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    r = tl.arange(0, BLOCK_R).to(tl.int64)
    p_ok = (p < P)[None, :]
    x_base = x_ptr + g * sx_g + _scaled(p, sx_p, X_P_UNIT)[None, :]
    y_base = y_ptr + g * sy_g + _scaled(p, sy_p, Y_P_UNIT)[None, :]
    if not LOOPED:
        mask = (r < R)[:, None] & p_ok
        x = _load_f32(x_base + _scaled(r, sx_r, X_R_UNIT)[:, None], mask,
                      y_ptr.dtype.element_ty, ROUND, SOFT_BF16)
        m = tl.max(x, axis=0)
        e = tl.exp(x - m[None, :])
        inv = 1.0 / tl.sum(e, axis=0)
        tl.store(y_base + _scaled(r, sy_r, Y_R_UNIT)[:, None],
                 _round(e * inv[None, :], y_ptr.dtype.element_ty, SOFT_BF16), mask=mask)
    else:
        m = tl.full([BLOCK_R, BLOCK_P], -float("inf"), tl.float32)
        s = tl.zeros([BLOCK_R, BLOCK_P], tl.float32)
        for start in range(0, R, BLOCK_R):
            rr = start + r
            x = _load_f32(x_base + _scaled(rr, sx_r, X_R_UNIT)[:, None], (rr < R)[:, None] & p_ok,
                          y_ptr.dtype.element_ty, ROUND, SOFT_BF16)
            m_new = tl.maximum(m, x)
            m_ref = tl.where(m_new == -float("inf"), 0.0, m_new)
            s = s * tl.exp(m - m_ref) + tl.exp(x - m_ref)
            m = m_new
        m_col = tl.max(m, axis=0)
        inv = 1.0 / tl.sum(s * tl.exp(m - m_col[None, :]), axis=0)
        n_blocks = tl.cdiv(R, BLOCK_R)
        for i in range(0, n_blocks):
            rr = (n_blocks - 1 - i) * BLOCK_R + r
            mask = (rr < R)[:, None] & p_ok
            x = _load_f32(x_base + _scaled(rr, sx_r, X_R_UNIT)[:, None], mask,
                          y_ptr.dtype.element_ty, ROUND, SOFT_BF16)
            y = tl.exp(x - m_col[None, :]) * inv[None, :]
            tl.store(y_base + _scaled(rr, sy_r, Y_R_UNIT)[:, None],
                     _round(y, y_ptr.dtype.element_ty, SOFT_BF16), mask=mask)


@triton.jit
def _split_chunk(x_ptr, y_ptr, R, P, n_pblocks, sx_g, sx_r, sx_p, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr,
                 X_R_UNIT: tl.constexpr, X_P_UNIT: tl.constexpr, ROUND: tl.constexpr, SOFT_BF16: tl.constexpr):
    """The split-R kernels' program -> (g, chunk, p, p_ok, r, mask, x): program (g * n_pblocks + column
    block, chunk) of a (G, R, P) view; x the [BLOCK_R, BLOCK_P] tile of rows r and columns p as fp32, -inf
    where ``mask`` is off."""
    pid = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    g = pid // n_pblocks
    p = (pid % n_pblocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < P
    r = chunk * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    mask = (r < R)[:, None] & p_ok[None, :]
    x = _load_f32(x_ptr + g * sx_g + _scaled(p, sx_p, X_P_UNIT)[None, :] + _scaled(r, sx_r, X_R_UNIT)[:, None],
                  mask, y_ptr.dtype.element_ty, ROUND, SOFT_BF16)
    return g, chunk, p, p_ok, r, mask, x


@triton.jit
def softmax_fwd_strided_stats_kernel(
    x_ptr, y_ptr, m_ptr, s_ptr, R, P, n_pblocks, n_chunks,
    sx_g, sx_r, sx_p,
    BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, X_R_UNIT: tl.constexpr, X_P_UNIT: tl.constexpr,
    ROUND: tl.constexpr, SOFT_BF16: tl.constexpr,
):
    """Split-R pass 1 over a (G, R, P) view; grid (G * n_pblocks, n_chunks). Chunk c of R, BLOCK_P columns
    of one g: m[g, c, p] = max over the chunk, s[g, c, p] = sum of exp(x - m) (0 for an all -inf chunk).
    m, s: (G, n_chunks, P) fp32. y_ptr: only its element type is read (for ROUND)."""
    g, chunk, p, p_ok, r, mask, x = _split_chunk(x_ptr, y_ptr, R, P, n_pblocks, sx_g, sx_r, sx_p, BLOCK_R, BLOCK_P,
                                                 X_R_UNIT, X_P_UNIT, ROUND, SOFT_BF16)
    m = tl.max(x, axis=0)
    m_ref = tl.where(m == -float("inf"), 0.0, m)
    s = tl.sum(tl.exp(x - m_ref[None, :]), axis=0)
    out = (g * n_chunks + chunk) * P + p
    tl.store(m_ptr + out, m, mask=p_ok)
    tl.store(s_ptr + out, s, mask=p_ok)


@triton.jit
def softmax_fwd_strided_apply_kernel(
    x_ptr, y_ptr, m_ptr, s_ptr, R, P, n_pblocks, n_chunks,
    sx_g, sx_r, sx_p, sy_g, sy_r, sy_p,
    BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    X_R_UNIT: tl.constexpr, X_P_UNIT: tl.constexpr, Y_R_UNIT: tl.constexpr, Y_P_UNIT: tl.constexpr,
    ROUND: tl.constexpr, SOFT_BF16: tl.constexpr,
):
    """Split-R pass 2; same grid. Combines the n_chunks (<= BLOCK_C) partials of its columns and writes
    y = exp(x - M) / S for its chunk. An all -inf or a +inf/NaN column gives NaN, as torch."""
    g, chunk, p, p_ok, r, mask, x = _split_chunk(x_ptr, y_ptr, R, P, n_pblocks, sx_g, sx_r, sx_p, BLOCK_R, BLOCK_P,
                                                 X_R_UNIT, X_P_UNIT, ROUND, SOFT_BF16)
    c = tl.arange(0, BLOCK_C)
    part = (g * n_chunks + c)[:, None] * P + p[None, :]
    c_mask = (c < n_chunks)[:, None] & p_ok[None, :]
    m = tl.load(m_ptr + part, mask=c_mask, other=-float("inf"))
    s = tl.load(s_ptr + part, mask=c_mask, other=0.0)
    m_col = tl.max(m, axis=0)
    # an all -inf chunk has s = 0: its exp(-inf - M) = 0 adds nothing (M finite) or NaN (M = -inf: all
    # -inf, NaN as torch); padding chunks likewise
    inv = 1.0 / tl.sum(s * tl.exp(m - m_col[None, :]), axis=0)
    y = tl.exp(x - m_col[None, :]) * inv[None, :]
    tl.store(y_ptr + g * sy_g + _scaled(p, sy_p, Y_P_UNIT)[None, :] + _scaled(r, sy_r, Y_R_UNIT)[:, None],
             _round(y, y_ptr.dtype.element_ty, SOFT_BF16), mask=mask)


# ----------------------------------------------------------------------------------------------------------
# backward: dx = y * (dy - sum(dy * y)), y and dx share one layout (both made by the op, contiguous)
# ----------------------------------------------------------------------------------------------------------
@triton.jit
def softmax_bwd_rows_kernel(
    y_ptr, dy_ptr, dx_ptr, n_rows, n_cols, stride_y_row, stride_dy_row, stride_dy_col,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, DY_COL_UNIT: tl.constexpr, SOFT_BF16: tl.constexpr,
):
    """dx[r, :] for ROWS rows per program, whole rows in registers (BLOCK_N >= n_cols)."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    offs = rows[:, None] * stride_y_row + cols[None, :]
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + rows[:, None] * stride_dy_row + _scaled(cols, stride_dy_col, DY_COL_UNIT)[None, :],
                 mask=mask, other=0.0).to(tl.float32)
    dot = tl.sum(y * dy, axis=1)
    dx = y * (dy - dot[:, None])
    tl.store(dx_ptr + offs, _round(dx, dx_ptr.dtype.element_ty, SOFT_BF16), mask=mask)


@triton.jit
def softmax_bwd_rows_looped_kernel(
    y_ptr, dy_ptr, dx_ptr, n_cols, stride_y_row, stride_dy_row, stride_dy_col,
    BLOCK_N: tl.constexpr, DY_COL_UNIT: tl.constexpr, SOFT_BF16: tl.constexpr, L2_HINTS: tl.constexpr,
):
    """One row per program, any width: sweep summing dy*y, then a (reversed) sweep writing dx.
    L2_HINTS: as in the looped forward."""
    row = tl.program_id(0).to(tl.int64)
    y_row = y_ptr + row * stride_y_row
    dx_row = dx_ptr + row * stride_y_row
    dy_row = dy_ptr + row * stride_dy_row
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        offs = start + cols
        mask = offs < n_cols
        y = load_hinted(y_row + offs, mask, 0.0, L2_HINTS, "evict_last").to(tl.float32)
        dy = load_hinted(dy_row + _scaled(offs, stride_dy_col, DY_COL_UNIT), mask, 0.0, L2_HINTS,
                         "evict_last").to(tl.float32)
        acc += y * dy
    dot = tl.sum(acc, axis=0)
    n_blocks = tl.cdiv(n_cols, BLOCK_N)
    for i in range(0, n_blocks):
        offs = (n_blocks - 1 - i) * BLOCK_N + cols
        mask = offs < n_cols
        y = load_hinted(y_row + offs, mask, 0.0, L2_HINTS, "evict_first").to(tl.float32)
        dy = load_hinted(dy_row + _scaled(offs, stride_dy_col, DY_COL_UNIT), mask, 0.0, L2_HINTS,
                         "evict_first").to(tl.float32)
        store_streaming(dx_row + offs, _round(y * (dy - dot), dx_ptr.dtype.element_ty, SOFT_BF16), mask, L2_HINTS)


@triton.jit
def softmax_bwd_rows_split_kernel(
    y_ptr, dy_ptr, dx_ptr, scratch_ptr, n_cols, stride_y_row, stride_dy_row, stride_dy_col, n_tiles,
    K: tl.constexpr, KP: tl.constexpr, CHUNK: tl.constexpr, DY_COL_UNIT: tl.constexpr, SOFT_BF16: tl.constexpr,
):
    """Rows split over K programs, backward: each chunk's partial dot(dy, y) (fp32, two rounds' worth after
    the barrier words, as in the forward), then dx = y * (dy - dot) for its chunk."""
    pid, G, slot, cols, cmask, ks, part = _split_program(scratch_ptr, n_cols, K, KP, CHUNK)
    for t in range(0, tl.cdiv(n_tiles, G)):
        tile = t * G + pid
        if tile < n_tiles:
            row = (tile // K).to(tl.int64)
            y_offs = row * stride_y_row + cols
            y = tl.load(y_ptr + y_offs, mask=cmask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + row * stride_dy_row + _scaled(cols, stride_dy_col, DY_COL_UNIT), mask=cmask,
                         other=0.0).to(tl.float32)
            buf = part + (t % 2) * G
            tl.store(buf + pid, tl.sum(y * dy, axis=0))
            _row_group_barrier(scratch_ptr, slot, K)
            dot = tl.sum(tl.load(buf + slot * K + ks, mask=ks < K, other=0.0, volatile=True), axis=0)
            tl.store(dx_ptr + y_offs, _round(y * (dy - dot), dx_ptr.dtype.element_ty, SOFT_BF16), mask=cmask)


@triton.jit
def softmax_bwd_strided_kernel(
    y_ptr, dy_ptr, dx_ptr, R, P, n_pblocks,
    so_g, so_r, so_p, sd_g, sd_r, sd_p,
    BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, LOOPED: tl.constexpr,
    O_R_UNIT: tl.constexpr, O_P_UNIT: tl.constexpr, D_R_UNIT: tl.constexpr, D_P_UNIT: tl.constexpr,
    SOFT_BF16: tl.constexpr,
):
    """dx over axis R of a (G, R, P) view. y and dx have strides (so_*), dy has strides (sd_*)."""
    pid = tl.program_id(0).to(tl.int64)
    g = pid // n_pblocks
    p = (pid % n_pblocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    r = tl.arange(0, BLOCK_R).to(tl.int64)
    p_ok = (p < P)[None, :]
    o_p = g * so_g + _scaled(p, so_p, O_P_UNIT)[None, :]
    dy_base = dy_ptr + g * sd_g + _scaled(p, sd_p, D_P_UNIT)[None, :]
    if not LOOPED:
        mask = (r < R)[:, None] & p_ok
        o = o_p + _scaled(r, so_r, O_R_UNIT)[:, None]
        y = tl.load(y_ptr + o, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_base + _scaled(r, sd_r, D_R_UNIT)[:, None], mask=mask, other=0.0).to(tl.float32)
        dot = tl.sum(y * dy, axis=0)
        tl.store(dx_ptr + o, _round(y * (dy - dot[None, :]), dx_ptr.dtype.element_ty, SOFT_BF16), mask=mask)
    else:
        acc = tl.zeros([BLOCK_R, BLOCK_P], tl.float32)
        for start in range(0, R, BLOCK_R):
            rr = start + r
            mask = (rr < R)[:, None] & p_ok
            o = o_p + _scaled(rr, so_r, O_R_UNIT)[:, None]
            y = tl.load(y_ptr + o, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_base + _scaled(rr, sd_r, D_R_UNIT)[:, None], mask=mask, other=0.0).to(tl.float32)
            acc += y * dy
        dot = tl.sum(acc, axis=0)
        n_blocks = tl.cdiv(R, BLOCK_R)
        for i in range(0, n_blocks):
            rr = (n_blocks - 1 - i) * BLOCK_R + r
            mask = (rr < R)[:, None] & p_ok
            o = o_p + _scaled(rr, so_r, O_R_UNIT)[:, None]
            y = tl.load(y_ptr + o, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_base + _scaled(rr, sd_r, D_R_UNIT)[:, None], mask=mask, other=0.0).to(tl.float32)
            tl.store(dx_ptr + o, _round(y * (dy - dot[None, :]), dx_ptr.dtype.element_ty, SOFT_BF16),
                     mask=mask)
