"""The custom ops of tritonpatch.ops.library: registration (opcheck), torch.compile with fullgraph=True.

* ``opcheck`` on each op: schema, fake (meta) implementation, autograd registration, AOT dispatch.
* Small functions calling the ops, compiled with ``fullgraph=True`` (``aot_eager``; Inductor where the
  graph needs no C++ kernel of its own, which keeps CPU compiles at ~2 s): forward and backward against a
  float64 reference (fp32), or bitwise against the eager Triton op (fp16/bf16: the same kernels run, and
  the eager op's own tests hold them to the half-precision bars). A recording backend checks that the
  Dynamo graph (one, so no graph break) and AOTAutograd's forward/backward graphs hold the custom ops.
* ``traced_unsupported`` on fake tensors gives the reasons the ops' ``unsupported()`` give on real ones.
* A tiny model under ``tritonpatch.patch`` compiles with ``fullgraph=True``: LayerNorm and softmax trace
  into the custom ops, and it matches the unpatched eager model.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.numerics import assert_matches
from tritonpatch.ops import layer_norm as layer_norm_op
import tritonpatch
from tritonpatch.ops import library
from tritonpatch.ops import linear_relu as linear_relu_op
from tritonpatch.ops import softmax as softmax_op

pytestmark = pytest.mark.skipif(not library.AVAILABLE, reason="torch.library.custom_op needs torch >= 2.4")

OPS = torch.ops.tritonpatch


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _tp_ops(gm: torch.fx.GraphModule) -> list[str]:
    """Names of the tritonpatch ops called in ``gm`` (e.g. ``"layer_norm_fwd"``), in graph order."""
    names = []
    for node in gm.graph.nodes:
        name = str(node.target)  # "tritonpatch.<op>" (Dynamo) or "tritonpatch.<op>.default" (AOT)
        if node.op == "call_function" and name.startswith("tritonpatch."):
            names.append(name.split(".")[1])
    return names


def _aten_ops(gm: torch.fx.GraphModule) -> set[str]:
    return {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}


class Recorder:
    """A ``torch.compile`` backend that records every graph it compiles, then runs ``aot_eager`` or Inductor.

    ``dynamo``: the ops of each Dynamo graph (one per graph, so a graph break shows as a second entry);
    ``forward`` / ``backward``: AOTAutograd's graphs (their ops, and the graph modules themselves).
    """

    def __init__(self, inductor: bool = False) -> None:
        self.inductor = inductor
        self.dynamo: list[list[str]] = []
        self.forward: list[torch.fx.GraphModule] = []
        self.backward: list[torch.fx.GraphModule] = []

    def __call__(self, gm, example_inputs):
        self.dynamo.append(_tp_ops(gm))
        if self.inductor:
            from torch._inductor.compile_fx import compile_fx, compile_fx_inner

            def inner(gm_, inputs_, **kwargs):
                (self.backward if kwargs.get("is_backward") else self.forward).append(gm_)
                return compile_fx_inner(gm_, inputs_, **kwargs)
            return compile_fx(gm, example_inputs, inner_compile=inner)
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        def keep(graphs):
            def compiler(gm_, _inputs):
                graphs.append(gm_)
                return make_boxed_func(gm_.forward)
            return compiler
        return aot_autograd(fw_compiler=keep(self.forward), bw_compiler=keep(self.backward))(gm, example_inputs)


def _compile(fn, backend, **kwargs):
    torch._dynamo.reset()
    return torch.compile(fn, backend=backend, fullgraph=True, **kwargs)


def _leaves(*ts):
    return [t.detach().clone().requires_grad_() if t is not None else None for t in ts]


def _run(fn, args):
    """fn(*args) on fresh leaves: (y, the gradients of all args, the fresh random dy they are for)."""
    leaves = _leaves(*args)
    y = fn(*leaves)
    dy = torch.randn_like(y, dtype=torch.float32).to(y.dtype)
    return y, torch.autograd.grad(y, leaves, dy), dy


def _randn(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, device=device).to(dtype)


# ----------------------------------------------------------------------------------------------------
# the three ops: plain functions of the traced entry points, and their float64 torch references
# ----------------------------------------------------------------------------------------------------
def _ln(x, w, b):
    return library.layer_norm(x, (x.shape[-1],), w, b, 1e-5)


def _ln_ref(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)


def _sm(x):
    return library.softmax(x, 1)


def _sm_ref(x):
    return torch.softmax(x, 1)


def _lr(x, w, b):
    return library.linear_relu(x, w, b)


def _lr_ref(x, w, b):
    return torch.relu(F.linear(x, w, b))


def _case(kind: str, dtype: torch.dtype, device: str):
    """(fn, reference fn, eager Triton op fn, args, expected forward op, expected backward op) for ``kind``."""
    if kind == "layer_norm":
        args = (_randn(2, 5, 24, dtype=dtype, device=device), _randn(24, dtype=dtype, device=device),
                _randn(24, dtype=dtype, device=device))
        eager = lambda x, w, b: layer_norm_op.layer_norm(x, (24,), w, b, 1e-5)  # noqa: E731
        return _ln, _ln_ref, eager, args, "layer_norm_fwd", "layer_norm_bwd"
    if kind == "softmax":  # over a middle dim (the strided kernels)
        args = (_randn(3, 7, 5, dtype=dtype, device=device) * 3,)
        return _sm, _sm_ref, lambda x: softmax_op.softmax(x, 1), args, "softmax_fwd", "softmax_bwd"
    args = (_randn(2, 5, 16, dtype=dtype, device=device), _randn(12, 16, dtype=dtype, device=device) / 4,
            _randn(12, dtype=dtype, device=device))
    eager = lambda x, w, b: linear_relu_op.linear_relu(x, w, b, "triton")  # noqa: E731
    return _lr, _lr_ref, eager, args, "linear_relu_fwd", None


KINDS = ["layer_norm", "softmax", "linear_relu"]


# ----------------------------------------------------------------------------------------------------
# opcheck
# ----------------------------------------------------------------------------------------------------
def _opcheck_cases(device: str):
    x = _randn(3, 5, 8, device=device).requires_grad_()
    w, b = _randn(8, device=device).requires_grad_(), _randn(8, device=device).requires_grad_()
    x4 = _randn(2, 3, 4, 2, device=device)  # normalized over the trailing (4, 2)
    w4, b4 = _randn(4, 2, device=device), _randn(4, 2, device=device)
    st = _randn(4, 6, device=device).t()  # non-contiguous
    y = torch.softmax(_randn(4, 6, device=device), 0)
    xl, wl, bl = _randn(2, 3, 8, device=device), _randn(5, 8, device=device), _randn(5, device=device)
    return {
        "ln_fwd": (OPS.layer_norm_fwd.default, (x, [8], w, b, 1e-5, True)),
        "ln_fwd_no_stats_no_weight": (OPS.layer_norm_fwd.default, (x, [8], None, b, 1e-5, False)),
        "ln_fwd_2d_shape_bf16": (OPS.layer_norm_fwd.default,
                                 (x4.bfloat16().requires_grad_(), [4, 2], w4.bfloat16(), b4.bfloat16(), 1e-3, True)),
        "ln_bwd": (OPS.layer_norm_bwd.default,
                   (_randn(2, 3, 4, 2, device=device), x4, [4, 2], w4,
                    *layer_norm_op.forward_rows(x4, 8, w4.reshape(8), None, 1e-5, True)[1:],
                    True, False, True)),
        "sm_fwd_dim0_transposed": (OPS.softmax_fwd.default, (st.requires_grad_(), 0, torch.float32)),
        "sm_fwd_half_to_fp32": (OPS.softmax_fwd.default, (st.half().requires_grad_(), 1, torch.float32)),
        "sm_bwd": (OPS.softmax_bwd.default, (y, _randn(4, 6, device=device), 0, torch.float32)),
        "lr_fwd": (OPS.linear_relu_fwd.default, (xl.requires_grad_(), wl.requires_grad_(), bl.requires_grad_())),
        "lr_fwd_no_bias_fp16": (OPS.linear_relu_fwd.default, (xl.half().requires_grad_(), wl.half(), None)),
    }


OPCHECK_IDS = ["ln_fwd", "ln_fwd_no_stats_no_weight", "ln_fwd_2d_shape_bf16", "ln_bwd", "sm_fwd_dim0_transposed",
               "sm_fwd_half_to_fp32", "sm_bwd", "lr_fwd", "lr_fwd_no_bias_fp16"]


def test_opcheck_ids_cover_the_cases(device):
    assert list(_opcheck_cases(device)) == OPCHECK_IDS


@pytest.mark.parametrize("case", OPCHECK_IDS)
def test_opcheck(case, device):
    op, args = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args)


# ----------------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True): forward and backward, graphs
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_fp32_matches_float64(kind, device):
    fn, ref_fn, _, args, fwd_op, bwd_op = _case(kind, torch.float32, device)
    rec = Recorder()
    y, grads, dy = _run(_compile(fn, rec), args)
    leaves64 = _leaves(*(a.double() for a in args))
    ref = ref_fn(*leaves64)
    ref_grads = torch.autograd.grad(ref, leaves64, dy.double())
    assert y.dtype == torch.float32 and y.is_contiguous()
    assert_matches(y, ref, what="y")
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        assert_matches(g, r, what=f"grad {i}")
    assert rec.dynamo == [[fwd_op]]  # one graph: no graph break
    assert [_tp_ops(g) for g in rec.forward] == [[fwd_op]]
    if bwd_op is not None:
        assert [_tp_ops(g) for g in rec.backward] == [[bwd_op]]
    else:  # Linear+ReLU: the backward is torch ops (masked gradient, GEMMs) the compiler sees
        (bw,) = rec.backward
        assert _tp_ops(bw) == [] and "aten.mm.default" in _aten_ops(bw)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_half_is_the_eager_op(kind, dtype, device):
    """Compiled, the op runs the same kernels on the same data as the eager op: bitwise the same."""
    fn, _, eager_fn, args, fwd_op, _ = _case(kind, dtype, device)
    rec = Recorder()
    compiled = _compile(fn, rec)
    leaves = _leaves(*args)
    y = compiled(*leaves)
    dy = torch.randn_like(y, dtype=torch.float32).to(dtype)
    grads = torch.autograd.grad(y, leaves, dy)
    eager_leaves = _leaves(*args)
    y_eager = eager_fn(*eager_leaves)
    eager_grads = torch.autograd.grad(y_eager, eager_leaves, dy)
    assert y.dtype == dtype and torch.equal(y, y_eager)
    for g, ge in zip(grads, eager_grads):
        assert g.dtype == ge.dtype and torch.equal(g, ge)
    assert rec.dynamo == [[fwd_op]]


def test_compiled_dynamic_shapes(device):
    """One graph with symbolic sizes serves several batch sizes (the fake impls take SymInts)."""
    def fn(x, w, b, w2):
        return library.softmax(library.linear_relu(library.layer_norm(x, (16,), w, b), w2, None), -1)

    rec = Recorder()
    compiled = _compile(fn, rec, dynamic=True)
    w, b, w2 = _randn(16, device=device), _randn(16, device=device), _randn(8, 16, device=device) / 4
    graphs = []
    for rows in (3, 11):
        x = _randn(rows, 16, device=device)
        ref = torch.softmax(torch.relu(F.linear(F.layer_norm(x.double(), (16,), w.double(), b.double()),
                                                w2.double())), -1)
        assert_matches(compiled(x, w, b, w2), ref)
        graphs.append(len(rec.dynamo))
    # Dynamo may trace twice on the first call (it restarts once to specialize the float eps, which the
    # op's schema takes as a constant); the second size needs no new graph.
    assert graphs[0] == graphs[1]
    assert all(ops == ["layer_norm_fwd", "linear_relu_fwd", "softmax_fwd"] for ops in rec.dynamo)


def test_inductor(device):
    """Inductor keeps the custom ops (extern kernels): LayerNorm and softmax forward+backward, and a
    Linear+ReLU forward (its backward's own pointwise kernels would need a C++ compile on CPU, ~15 s;
    aot_eager covers that graph above)."""
    import torch._inductor.config as inductor_config

    def fn(x, w, b):
        return library.softmax(library.layer_norm(x, (24,), w, b), -1)

    x, w, b = _randn(2, 5, 24, device=device), _randn(24, device=device), _randn(24, device=device)
    rec = Recorder(inductor=True)
    # no worker pool to start on a 2-core box; no cache, so that the graphs reach the recording compiler
    with inductor_config.patch(compile_threads=1, force_disable_caches=True):
        y, grads, dy = _run(_compile(fn, rec), (x, w, b))
        leaves64 = _leaves(x.double(), w.double(), b.double())
        ref = torch.softmax(F.layer_norm(leaves64[0], (24,), leaves64[1], leaves64[2]), -1)
        ref_grads = torch.autograd.grad(ref, leaves64, dy.double())
        assert_matches(y, ref)
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            assert_matches(g, r, what=f"grad {i}")
        assert rec.dynamo == [["layer_norm_fwd", "softmax_fwd"]]
        assert [_tp_ops(g) for g in rec.forward] == [["layer_norm_fwd", "softmax_fwd"]]
        assert [_tp_ops(g) for g in rec.backward] == [["softmax_bwd", "layer_norm_bwd"]]

        rec = Recorder(inductor=True)
        wl, bl = _randn(12, 24, device=device) / 4, _randn(12, device=device)
        with torch.no_grad():
            y = _compile(_lr, rec)(x, wl, bl)
        assert_matches(y, _lr_ref(x.double(), wl.double(), bl.double()))
        assert rec.dynamo == [["linear_relu_fwd"]] and [_tp_ops(g) for g in rec.forward] == [["linear_relu_fwd"]]


# ----------------------------------------------------------------------------------------------------
# traced_unsupported
# ----------------------------------------------------------------------------------------------------
class _Sub(torch.Tensor):
    pass


def _reason_cases(device: str):
    x, w, b = _randn(4, 8, device=device), _randn(8, device=device), _randn(8, device=device)
    wl, bl = _randn(6, 8, device=device), _randn(6, device=device)
    cases = {
        "ln_ok": ("layer_norm", (x, (8,), w, b, 1e-5)),
        "ln_int_shape_no_params": ("layer_norm", (x, 8, None, None, 1e-5)),
        "ln_float64": ("layer_norm", (x.double(), (8,), w.double(), b.double(), 1e-5)),
        "ln_mixed": ("layer_norm", (x, (8,), w.half(), b, 1e-5)),
        "ln_shape": ("layer_norm", (x, (4, 4), None, None, 1e-5)),
        "ln_weight_shape": ("layer_norm", (x, (8,), w[:4], b, 1e-5)),
        "ln_bias_shape": ("layer_norm", (x, (8,), w, b[:4], 1e-5)),
        "sm_ok": ("softmax", (x, -1, None)),
        "sm_dtype_arg": ("softmax", (x.half(), 0, torch.float32)),
        "sm_dim_none": ("softmax", (x, None, None)),
        "sm_dim_range": ("softmax", (x, 2, None)),
        "sm_bad_dtype_arg": ("softmax", (x, 1, torch.float64)),
        "sm_int": ("softmax", (x.long(), 1, None)),
        "lr_ok": ("linear_relu", (x, wl, bl)),
        "lr_no_bias": ("linear_relu", (x, wl, None)),
        "lr_shape": ("linear_relu", (x, wl.t(), None)),
        "lr_bias_shape": ("linear_relu", (x, wl, bl[:3])),
        "lr_mixed": ("linear_relu", (x.bfloat16(), wl, None)),
        "lr_float64": ("linear_relu", (x.double(), wl.double(), None)),
        "lr_devices": ("linear_relu", (x, wl.to("meta"), None)),
    }
    return cases


EAGER_UNSUPPORTED = {"layer_norm": layer_norm_op.unsupported, "softmax": softmax_op.unsupported,
                     "linear_relu": linear_relu_op.unsupported}


@pytest.mark.parametrize("case", list(_reason_cases("cpu")))  # tensors only: no kernel runs here
def test_traced_unsupported_on_fake_tensors_gives_the_ops_reasons(case, device):
    from torch._subclasses.fake_tensor import FakeTensorMode

    kind, args = _reason_cases(device)[case]
    expected = EAGER_UNSUPPORTED[kind](*args)
    assert library.traced_unsupported(kind, *args) == expected  # real tensors too
    mode = FakeTensorMode()
    fake = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
    assert library.traced_unsupported(kind, *fake) == expected
    if case.endswith("_ok"):
        assert expected is None
        with torch.autocast(device, dtype=torch.bfloat16):
            assert library.traced_unsupported(kind, *fake) == "autocast is enabled"


def test_traced_unsupported_refuses_other_subclasses(device):
    x = _randn(4, 8, device=device).as_subclass(_Sub)
    assert library.traced_unsupported("softmax", x, -1, None) == "tensor subclass _Sub is not supported"
    assert library.traced_unsupported("softmax", x, -1, None) == softmax_op.unsupported(x, -1, None)
    sparse = _randn(4, 8, device=device).to_sparse()
    assert library.traced_unsupported("softmax", sparse, -1, None) == softmax_op.unsupported(sparse, -1, None)


def test_unsupported_call_traces_to_torch_without_break(device):
    """A call traced_unsupported refuses (float64) runs torch's op inside the same single graph."""
    def fn(x):
        if library.traced_unsupported("softmax", x, -1, None) is None:
            return library.softmax(x, -1)
        return torch.softmax(x, -1)

    rec = Recorder()
    x = _randn(3, 9, dtype=torch.float64, device=device)
    assert torch.equal(_compile(fn, rec)(x), torch.softmax(x, -1))
    assert rec.dynamo == [[]]


