"""tritonpatch.ops.softmax against a float64 reference (and torch's NaN placement), forward and backward.

Reference: torch.softmax on ``.double()`` of the torch-cast input (``x.to(dtype)`` when ``dtype=`` is
given), gradients by float64 autograd. fp32 results must be within 1e-6 relative; fp16/bf16 within 1.5x
torch's own error in that dtype (tests/numerics.py). Two documented widenings of the fp32 bar, both
"no worse than 1.5x torch's fp32": gradients whose y*(dy - sum(dy*y)) cancels (bar scaled by that
condition number), and, under the interpreter only, long reductions over a non-last dim (numpy sums a
tile's axis 0 sequentially, as torch's CPU kernel does). Every path is run three times: with the default
launch heuristics, with the module's limits lowered so that small shapes take the looped (wide-row /
long-reduction) kernels with several chunks, and the same with rows split over several programs.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.numerics import FP32_TOL, HALF_FLOOR, TORCH_FACTOR, assert_matches, rel_err
from tritonpatch.ops import softmax as S

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")  # set by conftest before triton
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy inf-inf in the interpreter


@pytest.fixture(params=["single", "looped", "split"])
def path(request, monkeypatch):
    """'single': default heuristics. 'looped': tiny limits so every shape takes the looped kernels (the strided
    forward: its split-R kernels, in 16-element chunks; the looped one has its own test below), rows never
    split over programs. 'split': the same limits, and the rows that may be split over programs (fp32,
    forward and backward) are, on CUDA in chunks of 64 bytes (several per row), under the interpreter
    (which runs programs one after another) in one chunk per row."""
    if request.param == "split":
        params = getattr(request.node, "callspec", None)
        params = params.params if params is not None else {}
        if ("strided" in request.node.name or params.get("layout") == "strided"
                or (params.get("dtype", torch.float32) != torch.float32 and "in_dtype" not in params)):
            pytest.skip("rows are split in fp32 over the last dim only: the 'looped' path covers this case")
    if request.param != "single":
        monkeypatch.setattr(S, "SPLIT_ROWS", request.param == "split")
        if not INTERPRET:
            monkeypatch.setattr(S, "SPLIT_ROWS_CHUNK_BYTES", 64)
        monkeypatch.setattr(S, "MAX_SINGLE_N", 8)
        monkeypatch.setattr(S, "MAX_SINGLE_N_BWD", 8)
        monkeypatch.setattr(S, "LOOP_BLOCK_BYTES", 256)
        monkeypatch.setattr(S, "LOOP_BLOCK_BYTES_BWD", 256)
        monkeypatch.setattr(S, "STRIDED_SINGLE_TILE", 32)
        monkeypatch.setattr(S, "SPLIT_BLOCK_R", 16)  # the split strided forward, several chunks per column
    return request.param


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def _rand(shape, dtype, device, scale=3.0):
    """Fresh random input, never zeros."""
    return (torch.randn(shape, device=device) * scale).to(dtype)


def _check_forward(x, dim, dtype=None):
    """Forward equals the float64 reference within tolerance, dtype/shape/NaN placement equal torch's."""
    y = S.softmax(x, dim, dtype)
    ref_in = x if dtype is None else x.to(dtype)
    ref64 = torch.softmax(ref_in.double(), dim)
    torch_out = torch.softmax(x, dim, dtype=dtype)
    assert y.dtype == torch_out.dtype and y.shape == torch_out.shape and y.device == x.device
    assert torch.equal(torch.isnan(y), torch.isnan(torch_out)), "NaN placement differs from torch"
    if y.dtype == torch.float32 and INTERPRET:
        # Under the interpreter a reduction over axis 0 of a tile (the strided kernel: softmax over a
        # non-last dim) is numpy's sequential sum, as torch's CPU kernel does it: for R ~ 1000+ both land
        # near 1e-6. On a GPU the reduction is a tree and the plain 1e-6 bar applies.
        bar = max(FP32_TOL, TORCH_FACTOR * rel_err(torch_out, ref64))
        err = rel_err(y, ref64)
        assert err <= bar, f"y: fp32 rel err {err:.3e} > bar {bar:.3e}"
    else:
        assert_matches(y, ref64, torch_out, what="y")
    return y


