"""Property tests (hypothesis) for LayerNorm and Linear+ReLU: random shapes, dtypes, strides, against
a float64 reference, forward and backward. (Softmax has its own in test_ops_softmax.py.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import DEVICE
from tests.numerics import assert_matches
from tritonpatch.ops import layer_norm as ln_op
from tritonpatch.ops import linear_relu as lr_op

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _leaves(*ts):
    return [t.detach().requires_grad_() for t in ts]


def _grads(fn, inputs, dy):
    leaves = _leaves(*inputs)
    out = fn(*leaves)
    return [out, *torch.autograd.grad(out, leaves, dy)]


@settings(max_examples=20, deadline=None, derandomize=True)
@given(lead=st.lists(st.integers(1, 5), min_size=0, max_size=2), width=st.integers(1, 300),
       transpose=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1))
def test_layer_norm_property(lead, width, transpose, dtype, seed):
    torch.manual_seed(seed)
    rows = 1
    for d in lead:
        rows *= d
    x = torch.randn(width, rows, device=DEVICE).t().reshape(*lead, width) if transpose and lead else \
        torch.randn(*lead, width, device=DEVICE)
    x = x.to(dtype)
    w = torch.randn(width, device=DEVICE).to(dtype)
    b = torch.randn(width, device=DEVICE).to(dtype)
    dy = torch.randn(*lead, width, device=DEVICE).to(dtype)
    assert ln_op.unsupported(x, (width,), w, b, 1e-5) is None
    ours = _grads(lambda x, w, b: ln_op.layer_norm(x, (width,), w, b), (x, w, b), dy)
    ref = _grads(lambda x, w, b: F.layer_norm(x, (width,), w, b), [t.double() for t in (x, w, b)], dy.double())
    mine = _grads(lambda x, w, b: F.layer_norm(x, (width,), w, b), (x, w, b), dy)
    for name, o, r, t in zip(("out", "dx", "dw", "db"), ours, ref, mine):
        if width == 1 and name in ("dx", "dw"):  # exactly zero: no relative error to speak of
            assert torch.count_nonzero(o) == 0
            continue
        if width == 2 and name == "dx":
            # xhat is nearly +-1 whatever x is, so dx nearly cancels to zero (exactly, but for eps) and a
            # relative error is noise over noise: bound the absolute error by the size of the terms
            # that cancel, |dy * w| * rstd, times a few ulps, or 1.5x torch's own absolute error.
            xf = x.float()
            rstd = 1.0 / (xf.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
            scale = ((dy.float() * w.float()).abs() * rstd).max().item()
            bar = max(8 * torch.finfo(dtype).eps * scale, 1.5 * (t.double() - r).abs().max().item())
            assert (o.double() - r).abs().max().item() <= bar
            continue
        assert_matches(o, r, t, what=name, conditioned=True)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(m=st.integers(1, 40), k=st.integers(1, 48), n=st.integers(1, 40), bias=st.booleans(),
       transpose_x=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1))
def test_linear_relu_property(m, k, n, bias, transpose_x, dtype, seed):
    torch.manual_seed(seed)
    x = torch.randn(k, m, device=DEVICE).t() if transpose_x else torch.randn(m, k, device=DEVICE)
    x = x.to(dtype)
    w = (torch.randn(n, k, device=DEVICE) / k**0.5).to(dtype)
    b = torch.randn(n, device=DEVICE).to(dtype) if bias else None
    dy = torch.randn(m, n, device=DEVICE).to(dtype)
    inputs = (x, w, b) if bias else (x, w)

    def fused(x, w, b=None):
        return lr_op.linear_relu(x, w, b)

    def eager(x, w, b=None):
        return F.relu(F.linear(x, w, b))
    assert lr_op.unsupported(x, w, b) is None
    ours = _grads(fused, inputs, dy)
    ref = _grads(eager, [t.double() for t in inputs], dy.double())
    mine = _grads(eager, inputs, dy)
    for name, o, r, t in zip(("out", "dx", "dw", "db"), ours, ref, mine):
        if r.abs().max() == 0:  # all pre-activations negative: exact zeros on both sides
            assert torch.count_nonzero(o) == 0
            continue
        assert_matches(o, r, t, what=name, conditioned=True)
