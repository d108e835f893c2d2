"""Swap semantics of patch()/unpatch() on live models: identity, state_dict, hooks, restore, reports."""
from __future__ import annotations

import copy
import logging
import pickle

import pytest
import torch
from torch import nn

import tritonpatch
from tritonpatch.patching import softmax_routing


class Block(nn.Module):
    def __init__(self, d: int = 24) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.fc(x))) + x


class Net(nn.Module):
    def __init__(self, d: int = 24) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(d) for _ in range(2))
        self.final = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.final(x)


class PlainSub(nn.LayerNorm):
    """Keeps nn.LayerNorm.forward: patched."""


class OwnForward(nn.LayerNorm):
    """Overrides forward: left alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def make(device: str, d: int = 24) -> nn.Module:
    net = Net(d).to(device)
    with torch.no_grad():  # non-trivial affine parameters
        for m in net.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_()
                m.bias.normal_()
    return net


def snapshot(model: nn.Module) -> list[tuple[str, type, dict]]:
    return [(n, type(m), dict(m.__dict__)) for n, m in model.named_modules()]


def assert_same_snapshot(a, b) -> None:
    assert len(a) == len(b)
    for (na, ta, da), (nb, tb, db) in zip(a, b):
        assert na == nb and ta is tb, (na, ta, tb)
        assert da.keys() == db.keys(), (na, set(da) ^ set(db))
        for k in da:
            assert da[k] is db[k], (na, k)


def test_patch_runs_triton_and_keeps_identity(device):
    model = make(device).eval()
    x = torch.randn(3, 5, 24, device=device)
    ref = model(x)
    params = {n: p for n, p in model.named_parameters()}
    sd_before = model.state_dict()
    before = snapshot(model)
    hook_calls = []
    model.final.register_forward_hook(lambda m, i, o: hook_calls.append(o.shape))
    with tritonpatch.patch(model) as p:
        assert all(isinstance(m, nn.LayerNorm) for m in (model.final, model.blocks[0].norm))
        assert type(model.final).__name__ == "LayerNorm"
        assert {n: q for n, q in model.named_parameters()} == params
        assert all(params[n] is q for n, q in model.named_parameters())
        sd = model.state_dict()
        assert list(sd) == list(sd_before)
        assert all(sd[k].data_ptr() == sd_before[k].data_ptr() for k in sd)
        out = model(x)
        assert hook_calls == [x.shape]
        names = sorted(r.name for r in p.layers if r.kind == "layer_norm")
        assert names == ["blocks.0.norm", "blocks.1.norm", "final"]
        assert all(r.triton_calls == 1 and r.fallback_calls == 0 for r in p.layers if r.kind == "layer_norm")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # Restored exactly: classes, every __dict__ entry, and bitwise outputs.
    hook_calls.clear()
    after = model(x)
    assert torch.equal(after, ref)
    assert hook_calls == [x.shape]
    for n, m in model.named_modules():
        if isinstance(m, nn.LayerNorm):
            assert type(m) is nn.LayerNorm
    # The hook added above is the only difference in __dict__ contents; compare the rest.
    assert_same_snapshot(before, snapshot(model))


def test_restore_on_exception(device):
    model = make(device)
    before = snapshot(model)
    with pytest.raises(ValueError, match="boom"):
        with tritonpatch.patch(model):
            raise ValueError("boom")
    assert_same_snapshot(before, snapshot(model))
    assert tritonpatch.patch(model).unpatch() is None  # patchable again


def test_optimizer_built_before_patch_trains_same_tensors(device):
    model = make(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = model.final.weight
    w0 = w.detach().clone()
    x = torch.randn(4, 24, device=device)
    with tritonpatch.patch(model) as p:
        model(x).square().sum().backward()
        assert model.final.weight.grad is not None
        opt.step()
        assert p.layers[0].triton_calls >= 1
    assert model.final.weight is w
    assert not torch.equal(w.detach(), w0)


def test_load_state_dict_while_patched(device):
    model = make(device).eval()
    other = make(device).eval()
    x = torch.randn(2, 24, device=device)
    with tritonpatch.patch(model):
        model.load_state_dict(other.state_dict())
        torch.testing.assert_close(model(x), other(x), rtol=1e-5, atol=1e-5)


def test_subclasses(device):
    model = nn.Sequential(PlainSub(8), OwnForward(8)).to(device)
    with tritonpatch.patch(model) as p:
        assert isinstance(model[0], PlainSub) and type(model[0]) is not PlainSub
        assert type(model[1]) is OwnForward
        assert [r.name for r in p.layers] == ["0"]
        assert [(s.name, s.kind) for s in p.skipped] == [("1", "layer_norm")]
        assert "overrides forward" in str(p)
        model(torch.randn(2, 8, device=device))
    assert type(model[0]) is PlainSub


@pytest.mark.parametrize("kwargs, shape", [
    ({"elementwise_affine": False}, (6,)),
    ({"bias": False}, (6,)),
    ({}, (3, 4)),
])
def test_layer_norm_variants(device, kwargs, shape):
    ln = nn.LayerNorm(shape, **kwargs).to(device)
    if ln.weight is not None:
        with torch.no_grad():
            ln.weight.normal_()
    x = torch.randn(5, *shape, device=device, requires_grad=True)
    ref = ln(x)
    ref_grads = torch.autograd.grad(ref.sum() * 1.0, [x, *ln.parameters()])
    with tritonpatch.patch(ln) as p:
        out = ln(x)
        grads = torch.autograd.grad(out.sum() * 1.0, [x, *ln.parameters()])
        assert p.layers[0].name == "" and p.layers[0].triton_calls == 1
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def test_double_patch_is_a_clear_error(device):
    model = make(device)
    with tritonpatch.patch(model):
        with pytest.raises(tritonpatch.AlreadyPatchedError, match="already patched"):
            tritonpatch.patch(model)
        with pytest.raises(tritonpatch.AlreadyPatchedError, match="already patched"):
            tritonpatch.patch(model.blocks[0])
    tritonpatch.patch(model).unpatch()


def test_unpatch_without_handle_and_idempotent(device):
    model = make(device)
    before = snapshot(model)
    p = tritonpatch.patch(model)
    assert type(model.final) is not nn.LayerNorm
    assert tritonpatch.unpatch(model) is True
    assert tritonpatch.unpatch(model) is False
    p.unpatch()
    p.unpatch()
    assert_same_snapshot(before, snapshot(model))
    assert "restored" in repr(p)


def test_deepcopy_and_pickle_give_working_models(device):
    model = make(device).eval()
    x = torch.randn(2, 24, device=device)
    ref = model(x)
    with tritonpatch.patch(model):
        clone = copy.deepcopy(model)
        loaded = pickle.loads(pickle.dumps(model))
    for m in (clone, loaded):
        assert type(m.final) is nn.LayerNorm
        assert torch.equal(m(x), ref)
        tritonpatch.patch(m).unpatch()  # not marked as patched


def test_state_dict_saved_while_patched_loads_unpatched(device, tmp_path):
    model = make(device)
    with tritonpatch.patch(model):
        torch.save(model.state_dict(), tmp_path / "sd.pt")
    fresh = make(device)
    fresh.load_state_dict(torch.load(tmp_path / "sd.pt"))
    x = torch.randn(2, 24, device=device)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_fallback_reason_counted_and_logged_once(device, caplog):
    model = make(device).double()
    x = torch.randn(2, 24, device=device, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="tritonpatch"):
        with tritonpatch.patch(model) as p:
            model(x)
            model(x)
    final = next(r for r in p.layers if r.name == "final")
    assert final.triton_calls == 0 and final.fallback_calls == 2
    assert final.fallback_reasons == {"dtype torch.float64 is not supported": 2}
    msgs = [r.getMessage() for r in caplog.records if "'final'" in r.getMessage()]
    assert len(msgs) == 1 and "torch.float64" in msgs[0]
    assert "dtype torch.float64 is not supported (x2)" in str(p)


def test_options_select_kinds(device):
    model = make(device)
    with tritonpatch.patch(model, layer_norm=False, softmax=False) as p:
        assert type(model.final) is nn.LayerNorm
        assert p.layers == []
        assert not softmax_routing.routed(model)


def test_not_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        tritonpatch.patch(lambda x: x)  # type: ignore[arg-type]


def test_kill_switch(device, monkeypatch):
    monkeypatch.setenv("TRITONPATCH_DISABLE", "1")
    model = make(device)
    with tritonpatch.patch(model) as p:
        assert type(model.final) is nn.LayerNorm
        model(torch.randn(2, 24, device=device))
    assert p.layers == [] and "TRITONPATCH_DISABLE" in str(p)


def test_compare_layers_outputs_and_grads(device):
    model = make(device).train()  # dropout on: both runs must draw the same masks
    x = torch.randn(3, 24, device=device)
    rng = torch.get_rng_state()
    c = tritonpatch.compare(model, x, backward=True)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training
    assert type(model.final) is nn.LayerNorm  # compare patched and restored it
    assert sorted(r.name for r in c.layers) == ["blocks.0.norm", "blocks.1.norm", "final"]
    assert all(r.calls == 1 and r.triton_calls == 1 for r in c.layers)
    assert c.max_rel_error < 1e-5 and all(r.rel_error < 1e-5 for r in c.layers)
    assert c.grad_rel_error is not None and c.grad_rel_error < 1e-4
    assert len(c.grads) == len(list(model.parameters()))
    text = str(c)
    assert "blocks.1.norm" in text and "parameter grads" in text


def test_compare_detects_a_wrong_kernel(device, monkeypatch):
    """compare() must report a real difference, not zeros by construction."""
    from tritonpatch.ops import layer_norm as op
    model = make(device).eval()
    real = op.layer_norm
    monkeypatch.setattr(op, "layer_norm", lambda *a, **k: real(*a, **k) * 1.01)
    c = tritonpatch.compare(model, torch.randn(3, 24, device=device))
    assert c.max_rel_error > 1e-3
    assert all(r.rel_error > 1e-3 for r in c.layers)


def test_compare_keeps_counts_of_an_active_patch(device):
    model = make(device)
    x = torch.randn(2, 24, device=device)
    with tritonpatch.patch(model) as p:
        model(x)
        counts = [(r.triton_calls, r.fallback_calls) for r in p.layers]
        tritonpatch.compare(model, x)
        assert [(r.triton_calls, r.fallback_calls) for r in p.layers] == counts
        assert type(model.final) is not nn.LayerNorm  # still patched