def _grad_condition(y64, dy64, dx64, dim):
    """||y * (|dy| + |sum(dy*y)|)|| / ||dx|| over finite entries: >= 1, ~1 for well-conditioned rows."""
    if y64.dim() == 0:
        return 1.0
    s = (y64 * dy64).sum(dim, keepdim=True).abs()
    scale = y64.abs() * (dy64.abs() + s)
    ok = torch.isfinite(scale) & torch.isfinite(dx64)
    den = dx64[ok].norm().item()
    return 1.0 if den == 0.0 else max(1.0, scale[ok].norm().item() / den)


def _check_backward(x, dim, dtype=None, dy=None):
    """Gradient (Triton backward from the saved output) vs float64 autograd and torch's own error."""
    xa = x.detach().clone().requires_grad_(True)
    y = S.softmax(xa, dim, dtype)
    if dy is None:
        dy = _rand(y.shape, y.dtype, y.device, scale=1.0)
    (dx,) = torch.autograd.grad(y, xa, dy)
    assert dx.dtype == x.dtype and dx.shape == x.shape

    xt = x.detach().clone().requires_grad_(True)
    (dx_torch,) = torch.autograd.grad(torch.softmax(xt, dim, dtype=dtype), xt, dy)

    x64 = (x if dtype is None else x.to(dtype)).detach().double().requires_grad_(True)
    y64 = torch.softmax(x64, dim)
    (dx64,) = torch.autograd.grad(y64, x64, dy.double())
    assert torch.equal(torch.isnan(dx), torch.isnan(dx_torch)), "grad NaN placement differs from torch"
    compute = dtype or x.dtype
    if dx.dtype == torch.float32 and compute != torch.float32:
        # fp32 grad of a half-precision softmax (x fp32, dtype=bf16/fp16): precision is the half dtype's
        bar = TORCH_FACTOR * rel_err(dx_torch, dx64) + HALF_FLOOR[compute]
    elif dx.dtype == torch.float32:
        # 1e-6 scaled by the condition number of dx_i = y_i * (dy_i - sum(dy*y)): when that difference
        # cancels (short rows with one dominant y) any fp32 summation order is off by an ulp of the sum,
        # relative to a small dx; torch is no better there, only sometimes luckier.
        bar = max(FP32_TOL * _grad_condition(y64.detach(), dy.double(), dx64, dim),
                  TORCH_FACTOR * rel_err(dx_torch, dx64))
    else:
        # Half precision: 1.5x torch's own error, or one ulp scaled by the condition number (y is saved
        # rounded to the half dtype, so any implementation carries eps/2 * |y| * (|dy| + |sum|) per
        # element; on rows with cancellation torch is only sometimes luckier).
        cond = _grad_condition(y64.detach(), dy.double(), dx64, dim)
        bar = max(TORCH_FACTOR * rel_err(dx_torch, dx64) + HALF_FLOOR[dx.dtype],
                  torch.finfo(dx.dtype).eps * cond)
    err = rel_err(dx, dx64)
    assert err <= bar, f"dx: rel err {err:.3e} > bar {bar:.3e}"
    return dx


# ----------------------------------------------------------------------------------------------------------
# dims, widths, dtypes
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 6, 33), (2, 3, 5, 17)])
@pytest.mark.parametrize("dim", [0, 1, -1, -2])
def test_every_dim(shape, dim, dtype, device, path):
    x = _rand(shape, dtype, device)
    _check_forward(x, dim)
    _check_backward(x, dim)


