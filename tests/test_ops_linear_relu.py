"""tritonpatch.ops.linear_relu against float64 references: y = relu(x @ W^T + b) and its gradients.

fp32 runs the exact ("ieee") path (TF32 off) and must land within 1e-6; fp16/bf16 must be within 1.5x of
torch's own error (``F.relu(F.linear(...))`` in that dtype on the same device). Both backward
implementations (cuBLAS GEMMs on g from the fused ``relu_grad`` pass, and the masked Triton GEMM) are
checked, and ``relu_grad`` itself against torch's ``threshold_backward`` bit for bit. Shapes are small: under the interpreter
every program runs in Python.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.numerics import assert_matches
from tritonpatch.ops import common
from tritonpatch.ops import linear_relu as op

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _ids(v):
    return str(v).replace("torch.", "") if isinstance(v, torch.dtype) else None


BACKWARDS = ["torch", "triton"]


@pytest.fixture(autouse=True)
def _no_tf32(monkeypatch):
    """fp32 tests check the exact path: TF32 off (restored after the test)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture(autouse=True, params=["triton", "cublaslt"])
def provider(request, monkeypatch):
    """Every test runs the Triton kernel and cuBLASLt's fused epilogue (same autograd, same checks)."""
    monkeypatch.setattr(common.SETTINGS, "linear_relu", request.param)
    return request.param


@pytest.fixture(params=BACKWARDS)
def backward_impl(request, monkeypatch):
    monkeypatch.setattr(op, "BACKWARD_IMPL", request.param)
    return request.param


def _rand(*shape, dtype, device, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float32, device=device) * scale).to(dtype)


def _leaf(t: torch.Tensor, requires_grad: bool = True) -> torch.Tensor:
    return t.detach().requires_grad_(requires_grad)


