"""The size policy: below the measured sizes a call falls back with "torch is faster at this size", and
training (an autograd node per call) needs a larger size than inference. Meta tensors stand in for the
large inputs (only their sizes are read)."""
from __future__ import annotations

import pytest
import torch

from tritonpatch.ops import common, size_policy
from tritonpatch.ops import layer_norm as ln_op
from tritonpatch.ops import linear_relu as lr_op
from tritonpatch.ops import softmax as sm_op

MiB = 2 ** 20


@pytest.fixture
def policy_on(monkeypatch):
    """The policy as on a GPU: on, and the device check passed (meta tensors stand in for CUDA ones)."""
    monkeypatch.setattr(common.SETTINGS, "size_policy", True)
    monkeypatch.setattr(ln_op, "tensors_reason", lambda *t: None)
    monkeypatch.setattr(sm_op, "device_reason", lambda *t: None)
    monkeypatch.setattr(sm_op, "autocast_reason", lambda *t: None)


def _meta(*shape, dtype=torch.bfloat16, requires_grad=False):
    return torch.empty(*shape, dtype=dtype, device="meta", requires_grad=requires_grad)


def test_layer_norm_thresholds(policy_on):
    small = _meta(4096, 1024)                     # 8 MiB: an OPT-350m LayerNorm at batch 8 x 512
    large = _meta(32768, 1024)                    # 64 MiB
    w = _meta(1024)
    assert ln_op.unsupported(small, (1024,), w, w, 1e-5) == size_policy.REASON
    assert ln_op.unsupported(large, (1024,), w, w, 1e-5) is None
    wg = _meta(1024, requires_grad=True)          # training: the weight wants a gradient
    assert ln_op.unsupported(large, (1024,), wg, w, 1e-5) == size_policy.REASON
    with torch.no_grad():                         # ... unless autograd is off
        assert ln_op.unsupported(large, (1024,), wg, w, 1e-5) is None
    assert ln_op.unsupported(_meta(65536, 1024), (1024,), wg, w, 1e-5) is None  # 128 MiB


def test_softmax_thresholds(policy_on):
    attn = _meta(8, 16, 512, 512)                 # OPT eager attention scores, 64 MiB
    assert sm_op.unsupported(attn, -1, torch.float32) is None
    assert sm_op.unsupported(_meta(8, 16, 512, 128), -1) == size_policy.REASON  # 16 MiB
    assert sm_op.unsupported(_meta(8, 16, 512, 512, requires_grad=True), -1) == size_policy.REASON
    assert sm_op.unsupported(_meta(8, 32, 512, 512, requires_grad=True), -1) is None


def test_policy_off_under_the_interpreter_and_by_env(monkeypatch):
    """The environment is read into common.SETTINGS (at import, and by read_settings / environment())."""
    monkeypatch.setattr(common.SETTINGS, "size_policy", common.SETTINGS.size_policy)  # restored after
    monkeypatch.setattr(common, "interpreting", lambda: True)
    with common.environment(TRITONPATCH_SIZE_POLICY="1"):
        assert not size_policy.torch_is_faster("layer_norm", 1, training=True)
    monkeypatch.setattr(common, "interpreting", lambda: False)
    with common.environment(TRITONPATCH_SIZE_POLICY="1"):
        assert size_policy.torch_is_faster("layer_norm", 1, training=False)
        with common.environment(TRITONPATCH_SIZE_POLICY="0"):
            assert not size_policy.torch_is_faster("softmax", 1, training=False)
        assert size_policy.torch_is_faster("softmax", 1, training=False)  # put back on leaving
    monkeypatch.setenv("TRITONPATCH_SIZE_POLICY", "1")
    assert common.read_settings().size_policy
    monkeypatch.setenv("TRITONPATCH_SIZE_POLICY", "0")
    assert size_policy.torch_is_faster("softmax", 1, training=False)  # not re-read per call ...
    assert not common.read_settings().size_policy                     # ... but on request


def test_every_op_has_a_higher_bar_in_training():
    for op, (inference, training) in size_policy.MIN_SIZE.items():
        assert 0 < inference <= training, op


def test_measured_choices_log_at_info_real_fallbacks_warn(caplog):
    import logging

    from tritonpatch.patching.records import LayerRecord
    rec = LayerRecord("encoder.norm", "layer_norm")
    with caplog.at_level(logging.INFO, logger="tritonpatch"):
        rec.count(size_policy.REASON)
        rec.count(size_policy.REASON)
        rec.count("dtype torch.float64 is not supported")
    levels = [(r.levelno, r.getMessage().split(": ")[-1]) for r in caplog.records]
    assert levels == [(logging.INFO, size_policy.REASON),
                      (logging.WARNING, "dtype torch.float64 is not supported")]
    assert rec.fallback_reasons == {size_policy.REASON: 2, "dtype torch.float64 is not supported": 1}