def test_split_forward_tile_constants_reach_the_cached_plan(device, monkeypatch):
    """The split-R forward's column tile and warps are part of the plan cache's key: changing them after a
    plan was cached takes effect, and the result stays correct."""
    monkeypatch.setattr(S, "STRIDED_SINGLE_TILE", 32)
    monkeypatch.setattr(S, "LOOP_BLOCK_BYTES", 256)
    monkeypatch.setattr(S, "SPLIT_BLOCK_R", 16)
    x = _rand((2, 64, 24), torch.float32, device)

    def plan():
        got = S._fwd_plan(x.shape, x.stride(), 1, x.dtype, x.dtype, x.device, S._heuristics())
        assert isinstance(got, S._SplitLaunch)
        return got.stats.constexprs["BLOCK_P"], got.stats.num_warps, got.apply.num_warps

    assert plan() == (min(32, S.SPLIT_BLOCK_P), S.SPLIT_WARPS, S.SPLIT_WARPS)
    _check_forward(x, 1)
    monkeypatch.setattr(S, "SPLIT_BLOCK_P", 8)
    monkeypatch.setattr(S, "SPLIT_WARPS", 2)
    assert plan() == (8, 2, 2)
    _check_forward(x, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fill", ["-inf", "finfo.min"])
def test_strided_forward_looped_kernel(dtype, fill, device, monkeypatch):
    """The strided forward's looped kernel (R beyond the split kernels' chunk limit), with fully and half
    masked columns, +inf, NaN and huge values."""
    monkeypatch.setattr(S, "STRIDED_SINGLE_TILE", 32)
    monkeypatch.setattr(S, "LOOP_BLOCK_BYTES", 256)
    monkeypatch.setattr(S, "SPLIT_MAX_CHUNKS", 0)
    value = float("-inf") if fill == "-inf" else torch.finfo(dtype).min
    x = _masked((6, 70), dtype, device, value)
    x[4, 3] = float("inf")
    x[5, 9] = float("nan")
    y = _check_forward(x.t().contiguous(), 0)
    if fill == "-inf":
        assert torch.isnan(y[:, 1]).all()
    _check_forward(_rand((3, 100, 7), dtype, device), 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 3, 127, 1000, 4097])
def test_widths_last_dim(width, dtype, device, path):
    if path == "looped" and width > 1000:
        pytest.skip("interpreter time; 1000 already loops over many chunks")
    x = _rand((5, width), dtype, device)
    _check_forward(x, -1)
    _check_backward(x, -1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 3, 127, 1000, 4097])
