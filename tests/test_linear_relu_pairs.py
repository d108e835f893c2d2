"""Linear+ReLU pairs: found in the model's own code, fused only where provably safe, always correct."""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tritonpatch
from tritonpatch import layers

D = 12


def lin() -> nn.Linear:
    return nn.Linear(D, D)


class ModuleRelu(nn.Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.fc, self.act = lin(), nn.ReLU(inplace=inplace)

    def forward(self, x):
        h = self.fc(x)
        h = self.act(h)
        return h * 2


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d, self.e = lin(), lin(), lin(), lin(), lin()

    def forward(self, x):
        x = F.relu(self.a(x))
        x = torch.relu(self.b(x))
        x = self.c(x).relu()
        h = self.d(x)
        h.relu_()
        g = self.e(h)
        g = F.relu(g, inplace=True)
        return g


class Reused(nn.Module):
    """The trap: the pre-activation is used again, so the pair must not be fused."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = lin()

    def forward(self, x):
        h = self.fc(x)
        return F.relu(h) + h


class SharedRelu(nn.Module):
    """One ReLU module called from a fused site and from a plain site."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act = lin(), nn.ReLU()

    def forward(self, x):
        y = self.act(self.fc(x))
        return self.act(y - 1.0) + self.act(x - 0.5)


class Branchy(nn.Module):
    """Control flow that changes between calls: one Linear, a fused site and a raw site."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act = lin(), nn.ReLU()
        self.raw = False

    def forward(self, x):
        if self.raw:
            return self.fc(x)  # the pre-activation itself: must not come back ReLU'd
        return self.act(self.fc(x))


def sequential() -> nn.Sequential:
    return nn.Sequential(lin(), nn.ReLU(), lin(), nn.ReLU(inplace=True), lin())


def check(model: nn.Module, device: str, n_pairs: int, calls: int = 1) -> tritonpatch.Patch:
    """Patched output and gradients equal the unpatched ones, and n_pairs pairs ran fused."""
    model = model.to(device)
    x = torch.randn(3, 5, D, device=device, requires_grad=True)
    ref = model(x)
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, *model.parameters()])
    with tritonpatch.patch(model) as p:
        for _ in range(calls):
            out = model(x)
        grads = torch.autograd.grad(out.square().sum(), [x, *model.parameters()])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    fused = [r for r in p.layers if r.kind == "linear_relu"]
    assert len(fused) == n_pairs, str(p)
    assert all(r.triton_calls == calls and r.fallback_calls == 0 for r in fused), str(p)
    return p


@pytest.mark.parametrize("inplace", [False, True])
def test_relu_module(device, inplace):
    p = check(ModuleRelu(inplace), device, 1)
    assert p.layers[0].name == "fc+act"


def test_functional_forms(device):
    p = check(Functional(), device, 5)
    assert sorted(r.name for r in p.layers) == ["a+F.relu", "b+torch.relu", "c+Tensor.relu",
                                                "d+Tensor.relu_", "e+F.relu"]
    assert F.relu.__module__ == "torch.nn.functional" and "relu" not in torch.Tensor.__dict__


def test_sequential(device):
    p = check(sequential(), device, 2)
    assert sorted(r.name for r in p.layers) == ["0+1", "2+3"]


def test_reused_preactivation_is_rejected(device):
    p = check(Reused(), device, 0)
    assert [(s.name, s.kind) for s in p.skipped] == [("fc+F.relu", "linear_relu")]
    assert "used elsewhere" in p.skipped[0].reason


def test_shared_relu_module(device):
    check(SharedRelu(), device, 1, calls=2)


def test_changing_control_flow_is_always_correct(device):
    model = Branchy().to(device)
    x = torch.randn(4, D, device=device)
    with tritonpatch.patch(model) as p:
        for raw in (False, True, False, True):
            model.raw = raw
            want = model.fc._tp_original_class.forward(model.fc, x)
            out = model(x)
            torch.testing.assert_close(out, want if raw else torch.relu(want), rtol=1e-5, atol=1e-5)
    assert p.layers[0].triton_calls == 2  # only the ReLU'd site fused


def test_fused_mark_is_per_thread(device):
    """The ReLU skips only the output fused in its own thread, once; a thread that never fused reads no
    mark (the class default: reading it never raises)."""
    out = layers.mark_fused(torch.randn(3, D, device=device))
    seen = {}

    def work() -> None:
        seen["mark"] = layers._tls.fused
        seen["taken"] = layers.take_fused(out)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == {"mark": None, "taken": False}
    assert layers.take_fused(out) and not layers.take_fused(out)


def test_hooks_on_the_linear_disable_fusion(device):
    model = ModuleRelu().to(device)
    seen = []
    model.fc.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    x = torch.randn(2, D, device=device)
    with tritonpatch.patch(model) as p:
        model(x)
    assert (seen[0] < 0).any()  # the hook saw the real pre-activation
    assert p.layers[0].fallback_reasons == {"the Linear has forward hooks": 1}


def test_bias_free_and_3d(device):
    model = ModuleRelu()
    model.fc = nn.Linear(D, D, bias=False)
    check(model, device, 1)


def test_relu_functions_restored_by_identity():
    originals = (F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)
    with tritonpatch.patch(Functional()):
        assert F.relu is not originals[0]
    assert (F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_) == originals
    assert "relu" not in torch.Tensor.__dict__ and "relu_" not in torch.Tensor.__dict__


def test_cublaslt_route_is_fused_and_reported(device, monkeypatch):
    """With cuBLASLt's epilogue as the provider, the pair is still one fused GEMM, reported as such."""
    from tritonpatch.ops import common, linear_relu as op
    monkeypatch.setattr(common.SETTINGS, "linear_relu", "cublaslt")
    model = ModuleRelu().to(device)
    x = torch.randn(3, D, device=device, requires_grad=True)
    ref = model(x)
    with tritonpatch.patch(model) as p:
        out = model(x)
        c = tritonpatch.compare(model, x.detach())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert p.layers[0].fallback_reasons == {op.CUBLASLT_NOTE: 1}
    assert c.max_rel_error < 1e-5 and c.layers[0].calls == 1


def test_pre_hooks_do_not_block_fusion(device):
    """A forward pre-hook (FSDP2 unshards parameters in one) sees only the input: fusion goes on."""
    model = ModuleRelu().to(device)
    seen = []
    model.fc.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    x = torch.randn(2, D, device=device)
    ref = model(x)
    with tritonpatch.patch(model) as p:
        out = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert seen == [x.shape, x.shape]
    assert p.layers[0].triton_calls == 1 and p.layers[0].fallback_calls == 0


@pytest.mark.parametrize("pre_hook", [False, True])
def test_fallbacks_are_counted_at_the_pair_site_only(device, pre_hook):
    """A pair's Linear that falls back is counted only for calls from its proved site (that code, that
    line), with or without a pre-hook between it and its caller; calls from another line are plain
    nn.Linear calls. The line of each call instruction is learned once (``CallSite.on_line``)."""
    model = Branchy().to(device).double()  # float64: every call falls back, with that reason
    if pre_hook:
        model.fc.register_forward_pre_hook(lambda m, args: None)
    x = torch.randn(4, D, device=device, dtype=torch.float64)
    with tritonpatch.patch(model) as p:
        for raw in (False, True, True, False, False, True):
            model.raw = raw
            want = model.fc._tp_original_class.forward(model.fc, x)
            torch.testing.assert_close(model(x), want if raw else torch.relu(want), rtol=0, atol=0)
        (site,) = layers.STATES[model.fc].sites
        learned = dict(site.on_line)
    record = p.layers[0]
    assert record.triton_calls == 0 and record.fallback_calls == 3, str(p)
    assert list(record.fallback_reasons) == ["dtype torch.float64 is not supported"]
    # the site's call instruction is on its line; the raw call's (walked to, since the probe missed) is not
    assert True in learned.values() and False in learned.values(), learned
