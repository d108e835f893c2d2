"""Patched models keep working with what people combine them with: grad modes, frozen weights,
gradient checkpointing, odd inputs."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tritonpatch
from tests.numerics import FP32_TOL, TORCH_FACTOR, rel_err


class Block(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.norm, self.fc, self.act, self.out = nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d)

    def forward(self, x):
        h = self.fc(self.norm(x))
        h = self.act(h)
        return F.softmax(self.out(h), dim=-1)


def kinds_on_triton(p: tritonpatch.Patch) -> set[str]:
    return {r.kind for r in p.layers if r.triton_calls}


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_grad_modes(device, mode):
    model = Block().to(device)
    x = torch.randn(3, 16, device=device)
    ref = model(x).detach()
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with tritonpatch.patch(model) as p, ctx:
        out = model(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert kinds_on_triton(p) == {"layer_norm", "linear_relu", "softmax"}


def test_frozen_weights_lora_style(device):
    """requires_grad=False parameters get no gradient; trainable ones match torch."""
    model = Block().to(device)
    for m in (model.norm, model.fc):
        m.requires_grad_(False)
    x = torch.randn(4, 16, device=device, requires_grad=True)
    dy = torch.randn(4, 16, device=device)
    trainable = [x, *(q for q in model.parameters() if q.requires_grad)]
    ref = torch.autograd.grad(model(x), trainable, dy)
    with tritonpatch.patch(model) as p:
        got = torch.autograd.grad(model(x), trainable, dy)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    assert model.norm.weight.grad is None and model.fc.weight.grad is None
    assert kinds_on_triton(p) == {"layer_norm", "linear_relu", "softmax"}


def test_hf_gradient_checkpointing(device):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  vocab_size=99, hidden_act="relu", hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    model = transformers.BertModel._from_config(cfg, attn_implementation="eager").to(device).train()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()  # the new name in transformers >= 5.2x, the old one before
    ids = torch.randint(0, 99, (2, 6), device=device)

    def grads():
        out = model(input_ids=ids).last_hidden_state
        return torch.autograd.grad(out.square().sum(), list(model.parameters()), allow_unused=True)
    ref = grads()
    with tritonpatch.patch(model) as p:
        got = grads()
    num = sum((g - r).double().square().sum() for g, r in zip(got, ref) if g is not None)
    den = sum(r.double().square().sum() for r in ref if r is not None)
    assert (num / den).sqrt() < 1e-5
    assert kinds_on_triton(p) == {"layer_norm", "linear_relu", "softmax"}


def test_nan_and_inf_placement_like_torch(device):
    model = Block().to(device).eval()
    x = torch.randn(5, 16, device=device)
    x[1, 3] = float("nan")
    x[3, 0] = float("inf")
    ref = model(x)
    with tritonpatch.patch(model):
        out = model(x)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    keep = ~torch.isnan(ref)
    torch.testing.assert_close(out[keep], ref[keep], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["expanded", "transposed", "empty"])
def test_odd_inputs(device, kind):
    model = Block().to(device).eval()
    if kind == "expanded":
        x = torch.randn(1, 16, device=device).expand(6, 16)  # stride 0 rows
    elif kind == "transposed":
        x = torch.randn(16, 6, device=device).t()
    else:
        x = torch.randn(0, 16, device=device)
    ref = model(x)
    with tritonpatch.patch(model) as p:
        out = model(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert all(r.fallback_calls == 0 for r in p.layers), str(p)


def test_unsupported_dtype_falls_back_correctly(device):
    model = Block().to(device).double()
    x = torch.randn(3, 16, device=device, dtype=torch.float64)
    ref = model(x)
    with tritonpatch.patch(model) as p:
        out = model(x)
    assert torch.equal(out, ref)  # the fallback is torch itself
    assert all(r.triton_calls == 0 and "torch.float64" in next(iter(r.fallback_reasons)) for r in p.layers)


def test_autocast_same_dtypes_and_values_as_torch(device):
    """Under autocast each patched kind computes in the dtype torch's own op would use (LayerNorm and
    softmax: fp32 on CUDA, as-is on CPU; Linear: the autocast dtype), on Triton, forward and backward."""
    torch.manual_seed(0)
    model = Block().to(device)
    x = torch.randn(6, 16, device=device, requires_grad=True)
    dy = torch.randn(6, 16, device=device)
    amp = torch.bfloat16
    seen: dict[str, torch.dtype] = {}

    def spy(name):
        return lambda m, i, o: seen.__setitem__(name, o.dtype)
    hooks = [model.norm.register_forward_hook(spy("norm")), model.out.register_forward_hook(spy("out"))]
    with torch.autocast(device_type=device, dtype=amp):
        ref = model(x)
    ref_dtypes = dict(seen)
    ref_grads = torch.autograd.grad(ref, [x, *model.parameters()], dy.to(ref.dtype))
    for h in hooks:
        h.remove()
    hooks = [model.norm.register_forward_hook(spy("norm")), model.out.register_forward_hook(spy("out"))]
    with tritonpatch.patch(model) as p:
        with torch.autocast(device_type=device, dtype=amp):
            out = model(x)
        grads = torch.autograd.grad(out, [x, *model.parameters()], dy.to(out.dtype))
    for h in hooks:
        h.remove()
    assert out.dtype == ref.dtype and seen == ref_dtypes
    assert all(r.fallback_calls == 0 for r in p.layers), str(p)
    assert kinds_on_triton(p) == {"layer_norm", "linear_relu", "softmax"}
    tol = dict(rtol=2e-2, atol=2e-2)  # bf16 compute on both sides, rounding order differs
    torch.testing.assert_close(out.float(), ref.float(), **tol)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.float(), r.float(), **tol)


def _second_order_bar(out, torch32, ref64) -> None:
    """Second derivatives: ours within FP32_TOL of float64, or within 1.5x torch's own fp32 error there."""
    for o, t, r in zip(out, torch32, ref64):
        assert (o is None) == (r is None)
        if r is not None:
            bar = max(FP32_TOL, TORCH_FACTOR * rel_err(t, r))
            assert rel_err(o, r) <= bar, (rel_err(o, r), bar)


