"""LayerNorm op (tritonpatch.ops.layer_norm) against a float64 torch reference, through the interpreter.

Every check compares out, dx, dweight, dbias with ``F.layer_norm`` on float64 copies (autograd for the
grads): fp32 within 1e-6 relative, fp16/bf16 within 1.5x torch's own error at that dtype. Inputs,
weights, biases and upstream gradients are fresh random draws (never zeros or ones).
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import INTERPRET
from tests.numerics import assert_matches, rel_err
from tritonpatch.ops import common
from tritonpatch.ops import layer_norm as ln_mod
from tritonpatch.ops.layer_norm import layer_norm, unsupported

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _rand(shape, dtype, device, offset: float = 0.0) -> torch.Tensor:
    return (torch.randn(shape, dtype=torch.float32, device=device) + offset).to(dtype)


def _grads(fn, x, w, b, dy):
    """Run fn(x, w, b) on fresh leaves and return (y, dx, dw, db).

    detach() keeps storage and strides, so a non-contiguous x reaches fn as it is.
    """
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (x, w, b)]
    y = fn(*leaves)
    wanted = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(y, wanted, dy)
    it = iter(grads)
    out = [next(it) if t is not None else None for t in leaves]
    return (y, *out)


def _dx_condition(x, n, w, dy, eps):
    """Componentwise condition number of dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w,
    from float64: || rstd * (|g| + |mean g| + |xhat| |mean(g xhat)|) || / || dx ||. Near 1 for wide rows;
    up to ~15 for rows of width 3, where the two means cancel most of g."""
    x, dy = x.double().reshape(-1, n), dy.double().reshape(-1, n)
    g = dy * w.double().reshape(n) if w is not None else dy
    mu = x.mean(-1, keepdim=True)
    rstd = (x.var(-1, unbiased=False, keepdim=True) + eps).rsqrt()
    xhat = (x - mu) * rstd
    c1, c2 = (xhat * g).mean(-1, keepdim=True), g.mean(-1, keepdim=True)
    dx = rstd * (g - c2 - xhat * c1)
    return ((rstd * (g.abs() + c2.abs() + xhat.abs() * c1.abs())).norm() / dx.norm()).item()


def _check(x, normalized_shape, w=None, b=None, eps=1e-5, dy=None):
    """Assert our out/dx/dw/db match the float64 reference as the dtype allows; return ours."""
    ns = tuple(normalized_shape)
    n = math.prod(ns)
    if dy is None:
        dy = torch.randn(x.shape, device=x.device).to(x.dtype)
    assert unsupported(x, ns, w, b, eps) is None

    ours = _grads(lambda x_, w_, b_: layer_norm(x_, ns, w_, b_, eps), x, w, b, dy)
    d = lambda t: t.double() if t is not None else None  # noqa: E731
    ref = _grads(lambda x_, w_, b_: F.layer_norm(x_, ns, w_, b_, eps), d(x), d(w), d(b), d(dy))
    own = None
    if x.dtype != torch.float32:
        own = _grads(lambda x_, w_, b_: F.layer_norm(x_, ns, w_, b_, eps), x, w, b, dy)

    assert ours[0].dtype == x.dtype and ours[0].shape == x.shape
    for i, what in enumerate(("out", "dx", "dw", "db")):
        if ours[i] is None:
            assert ref[i] is None
            continue
        assert ours[i].dtype == (x.dtype if i < 2 else (w if i == 2 else b).dtype)
        if n == 1 and what in ("dx", "dw"):
            # xhat is identically 0 for one-element rows: the exact gradients are 0 (torch's float64
            # reference carries ~1e-14 of rounding noise there, so a relative check is meaningless).
            assert ours[i].abs().max().item() <= 1e-6, what
            continue
        # the condition-scaled bar is an fp32 bar (half dtypes are held to torch's own error)
        cond = _dx_condition(x, n, w, dy, eps) if what == "dx" and x.dtype == torch.float32 else None
        assert_matches(ours[i], ref[i], own[i] if own is not None else None, what=what, cond=cond)
    return ours


# ---------------------------------------------------------------------------------------------------
# Widths and dtypes
# ---------------------------------------------------------------------------------------------------
# (rows, width): 1, 3, 127 and 1000 run several rows per program; 4097 one row per program; 9000 uses
# the wide (column-blocked) backward; 20000 a 32768-wide register tile in the forward. The chunked
# forward (wider than 32768): test_fp32_wide_rows_hold_their_head, test_looped_forward_and_wide_backward.
SHAPES = [(5, 1), (7, 3), (9, 127), (6, 1000), (3, 4097), (3, 9000), (2, 20000)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m,n", SHAPES)
def test_matches_reference(device, dtype, m, n):
    x = _rand((m, n), dtype, device)
    w = _rand((n,), dtype, device)
    b = _rand((n,), dtype, device)
    _check(x, (n,), w, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("m,n", [(4, 1024), (3, 1024), (6, 768), (5, 64)])
def test_forward_tiles_even_and_masked(device, dtype, m, n):
    """Several rows per program: an exact tiling (no masks: EVEN) and tiles with masked rows or columns
    (m not a multiple of ROWS, n not a power of two); outputs are NaN-poisoned, so a skipped row fails."""
    fused, block, rows, _, head = ln_mod._fwd_config(n, dtype.itemsize)
    assert fused and rows > 1 and head == 0
    even = n == block and m % rows == 0
    assert even is ((m, n) == (4, 1024))
    x = _rand((m, n), dtype, device, offset=0.5)
    _check(x, (n,), _rand((n,), dtype, device), _rand((n,), dtype, device))
    _check(x, (n,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_width_32768_in_registers(device, dtype):
    """The widest row the forward holds whole (FUSED_FWD_MAX, 32 warps)."""
    n = ln_mod.FUSED_FWD_MAX
    assert n == 32768 and ln_mod._fwd_config(n)[0] and not ln_mod._fwd_config(n + 1)[0]
    x = _rand((2, n), dtype, device)
    _check(x, (n,), _rand((n,), dtype, device), _rand((n,), dtype, device))


@pytest.mark.parametrize("n,affine", [(32769, True), (32769, False), (65536, True)])
def test_fp32_wide_rows_hold_their_head(device, n, affine):
    """fp32 rows wider than FUSED_FWD_MAX: the first LOOPED_HEAD_FP32 elements held in registers, the tail
    walked twice (32769: a one-element tail in a masked chunk, with and without weight and bias; 65536:
    whole chunks)."""
    p_dtype = torch.float32 if affine else None
    plan = ln_mod._fwd_plan(2, n, n, 1e-5, torch.float32, p_dtype, p_dtype, True, -1, True)
    assert plan.kernel is ln_mod.layer_norm_fwd_looped_kernel and plan.constexprs["HEAD"] == 32768
    x = _rand((2, n), torch.float32, device)
    if affine:
        _check(x, (n,), _rand((n,), torch.float32, device), _rand((n,), torch.float32, device))
    else:
        _check(x, (n,))


@pytest.mark.parametrize("hints", [True, False], ids=["l2-hints", "no-hints"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_looped_forward_and_wide_backward(device, dtype, hints, monkeypatch):
    """Rows wider than FUSED_FWD_MAX: statistics over the chunks, then y written from the last chunk (a
    partial one: 40000 = 4 * 8192 + 7232) back to the first, with L2 hints where asked for and the dtype
    takes them (2-byte inputs); fp32 holds the first 32768 in registers (one partial chunk after them);
    the backward's per-row c1/c2 kernel (rows taken last first), with and without its hints; outputs
    poisoned, against float64, forward and backward."""
    monkeypatch.setattr(ln_mod, "LOOPED_L2_HINTS", hints)
    monkeypatch.setattr(ln_mod, "BWD_STATS_L2_HINTS", hints)
    n = 40000
    x = _rand((2, n), dtype, device, offset=0.5)
    plan = ln_mod._fwd_plan(2, n, n, 1e-5, dtype, dtype, dtype, True, x.get_device(), hints)
    assert plan.kernel is ln_mod.layer_norm_fwd_looped_kernel
    assert plan.constexprs["L2_HINTS"] is (hints and dtype.itemsize == 2)
    assert plan.constexprs["HEAD"] == (ln_mod.LOOPED_HEAD_FP32 if dtype == torch.float32 else 0)
    bwd = ln_mod._bwd_plan(2, n, n, n, dtype, dtype, dtype, True, True, True, dtype, x.get_device(), hints)
    assert bwd.stats.constexprs["L2_HINTS"] is hints
    if INTERPRET and (not hints or dtype == torch.float16):
        return  # the interpreter ignores eviction hints, and runs fp16 as it runs bf16 (15 s a case)
    _check(x, (n,), _rand((n,), dtype, device), _rand((n,), dtype, device))


@pytest.mark.parametrize("n", [1000, 20000])
def test_large_mean_is_stable(device, n):
    """No cancellation when the mean dwarfs the spread (two-pass / Chan merge, not E[x^2] - E[x]^2).

    The 1e-6 bar cannot hold here for anyone: the fp32 mean itself is off by up to half an ulp of 300
    (~1.5e-5 of the unit spread). So the bar is one ulp of 300 (2^-15 ~ 3e-5), or torch's own fp32 error
    if larger; a one-pass E[x^2] - E[x]^2 formula would be off by ~1e-2 and more.
    """
    x = _rand((3, n), torch.float32, device, offset=300.0)
    w = _rand((n,), torch.float32, device)
    b = _rand((n,), torch.float32, device)
    ref = F.layer_norm(x.double(), (n,), w.double(), b.double())
    own = F.layer_norm(x, (n,), w, b)
    assert rel_err(layer_norm(x, (n,), w, b), ref) <= max(2.0**-15, 1.5 * rel_err(own, ref))


def test_many_rows_persistent_loop(device):
    """More row tiles than programs: each program of the backward loops over several tiles."""
    m, n = 203, 37
    x = _rand((m, n), torch.float32, device)
    _check(x, (n,), _rand((n,), torch.float32, device), _rand((n,), torch.float32, device))


def test_eps(device):
    x = _rand((4, 50), torch.float32, device) * 0.01
    _check(x, (50,), _rand((50,), torch.float32, device), _rand((50,), torch.float32, device), eps=1e-2)


# ---------------------------------------------------------------------------------------------------
# Shapes and layouts
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(33,), (4, 33), (2, 3, 33)], ids=["1d", "2d", "3d"])
def test_leading_shapes(device, dtype, shape):
    n = shape[-1]
    _check(_rand(shape, dtype, device), (n,), _rand((n,), dtype, device), _rand((n,), dtype, device))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_multi_dim_normalized_shape(device, dtype):
    ns = (5, 6)
    x = _rand((3, 4, 5, 6), dtype, device)
    _check(x, ns, _rand(ns, dtype, device), _rand(ns, dtype, device))


def test_normalize_whole_tensor(device):
    ns = (3, 4, 7)
    _check(_rand(ns, torch.float32, device), ns, _rand(ns, torch.float32, device), None)


@pytest.mark.parametrize("m,n,pad", [(6, 50, 30), (2, 40000, 101)])
def test_row_strided_input(device, m, n, pad):
    """Rows strided (a column slice of a wider tensor), each row contiguous: read in place (40000: the
    looped forward, whose fp32 rows hold their head in registers, at an odd row stride)."""
    base = _rand((m, n + pad), torch.float32, device)
    x = base[:, 10:10 + n]
    assert not x.is_contiguous() and x.stride(1) == 1
    _check(x, (n,), _rand((n,), torch.float32, device), _rand((n,), torch.float32, device))


def test_leading_dims_sliced(device):
    base = _rand((4, 6, 40), torch.float32, device)
    x = base[::2, 1::2]
    _check(x, (40,), _rand((40,), torch.float32, device), _rand((40,), torch.float32, device))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_transposed_input(device, dtype):
    """Normalized dim not contiguous: the op copies it and still matches."""
    x = _rand((40, 7), dtype, device).t()
    assert x.stride(-1) != 1
    _check(x, (40,), _rand((40,), dtype, device), _rand((40,), dtype, device))


def test_column_strided_input(device):
    x = _rand((5, 64), torch.float32, device)[:, ::2]
    _check(x, (32,), _rand((32,), torch.float32, device), _rand((32,), torch.float32, device))


def test_expanded_input_and_grad(device):
    """Stride-0 rows (an expanded input, and an expanded upstream gradient from .sum())."""
    n = 24
    x = _rand((1, n), torch.float32, device).expand(5, n)
    w = _rand((n,), torch.float32, device)
    b = _rand((n,), torch.float32, device)
    dy = torch.randn(1, n, device=device).expand(5, n)
    _check(x, (n,), w, b, dy=dy)

    xl = x.detach().clone().requires_grad_()
    wl = w.clone().requires_grad_()
    layer_norm(xl, (n,), wl, None).sum().backward()
    xr = x.detach().double().requires_grad_()
    wr = w.double().requires_grad_()
    F.layer_norm(xr, (n,), wr, None).sum().backward()
    assert_matches(xl.grad, xr.grad, what="dx")
    assert_matches(wl.grad, wr.grad, what="dw")


# ---------------------------------------------------------------------------------------------------
# Optional parameters and partial gradients
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("has_w,has_b", [(True, False), (False, True), (False, False)])
@pytest.mark.parametrize("n", [100, 9000])
def test_weight_bias_none(device, has_w, has_b, n):
    x = _rand((3, n), torch.float32, device)
    w = _rand((n,), torch.float32, device) if has_w else None
    b = _rand((n,), torch.float32, device) if has_b else None
    _check(x, (n,), w, b)


@pytest.mark.parametrize("which", ["x", "w", "b", "wb"])
@pytest.mark.parametrize("n", [100, 9000])
def test_only_some_grads(device, which, n):
    """Only the requested gradients are computed, and they are right."""
    x = _rand((4, n), torch.float32, device)
    w = _rand((n,), torch.float32, device)
    b = _rand((n,), torch.float32, device)
    dy = torch.randn(4, n, device=device)
    leaves = {"x": x.clone(), "w": w.clone(), "b": b.clone()}
    refs = {"x": x.double(), "w": w.double(), "b": b.double()}
    for k in leaves:
        if k in which:
            leaves[k].requires_grad_()
            refs[k].requires_grad_()
    y = layer_norm(leaves["x"], (n,), leaves["w"], leaves["b"])
    yr = F.layer_norm(refs["x"], (n,), refs["w"], refs["b"])
    names = [k for k in "xwb" if k in which]
    got = torch.autograd.grad(y, [leaves[k] for k in names], dy)
    exp = torch.autograd.grad(yr, [refs[k] for k in names], dy.double())
    for k, g, e in zip(names, got, exp):
        assert_matches(g, e, what=f"d{k}")


def test_no_grad_path(device):
    x = _rand((4, 300), torch.bfloat16, device)
    w = _rand((300,), torch.bfloat16, device).requires_grad_()
    b = _rand((300,), torch.bfloat16, device)
    with torch.no_grad():
        y = layer_norm(x, (300,), w, b)
        own = F.layer_norm(x, (300,), w, b)
    assert y.grad_fn is None
    ref = F.layer_norm(x.double(), (300,), w.detach().double(), b.double())
    assert_matches(y, ref, own)


# ---------------------------------------------------------------------------------------------------
# Determinism, empty input
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("m,n", [(203, 37), (9, 9000)])
def test_backward_bitwise_deterministic(device, m, n):
    x = _rand((m, n), torch.float32, device).requires_grad_()
    w = _rand((n,), torch.float32, device).requires_grad_()
    b = _rand((n,), torch.float32, device).requires_grad_()
    dy = torch.randn(m, n, device=device)
    y = layer_norm(x, (n,), w, b)
    first = torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)
    second = torch.autograd.grad(y, (x, w, b), dy)
    y2 = layer_norm(x, (n,), w, b)
    third = torch.autograd.grad(y2, (x, w, b), dy)
    for g1, g2, g3 in zip(first, second, third):
        assert torch.equal(g1, g2) and torch.equal(g1, g3)


@pytest.mark.parametrize("shape,ns", [((0, 16), (16,)), ((2, 0, 16), (16,)), ((3, 0), (0,))])
def test_empty_input(device, shape, ns):
    x = torch.randn(shape, device=device).requires_grad_()
    w = torch.randn(ns, device=device).requires_grad_()
    b = torch.randn(ns, device=device).requires_grad_()
    assert unsupported(x, ns, w, b, 1e-5) is None
    y = layer_norm(x, ns, w, b)
    assert y.shape == x.shape and y.dtype == x.dtype
    dx, dw, db = torch.autograd.grad(y, (x, w, b), torch.randn_like(y))
    assert dx.shape == x.shape
    assert torch.equal(dw, torch.zeros_like(w)) and torch.equal(db, torch.zeros_like(b))


# ---------------------------------------------------------------------------------------------------
# unsupported()
# ---------------------------------------------------------------------------------------------------
def test_unsupported_reasons(device, monkeypatch):
    x = torch.randn(4, 8, device=device)
    w = torch.randn(8, device=device)
    assert unsupported(x, (8,), w, w, 1e-5) is None
    assert unsupported(x, 8, None, None, 1e-5) is None

    assert unsupported(x.double(), (8,), None, None, 1e-5) == "dtype torch.float64 is not supported"
    assert unsupported(x.half(), (8,), w, None, 1e-5) == \
        "mixed dtypes (torch.float16 input, torch.float32 parameter)"
    assert unsupported(x, (8,), None, w.bfloat16(), 1e-5) == \
        "mixed dtypes (torch.float32 input, torch.bfloat16 parameter)"
    assert unsupported(x, (4,), None, None, 1e-5) == "normalized_shape does not match the input"
    assert unsupported(x, (2, 4, 8), None, None, 1e-5) == "normalized_shape does not match the input"
    assert unsupported(x, (8,), torch.randn(4, device=device), None, 1e-5) == \
        "weight shape does not match normalized_shape"
    with torch.autocast(device_type=x.device.type):
        assert unsupported(x, (8,), w, w, 1e-5) == "autocast is enabled"


def test_unsupported_cpu_without_interpreter(monkeypatch):
    monkeypatch.setattr(common, "interpreting", lambda: False)
    x = torch.randn(4, 8)
    assert unsupported(x, (8,), None, None, 1e-5) == "device cpu needs CUDA (or TRITON_INTERPRET=1)"


def test_no_width_limit(device):
    """Any width is supported (wide rows use the chunked kernels); checked without running it."""
    x = torch.empty(1, 131072 * 2, device=device)
    assert unsupported(x, (x.shape[-1],), None, None, 1e-5) is None


def test_launch_configs_cover_widths():
    """The heuristics pick sane tiles: power-of-two blocks covering the row when fused, 1..32 warps with
    64 bytes of x per thread (fewer only for tiles under one warp's worth), 16 warps for chunked rows
    (32 for fp32 up to 65536 wide, which hold the first LOOPED_HEAD_FP32 elements of a row)."""
    for n, elt in itertools.product([1, 3, 127, 768, 1000, 1024, 4096, 4097, 8192, 16384, 16385, 32768, 32769,
                                     65536, 65537, 262144], (2, 4)):
        fused, block, rows, warps, head = ln_mod._fwd_config(n, elt)
        assert 1 <= warps <= 32 and rows >= 1 and block & (block - 1) == 0 and rows & (rows - 1) == 0
        assert fused == (n <= ln_mod.FUSED_FWD_MAX)
        if fused:
            assert block >= n and (rows * block * elt // warps <= 32 * 64 or warps == 32) and head == 0
        elif elt == 4 and n <= 2 * ln_mod.LOOPED_HEAD_FP32:
            assert head == ln_mod.LOOPED_HEAD_FP32 < n and warps == 32
        else:
            assert warps == 16 and head == 0
        fused_b, block_b, rows_b, warps_b, per_sm = ln_mod._bwd_config(n, 2)
        assert 4 <= warps_b <= 16 and per_sm >= 1
        assert not fused_b or block_b >= n