def _check(x, w, b, *, need=(True, True, True)):
    """Run ours, torch in x.dtype and float64 on the same inputs (forward + backward) and compare.

    x, w, b are leaves (any strides); ``need`` says which of them require grad.
    """
    dtype = x.dtype
    ins = [x, w, b]
    ours = [_leaf(t, r) if t is not None else None for t, r in zip(ins, need)]
    mine = [_leaf(t, r) if t is not None else None for t, r in zip(ins, need)]
    ref = [_leaf(t.double(), r) if t is not None else None for t, r in zip(ins, need)]
    assert op.unsupported(*ours) is None

    y = op.linear_relu(*ours)
    y_torch = F.relu(F.linear(*mine))
    y_ref = F.relu(F.linear(*ref))
    pre = F.linear(*[t.detach() if t is not None else None for t in ref])
    assert (pre > 0).any() and (pre < 0).any(), "test inputs must give both signs"
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert_matches(y, y_ref, y_torch, "out")

    if not any(r for t, r in zip(ins, need) if t is not None):
        return y
    dy = _rand(*y.shape, dtype=dtype, device=y.device)
    y.backward(dy)
    y_torch.backward(dy)
    y_ref.backward(dy.double())
    for name, a, t, r, req in zip(("grad_x", "grad_w", "grad_b"), ours, mine, ref, need):
        if a is None:
            continue
        if not req:
            assert a.grad is None, name
            continue
        assert a.grad is not None, name
        assert a.grad.dtype == dtype and a.grad.shape == a.shape, name
        assert_matches(a.grad, r.grad, t.grad, name)
    return y


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("shape", [((33, 70), 17), ((2, 17, 40), 96), ((64, 96), 33), ((70,), 19)])
def test_forward_backward(device, dtype, has_bias, shape, backward_impl):
    xs, n = shape
    k = xs[-1]
    x = _rand(*xs, dtype=dtype, device=device)
    w = _rand(n, k, dtype=dtype, device=device, scale=k ** -0.5)
    b = _rand(n, dtype=dtype, device=device) if has_bias else None
    _check(x, w, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_noncontiguous_x_and_weight(device, dtype, backward_impl):
    m, k, n = 37, 50, 29
    x = _rand(k, m, dtype=dtype, device=device).t()                  # (m, k), stride (1, m)
    w = _rand(k, n, dtype=dtype, device=device, scale=k ** -0.5).t()  # (n, k), stride (1, n)
    b = _rand(2 * n, dtype=dtype, device=device)[::2]                 # stride 2
    assert x.stride(-1) != 1 and w.stride(-1) != 1
    _check(x, w, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_ids)
def test_strided_weight_and_3d_permuted_x(device, dtype, backward_impl):
    s, bsz, k, n = 9, 3, 48, 40
    x = _rand(s, bsz, k, dtype=dtype, device=device).transpose(0, 1)  # (bsz, s, k), not flattenable
    w = _rand(n, 2 * k, dtype=dtype, device=device, scale=k ** -0.5)[:, ::2]  # stride (2k, 2)
    b = _rand(n, dtype=dtype, device=device)
    _check(x, w, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("lead", [(0,), (2, 0)])
def test_empty_rows(device, dtype, lead, backward_impl):
    k, n = 24, 17
    x = _leaf(_rand(*lead, k, dtype=dtype, device=device))
    w = _leaf(_rand(n, k, dtype=dtype, device=device))
    b = _leaf(_rand(n, dtype=dtype, device=device))
    assert op.unsupported(x, w, b) is None
    y = op.linear_relu(x, w, b)
    assert y.shape == (*lead, n) and y.dtype == dtype
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


@pytest.mark.parametrize("need", [(True, False, False), (False, True, False), (False, False, True),
                                  (False, True, True), (True, False, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=_ids)
def test_requires_grad_subsets(device, dtype, need, backward_impl):
    m, k, n = 21, 33, 26
    x = _rand(m, k, dtype=dtype, device=device)
    w = _rand(n, k, dtype=dtype, device=device, scale=k ** -0.5)
    b = _rand(n, dtype=dtype, device=device)
    _check(x, w, b, need=need)


def test_no_grad_needed(device):
    x = _rand(5, 8, dtype=torch.float32, device=device)
    w = _rand(6, 8, dtype=torch.float32, device=device)
    y = op.linear_relu(x, w, None)
    assert not y.requires_grad
    assert_matches(y, F.relu(F.linear(x.double(), w.double())))


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_relu_mask(device, dtype, backward_impl):
    """Half the columns get a large negative bias (all zero), half a large positive one (all pass)."""
    m, k, n = 40, 32, 34
    x = _leaf(_rand(m, k, dtype=dtype, device=device))
    w = _leaf(_rand(n, k, dtype=dtype, device=device, scale=0.01))
    sign = torch.tensor([1.0, -1.0], device=device).repeat(n // 2)
    b = _leaf((sign * (5 + torch.rand(n, device=device))).to(dtype))
    y = op.linear_relu(x, w, b)
    dead = sign < 0
    assert torch.equal(y[:, dead], torch.zeros_like(y[:, dead]))
    assert (y[:, ~dead] > 0).all()
    dy = _rand(m, n, dtype=dtype, device=device)
    y.backward(dy)
    assert torch.equal(b.grad[dead], torch.zeros_like(b.grad[dead]))
    assert torch.equal(w.grad[dead], torch.zeros_like(w.grad[dead]))
    # live columns: grad_b is the plain column sum of dy
    assert_matches(b.grad[~dead], dy[:, ~dead].double().sum(0), dy[:, ~dead].sum(0), "grad_b")


def test_saves_only_x_weight_output(device):
    x = _leaf(_rand(12, 16, dtype=torch.float32, device=device))
    w = _leaf(_rand(9, 16, dtype=torch.float32, device=device))
    b = _leaf(_rand(9, dtype=torch.float32, device=device))
    y = op.linear_relu(x, w, b)
    saved = y.grad_fn.saved_tensors
    assert len(saved) == 3
    assert saved[0].data_ptr() == x.data_ptr() and saved[1].data_ptr() == w.data_ptr()
    assert saved[2].data_ptr() == y.data_ptr()


def test_outputs_come_from_new_output(provider, device, monkeypatch, backward_impl):
    """Every kernel output is allocated by common.new_output (so poisoning covers it), and none is left NaN."""
    assert common.poisoning()
    made = []
    real = common.new_output

    def spy(*args, **kwargs):
        t = real(*args, **kwargs)
        made.append(t.data_ptr())
        return t

    monkeypatch.setattr(common, "new_output", spy)
    x = _leaf(_rand(35, 33, dtype=torch.float32, device=device))
    w = _leaf(_rand(37, 33, dtype=torch.float32, device=device))
    b = _leaf(_rand(37, dtype=torch.float32, device=device))
    y = op.linear_relu(x, w, b)
    if provider == "triton":  # cuBLASLt allocates its own output
        assert y.data_ptr() in made
    y.backward(torch.randn_like(y))
    if backward_impl == "triton":
        assert {x.grad.data_ptr(), w.grad.data_ptr(), b.grad.data_ptr()} <= set(made)
    else:  # cuBLAS GEMMs; grad_b from relu_grad's fused sum
        assert b.grad.data_ptr() in made
    for t in (y, x.grad, w.grad, b.grad):
        assert not torch.isnan(t).any()


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("m, n, row_pad", [(1, 5, 0), (37, 50, 3), (64, 256, 0), (200, 130, 0), (96, 128, 7)])
def test_relu_grad_is_threshold_backward(device, dtype, m, n, row_pad):
    """g bit for bit as torch's threshold_backward (0 where y <= 0, also -0.0 and NaN y as torch), grad_b
    against float64 within torch's own error; dy with padded rows (row stride > n); tiles with and
    without ragged edges (EVEN on and off)."""
    dy = _rand(m, n + row_pad, dtype=dtype, device=device)[:, :n]
    y = _rand(m, n, dtype=dtype, device=device)
    y[0, 0] = float("nan")
    y[-1, -1] = -0.0
    dy[0, -1] = -0.0
    y[0, -1] = 1.0
    g_torch = torch.ops.aten.threshold_backward(dy, y, 0)
    g, grad_b = op.relu_grad(dy, y)
    assert g.is_contiguous() and g.dtype == dtype
    assert torch.equal(g, g_torch) and torch.equal(g.signbit(), g_torch.signbit())
    assert g[0, 0] == dy[0, 0]  # a NaN y passes dy, as in torch
    assert grad_b.shape == (n,) and grad_b.dtype == dtype
    assert_matches(grad_b, g_torch.double().sum(0), g_torch.sum(0), "grad_b")


def test_relu_grad_with_dy_broadcast_over_rows(device):
    """dy expanded along the rows (row stride 0, unit column stride: e.g. the gradient of a sum over
    rows) is read as it is, row by row."""
    y = _rand(37, 50, dtype=torch.float32, device=device)
    dy = _rand(50, dtype=torch.float32, device=device).expand(37, 50)
    assert dy.stride() == (0, 1)
    g, grad_b = op.relu_grad(dy, y)
    g_torch = torch.ops.aten.threshold_backward(dy, y, 0)
    assert torch.equal(g, g_torch)
    assert_matches(grad_b, g_torch.double().sum(0), g_torch.sum(0), "grad_b")


def test_default_backward_fuses_grad_b(device, monkeypatch):
    """With cuBLAS GEMMs (the default) grad_b comes from relu_grad's fused sum when the bias needs a
    gradient, and torch's own pass runs when it does not (nothing to fuse) or dy is expanded (stride 0)."""
    monkeypatch.setattr(op, "BACKWARD_IMPL", "torch")
    calls = []
    real = op.relu_grad
    monkeypatch.setattr(op, "relu_grad", lambda *a: calls.append(True) or real(*a))
    x = _leaf(_rand(24, 16, dtype=torch.float32, device=device))
    w = _leaf(_rand(20, 16, dtype=torch.float32, device=device))
    b = _leaf(_rand(20, dtype=torch.float32, device=device))
    op.linear_relu(x, w, b).backward(_rand(24, 20, dtype=torch.float32, device=device))
    assert calls == [True]
    op.linear_relu(x, w, b.detach()).backward(_rand(24, 20, dtype=torch.float32, device=device))
    assert calls == [True]  # no bias gradient: threshold_backward
    x.grad = w.grad = b.grad = None
    op.linear_relu(x, w, b).sum().backward()  # dy expanded from a scalar: column stride 0
    assert calls == [True]
    mask = (F.linear(x.double(), w.double(), b.double()) > 0).double()  # dy = 1 where y > 0
    assert_matches(b.grad, mask.sum(0), None, "grad_b")
    assert_matches(w.grad, mask.t() @ x.double(), None, "grad_w")
    assert_matches(x.grad, mask @ w.double(), None, "grad_x")


def test_nan_propagates_like_torch(device):
    x = _rand(6, 20, dtype=torch.float32, device=device)
    x[2, 3] = float("nan")
    w = _rand(10, 20, dtype=torch.float32, device=device)
    y = op.linear_relu(x, w, None)
    assert torch.equal(torch.isnan(y), torch.isnan(F.relu(F.linear(x, w))))


def test_tf32_path_runs(device, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    assert op._input_precision(torch.float32) == "tf32"
    x = _rand(33, 64, dtype=torch.float32, device=device)
    w = _rand(40, 64, dtype=torch.float32, device=device, scale=0.125)
    y = op.linear_relu(x, w, None)
    ref = F.relu(F.linear(x.double(), w.double()))
    assert (y.double() - ref).norm() <= 2e-3 * ref.norm()


def test_input_precision_follows_allow_tf32(monkeypatch):
    assert op._input_precision(torch.float32) == "ieee"
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    assert op._input_precision(torch.float32) == "tf32"


def test_unsupported_reasons(device):
    x = torch.randn(4, 8, device=device)
    w = torch.randn(5, 8, device=device)
    b = torch.randn(5, device=device)
    assert op.unsupported(x, w, b) is None
    assert op.unsupported(x.double(), w.double(), b.double()) == "dtype torch.float64 is not supported"
    assert op.unsupported(x.half(), w, b) == "mixed dtypes (torch.float16 input, torch.float32 parameter)"
    assert op.unsupported(x, w, b.half()) == "mixed dtypes (torch.float32 input, torch.float16 parameter)"
    assert op.unsupported(x.to("meta"), w.to("meta"), None) == "device meta is not supported"
    assert op.unsupported(x, w.to("meta"), b) == "tensors are on different devices"
    assert op.unsupported(x, torch.randn(5, 7, device=device), b) == "shapes do not match a linear layer"
    assert op.unsupported(x, w, torch.randn(4, device=device)) == "shapes do not match a linear layer"
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        assert op.unsupported(x, w, b) == "autocast is enabled"


def test_size_policy_and_fp32_policy(monkeypatch):
    """Off under the interpreter; on a GPU, small problems (a higher bar in training) and fp32 without
    TF32 fall back to torch."""
    monkeypatch.setattr(common.SETTINGS, "size_policy", True)
    monkeypatch.setattr(common.SETTINGS, "linear_relu", "triton")  # the fp32 rule is the Triton kernel's
    assert op.torch_is_faster(1, 8, 8)
    assert not op.torch_is_faster(8192, 4096, 1024)          # 68.7 GFLOP: measured faster patched
    assert not op.torch_is_faster(8192, 3072, 768)           # 38.7 GFLOP: the smallest measured win
    assert op.torch_is_faster(4096, 4096, 1024)              # 34.4 GFLOP (OPT-350m FFN at 8 x 512)
    assert op.torch_is_faster(8192, 4096, 1024, training=True)  # but not in training at that size
    assert not op.torch_is_faster(16384, 4096, 1024, training=True)
    assert op.torch_is_faster(8192, 16384, 4096)               # large K: plain GEMM + ReLU is faster
    assert not op.torch_is_faster(128 * 1024, 4096, 1024)
    monkeypatch.setattr(common, "device_reason", lambda *t: None)  # pretend the CPU tensors are CUDA ones
    tiny = torch.randn(2, 8), torch.randn(3, 8), None
    assert op.unsupported(*tiny) == "fp32 without TF32 is faster in torch"
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    assert op.unsupported(*tiny) == "torch is faster at this size"
    monkeypatch.setattr(common, "interpreting", lambda: True)
    assert not common.read_settings().size_policy  # off under the interpreter (SETTINGS restored after)
    assert not op.torch_is_faster(1, 8, 8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only check")
def test_cpu_without_interpreter_is_unsupported(monkeypatch):
    monkeypatch.setattr(common, "interpreting", lambda: False)
    x, w = torch.randn(2, 8), torch.randn(3, 8)
    assert op.unsupported(x, w, None) == "device cpu needs CUDA (or TRITON_INTERPRET=1)"