def test_double_backward_matches_torch(device):
    """create_graph=True (gradient penalties, Hessian-vector products): every patched kind's backward is
    differentiable again, and the second derivatives match a float64 reference. Under create_graph the
    backwards run torch's formulas on the saved tensors; without it, the Triton kernels."""
    model = Block().to(device)
    x = torch.randn(4, 16, device=device) * 2 + 0.3
    v = torch.randn(4, 16, device=device)

    def second_order(m, dtype):
        xg = x.to(dtype).requires_grad_()
        (gx,) = torch.autograd.grad(m(xg), xg, v.to(dtype), create_graph=True)
        return torch.autograd.grad((gx * gx).sum(), [xg, *m.parameters()])

    ref64 = second_order(copy.deepcopy(model).double(), torch.float64)
    torch32 = second_order(model, torch.float32)
    with tritonpatch.patch(model) as p:
        out = second_order(model, torch.float32)
    assert kinds_on_triton(p) == {"layer_norm", "linear_relu", "softmax"}
    assert all(torch.isfinite(o).all() for o in out)
    _second_order_bar(out, torch32, ref64)


def test_double_backward_each_op(device):
    """The ops themselves (not only through a patched model): second derivatives match float64."""
    from tritonpatch.ops import layer_norm as ln_op
    from tritonpatch.ops import linear_relu as lr_op
    from tritonpatch.ops import softmax as sm_op
    x, w, b = torch.randn(3, 8, device=device) * 2, torch.randn(8, device=device) * 0.5 + 1, torch.randn(8, device=device)
    W, v = torch.randn(6, 8, device=device) / 3, torch.randn(3, 8, device=device)
    cases = {
        "layer_norm": (lambda f, x, w, b, W: f(x, (8,), w, b, 1e-5), ln_op.layer_norm, F.layer_norm, v),
        "softmax": (lambda f, x, w, b, W: f(x, -1), sm_op.softmax, torch.softmax, v),
        "softmax to fp32": (lambda f, x, w, b, W: f(x, -1, torch.float32), sm_op.softmax,
                            lambda x_, d, dt: torch.softmax(x_, d, dtype=dt), v),
        "linear_relu": (lambda f, x, w, b, W: f(x, W, b[:6]), lr_op.linear_relu,
                        lambda x_, W_, b_: F.relu(F.linear(x_, W_, b_)), v[:, :6]),
    }
    for name, (call, ours, theirs, vv) in cases.items():
        results = []
        for f, dtype in ((ours, torch.float32), (theirs, torch.float32), (theirs, torch.float64)):
            leaves = [t.to(dtype).requires_grad_() for t in (x, w, b, W)]
            y = call(f, *leaves)
            gs = torch.autograd.grad(y, leaves, vv.to(y.dtype), create_graph=True, allow_unused=True)
            penalty = sum((g ** 2).sum() for g in gs if g is not None and g.requires_grad)
            results.append(torch.autograd.grad(penalty, leaves, allow_unused=True))
        _second_order_bar(*results)


