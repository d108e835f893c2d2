"""The size policy: below the measured sizes a call falls back with "torch is faster at this size", and
training (an autograd node per call) needs a larger size than inference. Meta tensors stand in for the
large inputs (only their sizes are read)."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import INTERPRET
from tests.numerics import assert_matches
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


def test_no_size_policy_while_a_cuda_graph_is_captured(policy_on, monkeypatch):
    """While the current CUDA stream captures a graph, the size thresholds (host cost) do not apply: calls
    of every size take Triton, in inference and training; the large-K Linear+ReLU rule (GPU time) still
    does. Outside a capture the thresholds are back."""
    small = _meta(64, 1024)
    w, wg = _meta(1024), _meta(1024, requires_grad=True)
    monkeypatch.setattr(size_policy, "_capturing", lambda: True)
    assert not size_policy.capturing()  # no capture counted: CUDA is not even asked
    assert ln_op.unsupported(small, (1024,), w, w, 1e-5) == size_policy.REASON
    monkeypatch.setattr(size_policy.CAPTURES, "underway", 1)
    assert size_policy.capturing()
    assert ln_op.unsupported(small, (1024,), w, w, 1e-5) is None
    assert ln_op.unsupported(small, (1024,), wg, w, 1e-5) is None
    assert sm_op.unsupported(small, -1) is None
    assert sm_op.unsupported(_meta(64, 1024, requires_grad=True), -1) is None
    assert not lr_op.torch_is_faster(1, 8, 8)
    assert not lr_op.torch_is_faster(1, 8, 8, training=True)
    assert lr_op.torch_is_faster(8192, 16384, 4096)  # large K: measured in GPU time
    monkeypatch.setattr(size_policy, "_capturing", lambda: False)
    assert ln_op.unsupported(small, (1024,), w, w, 1e-5) == size_policy.REASON
    assert sm_op.unsupported(small, -1) == size_policy.REASON
    assert lr_op.torch_is_faster(1, 8, 8)


def test_triton_gemm_is_not_autotuned_inside_a_capture(monkeypatch, device):
    """Triton's autotuner times configs with device synchronizations, which a CUDA graph capture forbids:
    while one is under way, a Linear+ReLU forced onto the Triton GEMM falls back (CAPTURE_REASON) and a
    Triton backward takes cuBLAS; cuBLASLt's epilogue (CUDA's default) still fuses."""
    x = torch.randn(4, 8, device=device)
    w, b = torch.randn(6, 8, device=device), torch.randn(6, device=device)
    monkeypatch.setattr(common.SETTINGS, "size_policy", False)
    monkeypatch.setattr(lr_op, "BACKWARD_IMPL", "triton")
    for forced in ("triton", "cublaslt"):
        monkeypatch.setattr(common.SETTINGS, "linear_relu", forced)
        assert lr_op.unsupported(x, w, b) is None
    assert lr_op.use_triton_backward(4, 6, 8, x.dtype)
    monkeypatch.setattr(size_policy, "_capturing", lambda: True)
    monkeypatch.setattr(size_policy.CAPTURES, "underway", 1)
    assert lr_op.unsupported(x, w, b) is None  # cublaslt
    monkeypatch.setattr(common.SETTINGS, "linear_relu", "triton")
    assert lr_op.unsupported(x, w, b) == lr_op.CAPTURE_REASON
    assert not lr_op.use_triton_backward(4, 6, 8, x.dtype)


def test_capture_is_asked_only_for_device_tensors_under_the_bar(monkeypatch):
    """The patched layers' size-first decision asks about a capture (a CUDA stream query) only for a call
    on a CUDA tensor under the bar: never for a CPU tensor outside the interpreter (that would create a
    CUDA context for a CPU model), nor with the policy off."""
    from tritonpatch import layers

    def no_query():
        raise AssertionError("asked about a CUDA graph capture")

    monkeypatch.setattr(size_policy, "_capturing", no_query)
    monkeypatch.setattr(size_policy.CAPTURES, "underway", 1)
    monkeypatch.setattr(common.SETTINGS, "size_policy", True)
    monkeypatch.setattr(layers, "interpreting", lambda: False)
    assert not layers._below_size_bar(torch.ones(2, 2), "layer_norm", 16)
    monkeypatch.setattr(common.SETTINGS, "size_policy", False)
    assert not size_policy.torch_is_faster("layer_norm", 16, training=False)
    assert not lr_op.torch_is_faster(1, 8, 8)


def test_captures_are_counted_while_patched(monkeypatch):
    """While a patch is active, torch.cuda.CUDAGraph's capture_begin / capture_end are wrapped to count the
    captures under way (once per graph; a capture_end without a counted begin changes nothing; a failed
    begin is not counted, a failed end still ends the count; none with a CUDA driver that cannot load
    modules during a capture); on leaving, the very original methods are back. Fake originals stand in
    for CUDA's, the driver version is stubbed."""
    import tritonpatch
    from tritonpatch.patching import capture_watch

    calls = []

    def begin(graph, *a, **k):
        calls.append(("begin", graph))
        if getattr(graph, "fail", False):
            raise RuntimeError("begin failed")

    def end(graph, *a, **k):
        calls.append(("end", graph))
        if getattr(graph, "fail_end", False):
            raise RuntimeError("end failed")

    class Graph:
        fail = fail_end = False

    originals = (torch.cuda.CUDAGraph.__dict__["capture_begin"], torch.cuda.CUDAGraph.__dict__["capture_end"])
    captures = size_policy.CAPTURES
    monkeypatch.setattr(capture_watch, "driver_version", lambda: capture_watch.LOADS_IN_CAPTURE)
    with tritonpatch.patch(torch.nn.LayerNorm(4)):
        assert torch.cuda.CUDAGraph.capture_begin is capture_watch._capture_begin
        monkeypatch.setitem(capture_watch.SWAP._originals, "CUDAGraph.capture_begin", begin)
        monkeypatch.setitem(capture_watch.SWAP._originals, "CUDAGraph.capture_end", end)
        g1, g2, bad = Graph(), Graph(), Graph()
        bad.fail = True
        start = captures.underway
        torch.cuda.CUDAGraph.capture_begin(g1, capture_error_mode="global")
        torch.cuda.CUDAGraph.capture_begin(g1)
        torch.cuda.CUDAGraph.capture_begin(g2)
        assert captures.underway == start + 2
        with pytest.raises(RuntimeError, match="begin failed"):
            torch.cuda.CUDAGraph.capture_begin(bad)
        assert captures.underway == start + 2
        torch.cuda.CUDAGraph.capture_end(bad)
        torch.cuda.CUDAGraph.capture_end(g1)
        torch.cuda.CUDAGraph.capture_end(g1)
        assert captures.underway == start + 1
        g2.fail_end = True
        with pytest.raises(RuntimeError, match="end failed"):
            torch.cuda.CUDAGraph.capture_end(g2)
        assert captures.underway == start
        assert [c[0] for c in calls] == ["begin", "begin", "begin", "begin", "end", "end", "end", "end"]
        # a driver that cannot load modules during a capture: not counted (small calls fall back in it)
        monkeypatch.setattr(capture_watch, "driver_version", lambda: capture_watch.LOADS_IN_CAPTURE - 10)
        g3 = Graph()
        torch.cuda.CUDAGraph.capture_begin(g3)
        assert captures.underway == start
        torch.cuda.CUDAGraph.capture_end(g3)
        assert captures.underway == start and calls[-2:] == [("begin", g3), ("end", g3)]
        monkeypatch.setattr(capture_watch, "driver_version", lambda: capture_watch.LOADS_IN_CAPTURE)
        torch.cuda.CUDAGraph.capture_begin(g1)  # still under way when the patch ends ...
        assert captures.underway == start + 1
    assert (torch.cuda.CUDAGraph.__dict__["capture_begin"], torch.cuda.CUDAGraph.__dict__["capture_end"]) == originals
    assert captures.underway == 0  # ... and not counted after it