def test_widths_strided_dim(width, dtype, device, path):
    """Reduction over a non-last dim of that length (the strided kernel)."""
    if path == "looped" and width > 1000:
        pytest.skip("interpreter time; 4097 loops by default already, 1000 loops here")
    x = _rand((2, width, 5), dtype, device)
    _check_forward(x, 1)
    _check_backward(x, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wide_rows(dtype, device):
    """Rows wider than MAX_SINGLE_N take the looped (online) kernel with default settings."""
    x = _rand((2, 40000), dtype, device)
    _check_forward(x, -1)
    _check_backward(x, -1)


@pytest.mark.parametrize("hints", [True, False], ids=["l2-hints", "no-hints"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_looped_rows_take_l2_hints_in_2_byte_dtypes(dtype, hints, device, monkeypatch):
    """The looped row kernels, forward and backward, are compiled with L2 eviction hints for bf16/fp16 when
    LOOP_L2_HINTS / LOOP_L2_HINTS_BWD ask for them, never for fp32 (whose wide rows are split); with or
    without, the results match float64 (outputs poisoned)."""
    monkeypatch.setattr(S, "SPLIT_ROWS", False)
    monkeypatch.setattr(S, "LOOP_L2_HINTS", hints)
    monkeypatch.setattr(S, "LOOP_L2_HINTS_BWD", hints)
    monkeypatch.setattr(S, "MAX_SINGLE_N", 8)
    monkeypatch.setattr(S, "MAX_SINGLE_N_BWD", 8)
    monkeypatch.setattr(S, "LOOP_BLOCK_BYTES", 64)
    monkeypatch.setattr(S, "LOOP_BLOCK_BYTES_BWD", 64)
    x = _rand((3, 100), dtype, device)
    fwd = S._fwd_plan(x.shape, x.stride(), 1, dtype, dtype, x.device, S._heuristics())
    bwd = S._bwd_plan(x.shape, x.stride(), 1, dtype, dtype, dtype, x.device, S._bwd_heuristics())
    for plan, kernel in ((fwd, S.K.softmax_fwd_rows_looped_kernel), (bwd, S.K.softmax_bwd_rows_looped_kernel)):
        assert plan.kernel is kernel
        assert plan.constexprs["L2_HINTS"] is (hints and dtype != torch.float32)
    _check_forward(x, -1)
    _check_backward(x, -1)


@pytest.mark.parametrize("rows", ["one", "many"])
def test_split_rows_over_many_rounds(rows, device, monkeypatch):
    """fp32 rows split over programs (SPLIT_ROWS), with more chunks than the persistent grid takes in one
    round, so every program walks several rounds and reuses its barrier words and partial buffers (two
    rounds' worth): forward and backward against float64; on CUDA 13 chunks per row (a K that is not a
    power of two). The barriers' counts are zero after the launch. bf16 rows are not split (measured
    slower). 'many' rows: 1000 on CUDA (a 1-warp grid holds 32 programs per SM), 100 under the
    interpreter (8 programs, one chunk per row)."""
    dtype = torch.float32
    rows = 1 if rows == "one" else (100 if INTERPRET else 1000)
    monkeypatch.setattr(S, "MAX_SINGLE_N", 64)
    monkeypatch.setattr(S, "MAX_SINGLE_N_BWD", 64)
    if not INTERPRET:
        monkeypatch.setattr(S, "SPLIT_ROWS_CHUNK_BYTES", 32 * dtype.itemsize)  # 32-element chunks
    zeros = []
    real_zeros = torch.zeros

    def zeros_spy(*args, **kwargs):
        zeros.append(real_zeros(*args, **kwargs))
        return zeros[-1]
    monkeypatch.setattr(torch, "zeros", zeros_spy)
    x = _rand((rows, 400), dtype, device)
    _check_forward(x, -1)
    _check_backward(x, -1)
    plans = [S._bwd_plan(x.shape, x.stride(), 1, dtype, dtype, dtype, x.device, S._bwd_heuristics()),
             S._fwd_plan(x.shape, x.stride(), 1, dtype, dtype, x.device, S._heuristics())]
    for plan in plans:
        assert isinstance(plan, S._RowsSplitLaunch) and plan.main is not None
        grid, k = plan.main.grid[0], plan.main.constexprs["K"]
        assert grid % k == 0
        if rows > 1:
            assert grid < rows * k, "expected several rounds"
    by_size = {plan.words: plan for plan in plans}
    scratches = [z for z in zeros if z.dtype == torch.int32 and z.numel() in by_size]
    assert len(scratches) >= len(plans), "the split kernels did not run"
    for scratch in scratches:
        main = by_size[scratch.numel()].main
        groups = main.grid[0] // main.constexprs["K"]
        assert not scratch[0:2 * groups:2].any(), "a barrier's count was left non-zero"
    xb = x.to(torch.bfloat16)
    assert not isinstance(S._fwd_plan(xb.shape, xb.stride(), 1, xb.dtype, xb.dtype, xb.device, S._heuristics()),
                          S._RowsSplitLaunch)
    assert not isinstance(S._bwd_plan(xb.shape, xb.stride(), 1, xb.dtype, xb.dtype, xb.dtype, xb.device,
                                      S._bwd_heuristics()), S._RowsSplitLaunch)


def test_split_rows_launch_refused_falls_back_to_the_unsplit_kernel(device, monkeypatch, caplog):
    """A cooperative launch the driver refuses (RuntimeError) runs the unsplit (here looped) kernel for that
    call and every later call of the plan, logged once; results unchanged."""
    monkeypatch.setattr(S, "MAX_SINGLE_N", 64)
    monkeypatch.setattr(S, "MAX_SINGLE_N_BWD", 64)
    x = _rand((5, 300), torch.float32, device)
    plan = S._fwd_plan(x.shape, x.stride(), 1, x.dtype, x.dtype, x.device, S._heuristics())
    assert isinstance(plan, S._RowsSplitLaunch) and plan.main is not None

    class Refused:
        grid = plan.main.grid

        def __call__(self, *tensors):
            raise RuntimeError("too many blocks in cooperative launch")
    monkeypatch.setattr(plan, "main", Refused())
    with caplog.at_level("WARNING", logger="tritonpatch"):
        for _ in range(2):
            _check_forward(x, -1)
    assert plan.main is None
    assert sum("cannot be launched here" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.skipif(INTERPRET, reason="CUDA only: co-resident programs and CUDA graphs")
def test_split_rows_by_default_and_in_a_cuda_graph():
    """With the default settings an fp32 row of 40000 is split over 10 co-resident programs, forward and
    backward, and the split launches replay correctly from a CUDA graph (each call's scratch is zeroed
    inside the graph)."""
    x = _rand((64, 40000), torch.float32, "cuda")
    dy = _rand((64, 40000), torch.float32, "cuda", scale=1.0)
    fwd = S._fwd_plan(x.shape, x.stride(), 1, x.dtype, x.dtype, x.device, S._heuristics())
    bwd = S._bwd_plan(x.shape, x.stride(), 1, x.dtype, x.dtype, x.dtype, x.device, S._bwd_heuristics())
    for plan in (fwd, bwd):
        assert isinstance(plan, S._RowsSplitLaunch) and plan.main.constexprs["K"] == 10
    y64 = torch.softmax(x.double(), -1)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up (plans, compiles) off the capture
        S._forward(x, 1, x.dtype)
        S._backward(y64.float(), dy, 1, x.dtype)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = S._forward(x, 1, x.dtype)
        dx = S._backward(y, dy, 1, x.dtype)
    for _ in range(2):
        y.fill_(float("nan"))
        dx.fill_(float("nan"))
        x.copy_(_rand(x.shape, x.dtype, "cuda"))
        graph.replay()
        torch.cuda.synchronize()
        assert rel_err(y, torch.softmax(x.double(), -1)) <= FP32_TOL
        yd = y.double()  # the backward's reference from the y it was given
        assert rel_err(dx, yd * (dy.double() - (yd * dy.double()).sum(-1, keepdim=True))) <= FP32_TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_32768_one_pass(dtype, device):
    """The widest rows held in registers, forward and backward (MAX_SINGLE_N = MAX_SINGLE_N_BWD = 32768)."""
    assert S.MAX_SINGLE_N == S.MAX_SINGLE_N_BWD == 32768
    x = _rand((2, 32768), dtype, device)
    _check_forward(x, -1)
    _check_backward(x, -1)


@pytest.mark.parametrize("shape,dim", [((2, 1500, 20), 1), ((3000, 3), 0)])
def test_wide_strided(shape, dim, device):
    """Long reductions over a non-last dim (looped strided kernel; one-pass 4096 x 4 tile for (3000, 3))."""
    x = _rand(shape, torch.float32, device)
    _check_forward(x, dim)
    _check_backward(x, dim)


@pytest.mark.parametrize("in_dtype,dtype", [
    (torch.bfloat16, torch.float32), (torch.float16, torch.float32),
    (torch.float32, torch.bfloat16), (torch.float32, torch.float16),
    (torch.bfloat16, torch.float16), (torch.float16, torch.bfloat16),
    (torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
])
@pytest.mark.parametrize("dim", [-1, 1])
def test_dtype_argument(in_dtype, dtype, dim, device, path):
    """torch.softmax(x, dim, dtype=d): cast first (fused), output in d, grad in x's dtype."""
    x = _rand((3, 40, 37), in_dtype, device, scale=4.0)
    y = _check_forward(x, dim, dtype)
    assert y.dtype == dtype
    _check_backward(x, dim, dtype)


def test_dtype_narrowing_rounds_like_torch(device):
    """fp32 -> bf16: the input is rounded to bf16 before the softmax, as torch's cast does.

    x = x0 + d: x0 is exact in bf16 (16 + k/8, one binade, a spread of 2 so no single element dominates)
    and |d| = 0.15 ulp, so the cast gives back x0 exactly. The two candidate results then differ by ~2%
    per element, against ~0.2% for the output's own bf16 rounding (ratio 0.06-0.09 over 40 draws), so
    the kernel's result must be the cast one."""
    x0 = 16 + 0.125 * torch.randint(0, 16, (4, 300), device=device).float()
    ulp = torch.exp2(torch.floor(torch.log2(x0)) - 7)
    sign = torch.where(torch.rand(x0.shape, device=device) < 0.5, -1.0, 1.0)
    x = x0 + 0.15 * ulp * sign  # also under half an ulp just below 16, where the ulp halves
    assert torch.equal(x.to(torch.bfloat16).float(), x0)
    y = S.softmax(x, -1, torch.bfloat16)
    err_cast = rel_err(y, torch.softmax(x0.double(), -1))
    err_nocast = rel_err(y, torch.softmax(x.double(), -1))
    assert err_cast < 0.3 * err_nocast, (err_cast, err_nocast)


# ----------------------------------------------------------------------------------------------------------
# special values
# ----------------------------------------------------------------------------------------------------------
def _masked(shape, dtype, device, fill):
    x = _rand(shape, dtype, device)
    x = x.masked_fill(torch.rand(shape, device=device) < 0.5, fill)
    x[1] = fill                               # a fully masked row
    x[2, : shape[1] // 2] = fill              # a half masked row (whole chunks masked in looped mode)
    x[3, 1:] = fill                           # a single survivor
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fill", ["-inf", "finfo.min"])
@pytest.mark.parametrize("layout", ["rows", "strided"])
def test_masks(dtype, fill, layout, device, path):
    value = float("-inf") if fill == "-inf" else torch.finfo(dtype).min
    x = _masked((6, 70), dtype, device, value)
    dim = -1
    if layout == "strided":
        x, dim = x.t().contiguous(), 0
    y = _check_forward(x, dim)
    if fill == "-inf":
        row = y[1] if layout == "rows" else y[:, 1]
        assert torch.isnan(row).all()            # torch: all -inf row -> NaN
    _check_backward(x, dim)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["rows", "strided"])
def test_inf_nan_huge(dtype, layout, device, path):
    x = _rand((8, 50), dtype, device)
    big = 1e30 if dtype != torch.float16 else 6e4
    x[0, 3] = float("inf")
    x[1, 5] = float("nan")
    x[2, 7] = float("inf"); x[2, 9] = float("-inf")
    x[3, 0] = float("inf"); x[3, 49] = float("inf")
    x[4, :] = float("-inf"); x[4, 10] = float("inf")
    x[5, 11] = big; x[5, 12] = -big
    x[6, :] = big
    x[7, ::2] = -big
    dim = -1
    if layout == "strided":
        x, dim = x.t().contiguous(), 0
    _check_forward(x, dim)
    _check_backward(x, dim)


# ----------------------------------------------------------------------------------------------------------
# degenerate shapes
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,dim", [((0, 5), 0), ((0, 5), 1), ((3, 0, 4), 0), ((3, 0, 4), 1),
                                       ((3, 0, 4), 2), ((0,), 0)])
def test_empty(shape, dim, device):
    x = torch.randn(shape, device=device)
    y = S.softmax(x, dim)
    assert y.shape == x.shape and y.dtype == x.dtype
    xa = x.clone().requires_grad_(True)
    (dx,) = torch.autograd.grad(S.softmax(xa, dim), xa, torch.randn(shape, device=device))
    assert dx.shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [0.7, -3.0, float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("dim", [0, -1])
def test_zero_dim(value, dtype, dim, device):
    x = torch.tensor(value, dtype=dtype, device=device)
    y = S.softmax(x, dim)
    ref = torch.softmax(x, dim)
    assert y.shape == () and y.dtype == ref.dtype
    assert torch.equal(y.isnan(), ref.isnan()) and (y.isnan() | (y == ref)).all()
    if value == 0.7:
        _check_backward(x, dim)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 3, 127, 1000, 4097])
def test_one_dim(width, dtype, device, path):
    if path == "looped" and width > 1000:
        pytest.skip("interpreter time")
    x = _rand((width,), dtype, device)
    _check_forward(x, 0)
    _check_forward(x, -1, torch.float32)
    _check_backward(x, -1)


# ----------------------------------------------------------------------------------------------------------
# layouts
# ----------------------------------------------------------------------------------------------------------
def _layouts(device, dtype):
    base = _rand((6, 10, 24), dtype, device)
    return {
        "transposed": base.transpose(1, 2),                       # last dim strided (rows are parallel)
        "row_slice": _rand((6, 10, 40), dtype, device)[:, :, 3:27],  # row stride 40, unaligned start
        "step": _rand((6, 10, 48), dtype, device)[:, :, ::2],       # column stride 2
        "channels_last": _rand((2, 5, 3, 4), dtype, device).to(memory_format=torch.channels_last),
        "permuted_heads": _rand((2, 7, 3, 8), dtype, device).permute(0, 2, 1, 3),  # (B,S,H,D)->(B,H,S,D)
        "expanded": _rand((1, 10, 24), dtype, device).expand(6, 10, 24),
        "transposed_2d": _rand((24, 10), dtype, device).t(),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["transposed", "row_slice", "step", "channels_last", "permuted_heads",
                                  "expanded", "transposed_2d"])
@pytest.mark.parametrize("dim", [-1, 1])
def test_non_contiguous(name, dim, dtype, device, path):
    x = _layouts(device, dtype)[name]
    assert not x.is_contiguous()
    y = _check_forward(x, dim)
    assert y.is_contiguous()
    _check_backward(x, dim)


@pytest.mark.parametrize("dim", [-1, 0])
def test_non_contiguous_grad(dim, device, path):
    """Upstream grads with odd strides: transposed and stride-0 (expanded across the other dim; a dy
    constant along ``dim`` has an exactly-zero gradient, where a relative error means nothing)."""
    x = _rand((12, 20), torch.float32, device)
    _check_backward(x, dim, dy=torch.randn(20, 12, device=device).t())
    dy = torch.randn(1, 20, device=device).expand(12, 20) if dim == -1 else \
        torch.randn(12, 1, device=device).expand(12, 20)
    _check_backward(x, dim, dy=dy)
    xa = x.clone().requires_grad_(True)
    dyc = torch.randn(12, 1, device=device).expand(12, 20) if dim == -1 else \
        torch.randn(1, 20, device=device).expand(12, 20)
    (dx,) = torch.autograd.grad(S.softmax(xa, dim), xa, dyc)   # dy constant along dim: dx ~ 0
    assert dx.abs().max() <= 1e-5 * dyc.abs().max()


def test_no_grad_path_and_requires_grad(device):
    x = _rand((3, 9), torch.bfloat16, device)
    with torch.no_grad():
        y = S.softmax(x.requires_grad_(True), -1, torch.float32)
    assert not y.requires_grad and y.dtype == torch.float32
    y = S.softmax(x, -1, torch.float32)
    assert y.requires_grad


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), data=st.data())
def test_random_shapes_and_permutations(shape, data):
    ndim = len(shape)
    dim = data.draw(st.integers(-ndim, ndim - 1))
    perm = data.draw(st.permutations(range(ndim)))
    dtype = data.draw(st.sampled_from(DTYPES))
    torch.manual_seed(data.draw(st.integers(0, 2**31 - 1)))  # reproducible per example
    x = _rand(shape, dtype, "cpu" if INTERPRET else "cuda").permute(*perm)
    _check_forward(x, dim)
    _check_backward(x, dim)