class _Scale(nn.Module):
    """A parametrization: the module's weight is 1.5 x the stored one (``parametrize`` makes ``weight`` a
    property and takes it out of ``_parameters``)."""

    def forward(self, w):
        return 1.5 * w


def test_parametrized_weights_are_read_through_the_parametrization(device):
    """The patched layers read parameters from ``_parameters`` on the fast path; a parametrized weight
    is not there and must still be the parametrization's value (weight norm, spectral norm, LoRA-style
    reparametrizations)."""
    from torch.nn.utils import parametrize
    model = Block().to(device)
    parametrize.register_parametrization(model.norm, "weight", _Scale())
    parametrize.register_parametrization(model.fc, "weight", _Scale())
    x = torch.randn(5, 16, device=device, requires_grad=True)
    dy = torch.randn(5, 16, device=device)
    model64 = copy.deepcopy(model).double()
    x64 = x.detach().double().requires_grad_()
    ref = model64(x64)
    ref_grads = torch.autograd.grad(ref, [x64, model64.norm.parametrizations.weight.original], dy.double())
    with tritonpatch.patch(model) as p:
        out = model(x)
        grads = torch.autograd.grad(out, [x, model.norm.parametrizations.weight.original], dy)
    assert kinds_on_triton(p) == {"layer_norm", "linear_relu", "softmax"}, str(p)
    assert rel_err(out, ref) < FP32_TOL
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) < FP32_TOL


