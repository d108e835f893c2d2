"""Softmax routing: calls a patched model makes go to Triton, everything else stays torch, bitwise."""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tritonpatch
from tritonpatch.patching import softmax_routing

ORIGINALS = (F.softmax, torch.softmax, torch.Tensor.softmax)


class Forms(nn.Module):
    """One softmax of every call form, in submodules with their own names."""

    def __init__(self) -> None:
        super().__init__()
        self.sm = nn.Softmax(dim=1)
        self.inner = Inner()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [F.softmax(x, dim=-1), torch.softmax(x, 0), x.softmax(-1, dtype=torch.float32),
                self.sm(x), *self.inner(x)]


class Inner(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.nn.functional.softmax(x, dim=0), x.softmax(dim=1)]


def assert_restored() -> None:
    assert (F.softmax, torch.softmax, torch.Tensor.softmax) == ORIGINALS
    assert F.softmax is ORIGINALS[0] and torch.softmax is ORIGINALS[1]
    assert torch.Tensor.softmax is ORIGINALS[2] and "softmax" not in torch.Tensor.__dict__


def test_every_form_routed_and_attributed(device):
    model = Forms()
    x = torch.randn(6, 10, device=device)
    refs = [torch.softmax(x, -1), torch.softmax(x, 0), torch.softmax(x, -1, dtype=torch.float32),
            torch.softmax(x, 1), torch.softmax(x, 0), torch.softmax(x, 1)]
    with tritonpatch.patch(model) as p:
        outs = model(x)
    assert_restored()
    for o, r in zip(outs, refs):
        torch.testing.assert_close(o, r, rtol=1e-6, atol=1e-7)
    counts = {r.name: (r.kind, r.triton_calls, r.fallback_calls) for r in p.layers}
    assert counts == {"": ("softmax", 3, 0), "sm": ("softmax", 1, 0), "inner": ("softmax", 2, 0)}


def test_calls_outside_the_model_stay_torch(device):
    model, other = Forms(), Forms()
    x = torch.randn(4, 7, device=device)
    want = [ORIGINALS[0](x, dim=-1), ORIGINALS[1](x, 0), ORIGINALS[2](x, -1)]
    with tritonpatch.patch(model) as p:
        got = [F.softmax(x, dim=-1), torch.softmax(x, 0), x.softmax(-1)]
        other_out = other(x)
        model(x)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert torch.equal(other_out[0], ORIGINALS[0](x, dim=-1))
    assert sum(r.triton_calls for r in p.layers) == 6  # only the patched model's own calls
    assert_restored()


def test_restored_by_identity_after_exception():
    with pytest.raises(RuntimeError):
        with tritonpatch.patch(Forms()):
            assert F.softmax is not ORIGINALS[0]
            raise RuntimeError
    assert_restored()


def test_nested_patches_restore_at_the_last(device):
    a, b = Forms(), Forms()
    pa = tritonpatch.patch(a)
    pb = tritonpatch.patch(b)
    pa.unpatch()
    assert F.softmax is not ORIGINALS[0]  # b still routes
    b(torch.randn(3, 4, device=device))
    assert sum(r.triton_calls for r in pb.layers) == 6
    pb.unpatch()
    assert_restored()


def test_unsupported_call_falls_back_with_reason(device):
    class Legacy(nn.Module):
        def forward(self, x):
            return F.softmax(x.double(), dim=-1), F.softmax(x, dim=None, _stacklevel=5) if x.dim() == 3 else x

    model = Legacy()
    x = torch.randn(2, 3, 4, device=device)
    with pytest.warns(UserWarning):  # torch's own warning for the implicit dim
        with tritonpatch.patch(model) as p:
            out = model(x)
    assert torch.equal(out[0], ORIGINALS[0](x.double(), dim=-1))
    rec = p.layers[0]
    assert rec.fallback_calls == 2
    assert set(rec.fallback_reasons) == {"dtype torch.float64 is not supported", "dim is None"}


def test_two_threads_two_models(device):
    models = [Forms(), Forms()]
    patches = [tritonpatch.patch(m) for m in models]
    errors: list[BaseException] = []
    n = 5

    def work(i: int) -> None:
        try:
            for _ in range(n):
                x = torch.randn(5, 6, device=device)
                outs = models[i](x)
                torch.testing.assert_close(outs[0], ORIGINALS[0](x, dim=-1), rtol=1e-6, atol=1e-7)
                # A call outside the model, in the same thread, stays torch.
                assert torch.equal(F.softmax(x, dim=0), ORIGINALS[0](x, dim=0))
        except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in patches:
        p.unpatch()
    assert not errors, errors
    for p in patches:
        assert sum(r.triton_calls for r in p.layers) == 6 * n
        assert sum(r.fallback_calls for r in p.layers) == 0
    assert_restored()


def test_backward_through_routed_softmax(device):
    model = Forms()
    x = torch.randn(4, 9, device=device, requires_grad=True)
    ref = model(x)
    cotangents = [torch.randn_like(o) for o in ref]  # random: the gradient of a plain sum is zero
    ref_grad, = torch.autograd.grad(ref, x, cotangents)
    with tritonpatch.patch(model) as p:
        outs = model(x)
        grad, = torch.autograd.grad(outs, x, cotangents)
    assert sum(r.triton_calls for r in p.layers) == 6
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_routing_scope_registry_is_cleaned(device):
    model = Forms()
    with tritonpatch.patch(model):
        assert softmax_routing.routed(model.inner)
    assert not softmax_routing.routed(model.inner)