# ----------------------------------------------------------------------------------------------------------
# support check
# ----------------------------------------------------------------------------------------------------------
def test_unsupported_reasons(device):
    x = torch.randn(3, 4, device=device)
    assert S.unsupported(x, -1) is None
    assert S.unsupported(x, 0, torch.bfloat16) is None
    assert S.unsupported(torch.randn((), device=device), 0) is None
    assert S.unsupported(x, None) == "dim is None"
    assert S.unsupported(x.double(), 1) == "dtype torch.float64 is not supported"
    assert S.unsupported(x, 1, torch.float64) == "dtype torch.float64 is not supported"
    assert S.unsupported(x.to(torch.int32), 1) == "dtype torch.int32 is not supported"
    assert S.unsupported(x, 2) == "dim out of range"
    assert S.unsupported(x, -3) == "dim out of range"
    assert S.unsupported(torch.randn(3, 4, device="meta"), 1) == "device meta is not supported"
    assert S.unsupported(x.to_sparse(), 1) == "layout torch.sparse_coo is not supported"
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
        assert S.unsupported(x, 1) == "autocast is enabled"


def _hvp_condition(y64, dy64):
    """Componentwise condition number of the double backward below as a function of the saved output y
    (all it reads): || |dH/dy| |y| || / ||H|| for H(y) = the gradient w.r.t. x of sum(g^2), g = y * (dy -
    sum(dy * y)), in float64. About 1-10 on 3x5 draws: the second derivative cancels, so y's last-bit
    rounding alone moves H by u * cond."""
    def h_of(y):
        g = y * (dy64 - (dy64 * y).sum(-1, keepdim=True))
        (c,) = torch.autograd.grad(g.square().sum(), y, create_graph=True)
        return y * (c - (c * y).sum(-1, keepdim=True))  # softmax's vjp at y, as a function of y

    def h_flat(y):
        return h_of(y if y.requires_grad else y.requires_grad_(True)).reshape(-1)
    y = y64.detach().clone()
    jac = torch.autograd.functional.jacobian(h_flat, y).reshape(y.numel(), y.numel())
    h = h_flat(y.clone()).detach()
    return ((jac.abs() @ y.reshape(-1).abs()).norm() / h.norm()).item()