def test_fallback_of_parametrized_layers_is_torch_bitwise(device):
    """A patched LayerNorm and Linear+ReLU pair that fall back (float64: unsupported dtype) call torch's
    functional op with the parameters they read, so a parametrized weight must give exactly what the
    unpatched module gives, forward and backward."""
    from torch.nn.utils import parametrize
    model = Block().to(device).double()
    parametrize.register_parametrization(model.norm, "weight", _Scale())
    parametrize.register_parametrization(model.fc, "weight", _Scale())
    x = torch.randn(5, 16, device=device, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(5, 16, device=device, dtype=torch.float64)
    leaves = [x, model.norm.parametrizations.weight.original, model.fc.parametrizations.weight.original]
    ref = model(x)
    ref_grads = torch.autograd.grad(ref, leaves, dy)
    with tritonpatch.patch(model) as p:
        out = model(x)
        grads = torch.autograd.grad(out, leaves, dy)
    fell_back = {r.kind for r in p.layers if r.fallback_calls and not r.triton_calls}
    assert {"layer_norm", "linear_relu"} <= fell_back, str(p)
    assert torch.equal(out, ref)
    for g, r in zip(grads, ref_grads):
        assert torch.equal(g, r)


def test_tensors_reason_agrees_with_the_checks_it_shortcuts(device):
    """common.tensors_reason decides the usual call (plain CUDA tensors, one float dtype, autocast off) on a
    short path; it must give the reason the four checks give, in their order, for every case. On CUDA the
    short path runs for the supported cases; on CPU (interpreter) everything takes the long path."""
    from tritonpatch.ops import common

    def chain(x, *ps):
        return (common.device_reason(x, *ps) or common.dtype_reason(x) or common.same_dtype_reason(x, *ps)
                or common.autocast_reason(x))
    x = torch.randn(4, 8, device=device)
    w, b = nn.Parameter(torch.randn(8, device=device)), torch.randn(8, device=device)
    cases = [(x, w, b), (x, None, None), (x, w, None), (x.half(), w, b), (x.double(), w.double(), None),
             (x.bfloat16(), w.bfloat16(), b.bfloat16()), (x.to(torch.int32), None, None),
             (x, w.half(), b), (x, w, b.double()), (x.cpu(), w, b), (x, w.cpu(), None),
             (torch.randn(4, 8, device="meta"), None, None), (x.as_subclass(nn.Buffer), w, b)]
    seen = set()
    for args in cases:
        got = common.tensors_reason(*args)
        assert got == chain(*args), args
        seen.add(got)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        assert common.tensors_reason(x, w, b) == chain(x, w, b) == "autocast is enabled"
    assert None in seen and len(seen) >= 5  # the cases reach both outcomes and several reasons


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_kernel_that_cannot_run_here_falls_back_to_torch(device, monkeypatch, kernel_cannot_run, where):
    """A Triton kernel that cannot be built or loaded on this GPU (here: OutOfResources, as for a kernel
    needing more shared memory than the GPU has) never reaches the user's model: in the forward, torch
    runs the call and every later call of that layer, counted with KERNEL_FAILED (the kernel is tried
    once per layer, not on every call); in the backward, torch's formula computes the gradients. Outputs
    and gradients are torch's."""
    from tritonpatch.ops import common
    from tritonpatch.ops import layer_norm as ln_op
    from tritonpatch.ops import linear_relu as lr_op
    from tritonpatch.ops import softmax as sm_op

    monkeypatch.setattr(common.SETTINGS, "size_policy", False)  # small shapes on Triton, also on CUDA
    monkeypatch.setattr(common.SETTINGS, "linear_relu", "triton")
    tried: dict[str, int] = {}

    def counted(op: str):
        def launch(*args, **kwargs):
            tried[op] = tried.get(op, 0) + 1
            return kernel_cannot_run(*args, **kwargs)
        return launch
    if where == "forward":
        for op, module, name in (("layer_norm", ln_op, "forward_rows"), ("softmax", sm_op, "_forward"),
                                 ("linear_relu", lr_op, "_forward")):
            monkeypatch.setattr(module, name, counted(op))
    else:
        for module, name in ((ln_op, "_backward_rows_triton"), (sm_op, "_backward_triton"), (lr_op, "relu_grad")):
            monkeypatch.setattr(module, name, kernel_cannot_run)
    torch.manual_seed(0)
    block = Block().to(device)
    x = torch.randn(6, 16, device=device)
    want = block(x)
    want_grads = torch.autograd.grad(want.pow(2).sum(), list(block.parameters()))
    with tritonpatch.patch(block) as p:
        for _ in range(2):
            got = block(x)
            grads = torch.autograd.grad(got.pow(2).sum(), list(block.parameters()))
            assert rel_err(got, want) <= FP32_TOL
            for g, w in zip(grads, want_grads):
                assert rel_err(g, w) <= FP32_TOL
    assert sorted(r.kind for r in p.layers) == ["layer_norm", "linear_relu", "softmax"]
    if where == "forward":
        assert tried == {"layer_norm": 1, "softmax": 1, "linear_relu": 1}
    for rec in p.layers:
        if where == "forward":
            assert rec.triton_calls == 0 and rec.fallback_reasons == {common.KERNEL_FAILED: 2}, rec
        else:
            assert rec.triton_calls == 2 and rec.fallback_calls == 0, rec