def test_driver_version_is_read_or_zero():
    """cuDriverGetVersion through ctypes: an int, 0 where there is no CUDA driver (the CPU runner); with a
    GPU, a real version, whose major is at least that of the CUDA runtime torch was built with."""
    from tritonpatch.patching import capture_watch

    version = capture_watch.driver_version()
    assert isinstance(version, int) and version >= 0
    if torch.cuda.is_available():
        assert version >= 1000
        major = int(torch.version.cuda.split(".")[0]) if torch.version.cuda else 0
        assert version // 1000 >= major  # a driver runs runtimes up to its own version


@pytest.mark.skipif(INTERPRET, reason="CUDA only: CUDA graphs")
def test_small_calls_take_triton_inside_a_cuda_graph(monkeypatch):
    """A patched block whose calls are all under the size bars: warmed up outside the capture (every call
    torch, "torch is faster"), then captured in a CUDA graph (every call Triton), forward and backward.
    Replays, with the outputs poisoned before each and new inputs copied into the captured ones, match
    float64 as closely as torch's own bf16 forward and backward do (tests.numerics.assert_matches)."""
    import tritonpatch

    monkeypatch.setattr(common.SETTINGS, "size_policy", True)
    monkeypatch.setattr(common.SETTINGS, "linear_relu", "auto")  # CUDA's default: cuBLASLt's epilogue
    width = 72
    block = _Block(width).to("cuda", torch.bfloat16)
    with torch.no_grad():
        for p_ in block.parameters():
            p_.copy_(torch.randn_like(p_) * 0.2 + (1.0 if p_ is block.norm.weight else 0.0))
    params = list(block.parameters())
    names = ["y", "dx", "dw_norm", "db_norm", "dw_fc", "db_fc"]
    x = torch.randn(40, width, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(40, width, device="cuda", dtype=torch.bfloat16)
    out: list = []

    def step(into: list) -> None:
        y = block(x)
        into[:] = [y, *torch.autograd.grad(y, [x, *params], dy)]

    with tritonpatch.patch(block) as p:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step([])
        torch.cuda.current_stream().wait_stream(side)
        assert all(rec.fallback_reasons == {size_policy.REASON: 1} and rec.triton_calls == 0 for rec in p.layers), p
        for rec in p.layers:
            rec.reset()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step(out)
        for rec in p.layers:  # the pair: cuBLASLt's fused epilogue, which the report notes as such
            assert rec.triton_calls + rec.fallback_calls == 1, p
            assert set(rec.fallback_reasons) <= {lr_op.CUBLASLT_NOTE}, p
    assert size_policy.CAPTURES.underway == 0
    ref_block = _Block(width).to("cuda", torch.float64)
    for _ in range(2):
        with torch.no_grad():
            x.copy_(torch.randn_like(x))
            for dst, src in zip(ref_block.parameters(), params):
                dst.copy_(src)
        for t in out:
            t.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        eager: list = []
        step(eager)  # unpatched now: torch's own bf16 results on the same inputs
        x64 = x.detach().double().requires_grad_()
        y64 = ref_block(x64)
        refs = [y64, *torch.autograd.grad(y64, [x64, *ref_block.parameters()], dy.double())]
        for name, got, ref, torch_out in zip(names, out, refs, eager):
            assert_matches(got, ref, torch_out, what=name)