class _Block(torch.nn.Module):
    """LayerNorm, a proved Linear -> ReLU pair and a softmax: one of each patched kind."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.fc = torch.nn.Linear(width, width)
        self.act = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc(self.norm(x)))
        return torch.softmax(h, -1)


def test_patched_layers_decide_small_calls_by_size_first(monkeypatch, device):
    """With the policy on, a call under the inference bar is counted "torch is faster" and runs torch's
    own op (bit for bit), before the full check; a call at or over the bar still gets the full check
    (here: the training bar sends it to torch too, the inference bar to Triton)."""
    import tritonpatch

    monkeypatch.setattr(common.SETTINGS, "size_policy", True)
    block = _Block(32).to(device, torch.bfloat16)  # fp32 without TF32 would fall back for its own reason
    x = torch.randn(6, 32, dtype=torch.bfloat16, device=device)
    with torch.no_grad():
        want = block(x)
    nbytes = x.nbytes
    flops = 2 * x.numel() * 32
    # everything under its bar: decided by size
    monkeypatch.setattr(size_policy, "MIN_SIZE", {"layer_norm": (nbytes + 1, nbytes + 1),
                                                  "softmax": (nbytes + 1, nbytes + 1),
                                                  "linear_relu": (flops + 1, flops + 1)})
    with tritonpatch.patch(block) as p, torch.no_grad():
        got = block(x)
    assert torch.equal(got, want)
    assert sorted(rec.kind for rec in p.layers) == ["layer_norm", "linear_relu", "softmax"]
    for rec in p.layers:
        assert rec.fallback_reasons == {size_policy.REASON: 1}, rec
    # at the inference bar, under the training bar: inference runs Triton, a grad-recording call torch
    monkeypatch.setattr(size_policy, "MIN_SIZE", {"layer_norm": (nbytes, 4 * nbytes),
                                                  "softmax": (nbytes, 4 * nbytes),
                                                  "linear_relu": (flops, 4 * flops)})
    with tritonpatch.patch(block) as p:
        with torch.no_grad():
            block(x)
        for rec in p.layers:  # on Triton (the pair on CUDA: fused in cuBLASLt, which the report notes)
            assert rec.triton_calls + rec.fallback_calls == 1, rec
            assert set(rec.fallback_reasons) <= {lr_op.CUBLASLT_NOTE}, rec
        for rec in p.layers:
            rec.reset()
        block(x.requires_grad_())
        assert all(rec.fallback_reasons == {size_policy.REASON: 1} for rec in p.layers), p


def test_layer_norm_fallback_runs_what_nn_layer_norm_runs(monkeypatch, device):
    """A falling-back LayerNorm runs what nn.LayerNorm.forward would: ``F.layer_norm`` as it is now (a
    replacement of it is called), seen as ``F.layer_norm`` by a TorchFunctionMode, and torch's result
    bit for bit (the plain case calls torch.layer_norm directly, as F.layer_norm does)."""
    import torch.nn.functional as F
    from torch import nn
    from torch.overrides import TorchFunctionMode

    import tritonpatch

    class Seen(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.funcs = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.funcs.append(func)
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(common.SETTINGS, "size_policy", True)
    monkeypatch.setattr(size_policy, "MIN_SIZE", {**size_policy.MIN_SIZE, "layer_norm": (2 ** 40, 2 ** 40)})
    ln = nn.LayerNorm(24).to(device)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(5, 24, device=device)
    want = F.layer_norm(x, (24,), ln.weight, ln.bias, ln.eps)
    with tritonpatch.patch(ln) as p:
        got = ln(x)
        with Seen() as plain_mode:
            ln._tp_original_class.forward(ln, x)
        with Seen() as patched_mode:
            ln(x)
        calls = []
        original = F.layer_norm

        def replaced(*args, **kwargs):
            calls.append(args[0])
            return original(*args, **kwargs)

        monkeypatch.setattr(F, "layer_norm", replaced)
        ln(x)
        assert len(calls) == 1 and calls[0] is x
    assert torch.equal(got, want)
    # (a mode also sees the size check's reads of x.nbytes and x.is_cuda: Tensor property getters)
    ops_seen = [[f for f in mode.funcs if f in (original, torch.layer_norm)] for mode in (plain_mode, patched_mode)]
    assert ops_seen == [[original], [original]]
    assert p.layers[0].fallback_reasons == {size_policy.REASON: 3}