# ----------------------------------------------------------------------------------------------------
# end to end: tritonpatch.patch() on a tiny model, compiled
# ----------------------------------------------------------------------------------------------------
class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(inplace=True))
        self.head = nn.Linear(16, 8)

    def forward(self, x):
        h = self.mlp(self.norm(x))
        z = self.head(h)
        return F.softmax(z, dim=-1) + 0.1 * z   # z is read twice: not a pair


def test_patched_tiny_model_compiles_fullgraph_and_matches(device):
    model = _Tiny().to(device)
    with torch.no_grad():  # fresh random affine parameters, not LayerNorm's ones and zeros
        model.norm.weight.normal_()
        model.norm.bias.normal_()
    x = _randn(2, 5, 16, device=device)
    dy = _randn(2, 5, 8, device=device)
    params = list(model.parameters())

    def forward_backward(m):
        xl = x.clone().requires_grad_()
        out = m(xl)
        return out, torch.autograd.grad(out, [xl, *params], dy)

    ref, ref_grads = forward_backward(model)
    model64 = _Tiny().to(device).double()
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    xl64 = x.double().requires_grad_()
    out64 = model64(xl64)
    grads64 = torch.autograd.grad(out64, [xl64, *model64.parameters()], dy.double())

    rec = Recorder()
    softmax = F.softmax
    with tritonpatch.patch(model):
        out, grads = forward_backward(_compile(model, rec))

    # same results as the unpatched eager model, and as close to float64 as fp32 allows
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert_matches(out, out64)
    for g, gr, g64 in zip(grads, ref_grads, grads64):
        torch.testing.assert_close(g, gr, rtol=1e-5, atol=1e-6)
        assert_matches(g, g64, torch_out=gr, what="grad", conditioned=True)
    # one graph; LayerNorm and softmax are custom ops; the Linear+ReLU pairs are torch's under compile
    # (their call-site proof needs the Python stack, which tracing does not have)
    assert len(rec.dynamo) == 1
    assert sorted(rec.dynamo[0]) == ["layer_norm_fwd", "softmax_fwd"]
    (fw,) = rec.forward
    (bw,) = rec.backward
    assert sorted(_tp_ops(fw)) == ["layer_norm_fwd", "softmax_fwd"]
    assert sorted(_tp_ops(bw)) == ["layer_norm_bwd", "softmax_bwd"]
    assert type(model.norm) is nn.LayerNorm and type(model.mlp[1]) is nn.ReLU and F.softmax is softmax


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_custom_ops_fall_back_when_a_kernel_cannot_run(device, monkeypatch, kernel_cannot_run, where):
    """Inside a compiled graph the custom ops run eagerly: a Triton kernel that cannot be built or loaded
    on this GPU (OutOfResources here) makes the op compute with torch instead, forward or backward; the
    results match a float64 reference at the fp32 tolerance, in the fake implementation's layout."""
    from tests.numerics import FP32_TOL, rel_err
    from tritonpatch.ops import common

    monkeypatch.setattr(common.SETTINGS, "linear_relu", "triton")
    if where == "forward":
        for module, name in ((layer_norm_op, "forward_rows"), (softmax_op, "_forward"), (linear_relu_op, "_forward")):
            monkeypatch.setattr(module, name, kernel_cannot_run)
    else:
        for module, name in ((layer_norm_op, "_backward_rows_triton"), (softmax_op, "_backward_triton")):
            monkeypatch.setattr(module, name, kernel_cannot_run)
    x = torch.randn(5, 3, 24, device=device, requires_grad=True)
    w = torch.randn(24, device=device, requires_grad=True)
    b = torch.randn(24, device=device, requires_grad=True)
    wl = torch.randn(16, 24, device=device, requires_grad=True)
    dy = torch.randn(5, 3, 24, device=device)
    leaves = (x, w, b, wl)
    cases = {
        "layer_norm": (lambda x_, w_, b_, wl_: OPS.layer_norm_fwd(x_, [24], w_, b_, 1e-5, True)[0],
                       lambda x_, w_, b_, wl_: F.layer_norm(x_, (24,), w_, b_, 1e-5)),
        "softmax": (lambda x_, w_, b_, wl_: OPS.softmax_fwd(x_, 2, torch.float32),
                    lambda x_, w_, b_, wl_: torch.softmax(x_, 2)),
        "linear_relu": (lambda x_, w_, b_, wl_: OPS.linear_relu_fwd(x_, wl_, None),
                        lambda x_, w_, b_, wl_: torch.relu(F.linear(x_, wl_))),
    }
    for kind, (ours, ref) in cases.items():
        got = ours(*leaves)
        want = ref(*(t.detach().double().requires_grad_() for t in leaves))
        assert got.is_contiguous() and got.dtype == torch.float32, kind
        assert rel_err(got, want) <= FP32_TOL, kind
        g_out = dy if kind != "linear_relu" else torch.randn_like(got)
        used = [i for i, t in enumerate(torch.autograd.grad(ref(*leaves), leaves, g_out, allow_unused=True))
                if t is not None]
        got_grads = torch.autograd.grad(got, [leaves[i] for i in used], g_out)
        want_leaves = [t.detach().double().requires_grad_() for t in leaves]
        want_grads = torch.autograd.grad(ref(*want_leaves), [want_leaves[i] for i in used], g_out.double())
        for i, g, wg in zip(used, got_grads, want_grads):
            assert rel_err(g, wg) <= FP32_TOL, (kind, i)