def test_double_backward_is_torchs(device):
    """create_graph=True: the backward is torch's formula on the saved output, so it differentiates again
    (it used to refuse); the second derivative matches float64 within fp32's bar for its condition number
    (our y and torch's differ in the last bit, and the second derivative amplifies that: on the CPU
    interpreter, 300 draws, ours at most 3.2 * FP32_U * cond, torch's own fp32 2.8; against a flat 1e-6 ours
    was above in 1% of draws, at 1.7e-6, as was once seen on the H200)."""
    x = _rand((3, 5), torch.float32, device)
    dy = torch.randn(3, 5, device=device)

    def hvp(f, dtype):
        xg = x.to(dtype).requires_grad_(True)
        (g,) = torch.autograd.grad(f(xg, -1), xg, dy.to(dtype), create_graph=True)
        return torch.autograd.grad(g.square().sum(), xg)[0]
    ref64, torch32 = hvp(torch.softmax, torch.float64), hvp(torch.softmax, torch.float32)
    cond = _hvp_condition(torch.softmax(x.double(), -1).cpu(), dy.double().cpu())
    # bar: max(FP32_TOL, FP32_COND_FACTOR * FP32_U * cond, TORCH_FACTOR * torch's own fp32 error)
    assert_matches(hvp(S.softmax, torch.float32), ref64, torch32, what="hvp", conditioned=True, cond=cond)
