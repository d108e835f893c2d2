"""``python -m tritonpatch check``: does tritonpatch work on this machine, and is it faster here?

Prints the versions (Python, torch, triton, transformers, GPU), runs each kernel against torch on small
random inputs (forward and backward, float64 reference), and prints a table: op, dtype, Triton or
fallback reason, relative error of ours and of torch, and the speed ratio torch/ours (not under Triton's
interpreter, whose speed says nothing about a GPU). Exits 1 if any check fails (error over its bound, or
NaN).
"""
from __future__ import annotations

import platform
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from .numerics import errors
from .ops import common
from .ops import layer_norm as layer_norm_op
from .ops import linear_relu as linear_relu_op
from .ops import softmax as softmax_op
from .patching.records import render_table

#: Bound on ||ours - ref|| / ||ref|| as a multiple of torch's own error (plus a floor) per dtype.
FLOORS = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """||a - ref|| / ||ref|| in float64 (NaN in only one of them: inf)."""
    return errors(a, ref)[1]


def _time(fn: Callable[[], object], device: str) -> float:
    for _ in range(3):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / 20


def _cases(device: str) -> list[tuple[str, torch.dtype, Callable, Callable, tuple, Callable[[], str | None]]]:
    """(op name, dtype, ours(*inputs), torch(*inputs), inputs, unsupported-reason thunk)."""
    cases = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = torch.randn(64, 257, device=device, dtype=dtype)
        w = torch.randn(257, device=device, dtype=dtype)
        b = torch.randn(257, device=device, dtype=dtype)
        cases.append(("layer_norm", dtype, lambda x, w, b: layer_norm_op.layer_norm(x, (257,), w, b),
                      lambda x, w, b: F.layer_norm(x, (257,), w, b), (x, w, b),
                      lambda x=x, w=w, b=b: layer_norm_op.unsupported(x, (257,), w, b, 1e-5)))
        # the row kernel (last dim), the strided kernel (dim=1), and the split strided forward (a long dim=1)
        for label, shape, d in (("softmax", (8, 33, 129), -1), ("softmax(dim=1)", (4, 300, 33), 1),
                                ("softmax(dim=1, long)", (2, 1100, 24), 1)):
            s = torch.randn(*shape, device=device, dtype=dtype)
            cases.append((label, dtype, lambda s, d=d: softmax_op.softmax(s, d), lambda s, d=d: torch.softmax(s, d),
                          (s,), lambda s=s, d=d: softmax_op.unsupported(s, d)))
        xl = torch.randn(96, 128, device=device, dtype=dtype)
        wl = (torch.randn(160, 128, device=device) / 128**0.5).to(dtype)
        bl = torch.randn(160, device=device, dtype=dtype)
        cases.append(("linear_relu", dtype, linear_relu_op.linear_relu,
                      lambda x, w, b: F.relu(F.linear(x, w, b)), (xl, wl, bl),
                      lambda x=xl, w=wl, b=bl: linear_relu_op.unsupported(x, w, b)))
    return cases


def run_checks() -> tuple[list[list[str]], bool]:
    """Run every check; returns the table rows and whether all passed."""
    device = "cuda" if torch.cuda.is_available() and not common.interpreting() else "cpu"
    rows, ok = [], True
    with common.environment(TRITONPATCH_SIZE_POLICY="0"):  # check the kernels even where torch is faster
        cases = [(*case[:5], case[5]()) for case in _cases(device)]
    for name, dtype, ours, ref_fn, inputs, reason in cases:
        if reason is not None:
            rows.append([name, str(dtype).replace("torch.", ""), "fallback: " + reason, "-", "-", "-", "-"])
            continue
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        out = ours(*leaves)
        dy = torch.randn_like(out)
        grads = torch.autograd.grad(out, leaves, dy)
        ref_leaves = [t.detach().double().requires_grad_() for t in inputs]
        ref = ref_fn(*ref_leaves)
        ref_grads = torch.autograd.grad(ref, ref_leaves, dy.double())
        tl_leaves = [t.detach().clone().requires_grad_() for t in inputs]
        tout = ref_fn(*tl_leaves)
        tgrads = torch.autograd.grad(tout, tl_leaves, dy)
        errs = [_rel(out, ref)] + [_rel(g, r) for g, r in zip(grads, ref_grads)]
        terrs = [_rel(tout, ref)] + [_rel(g, r) for g, r in zip(tgrads, ref_grads)]
        bound = [max(1.5 * t, FLOORS[dtype]) for t in terrs]
        passed = all(e == e and e <= bnd for e, bnd in zip(errs, bound))
        ok &= passed
        ratio = "-"  # under the interpreter a timing says nothing about a GPU: not taken
        if not common.interpreting():
            ratio = f"{_time(lambda: ref_fn(*inputs), device) / _time(lambda: ours(*inputs), device):.2f}x"
        rows.append([name, str(dtype).replace("torch.", ""), "triton", "PASS" if passed else "FAIL",
                     f"{max(errs):.1e}", f"{max(terrs):.1e}", ratio])
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tritonpatch check``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["check"]:
        print("usage: python -m tritonpatch check")
        return 2
    import triton
    try:
        import transformers
        hf = transformers.__version__
    except ImportError:
        hf = "not installed"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"transformers {hf}, GPU {gpu}, interpreter {'on' if common.interpreting() else 'off'}")
    rows, ok = run_checks()
    print(render_table(["op", "dtype", "ran on", "check", "max rel err", "torch's err", "speed vs torch"], rows))
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1
