"""Linear+ReLU stage of the benchmark suite: ``relu(x @ W^T + b)``, forward and forward+backward.

    python benchmarks/bench_linear_relu.py [--smoke] [--out DIR | --csv PATH]   (or: run_suite.sh)

Cases (M, K -> N), in bf16 / fp16 / fp32: transformer FFN up-projections 8192x768->3072,
16384x1024->4096, 8192x4096->16384; large K 4096x16384->4096; small M 128x4096->4096 and
16x4096->4096. fp32 runs as torch's default (``allow_tf32`` off: exact fp32 GEMMs; tritonpatch's
Triton kernel follows that flag).
Providers: torch eager ``F.relu(F.linear(x, w, b))``; ``F.linear`` alone (a bound: the GEMM without
the ReLU, timed, not checked); ``torch.compile`` of the eager function; triformer 2.x
``TritonLinearFunction`` (3.x has none; fp16 compute and output); Liger has no Linear+ReLU (rows say so);
tritonpatch ``tritonpatch.ops.linear_relu.linear_relu`` with ``provider="cublaslt"`` (cuBLASLt's
bias+ReLU epilogue: what a patched model runs on CUDA) and ``provider="triton"`` (the Triton GEMM);
both share one backward (cuBLAS GEMMs, ``linear_relu.BACKWARD_IMPL = "torch"``). With
``SUITE_TRITON_BWD=1`` a further provider, tritonpatch-triton-bwd (fwd+bwd only), runs the other
backward (``BACKWARD_IMPL = "triton"``: masked Triton GEMMs, grad_b fused), to re-check that choice.
TFLOP/s: fwd 2*M*N*K, fwd+bwd 6*M*N*K. See harness.py for checks and timing.
"""
from __future__ import annotations

import harness  # noqa: I001 (first: sets TRITON_INTERPRET for --smoke before triton is imported)

import contextlib
import os
import sys

import torch
import torch.nn.functional as F

import peers
from harness import Case, Context, Provider, Unavailable, Unsupported

DTYPES = [torch.bfloat16, torch.float16, torch.float32]  # bf16 first: a spent time budget cuts fp32
SHAPES = [("ffn", 8192, 768, 3072), ("ffn", 16384, 1024, 4096), ("ffn", 8192, 4096, 16384),
          ("large-K", 4096, 16384, 4096), ("small-M", 128, 4096, 4096), ("small-M", 16, 4096, 4096)]
SMOKE_SHAPES = [("ffn", 32, 48, 64), ("small-M", 5, 40, 24)]


def cases(ctx: Context):
    for dtype in DTYPES:
        for label, m, k, n in SMOKE_SHAPES if ctx.smoke else SHAPES:
            yield make_case(ctx, label, m, k, n, dtype)


def make_case(ctx: Context, label: str, m: int, k: int, n: int, dtype: torch.dtype) -> Case:
    dev = ctx.device
    elt = torch.empty((), dtype=dtype).element_size()
    w = (torch.randn(n, k, device=dev) * k**-0.5).to(dtype)
    b = (torch.randn(n, device=dev) * 0.5).to(dtype)

    def make_set(grad: bool) -> dict:
        s = {"x": torch.randn(m, k, device=dev, dtype=dtype).requires_grad_(grad),
             "w": w.detach().clone().requires_grad_(grad), "b": b.detach().clone().requires_grad_(grad)}
        if grad:
            s["dy"] = torch.randn(m, n, device=dev, dtype=dtype)
        return s

    return Case(op="linear_relu", case=label, shape=f"{m}x{k}->{n}", dtype=dtype, out_dtype=dtype,
                make_set=make_set, grad_keys=("x", "w", "b"),
                reference=lambda s: F.relu(F.linear(s["x"], s["w"], s["b"])),
                set_bytes=(m * k + n * k + m * n) * elt,
                flops={"fwd": 2 * m * n * k, "fwd+bwd": 6 * m * n * k},
                params={"M": m, "K": k, "N": n})


def providers(ctx: Context) -> list[Provider]:
    from tritonpatch.ops import linear_relu as lr_op
    from tritonpatch.ops.linear_relu import linear_relu

    tri = peers.triformer("linear")

    def triformer_build(case: Case, pass_: str):
        if not tri.available:
            raise Unavailable(tri.reason)
        if pass_ == "fwd+bwd":
            # measured on the H100 (2026-11-26, bf16/fp16, every shape): 0.30-0.34 TFLOP/s, 0.001-0.03x
            # torch eager; one large-K case took two minutes, so it is not timed again
            raise Unsupported("triformer 2.1.4's Linear backward ran at ~0.33 TFLOP/s (0.001x torch)")
        fn = tri.api["linear_relu"]
        return lambda s: fn(s["x"], s["w"], s["b"])

    def ours(provider: str):
        return lambda case, pass_: lambda s: linear_relu(s["x"], s["w"], s["b"], provider=provider)

    def no_liger(case: Case, pass_: str):
        raise Unsupported("Liger-Kernel has no Linear+ReLU")

    def triton_bwd(case: Case, pass_: str):
        if pass_ == "fwd":
            raise Unsupported("forward is tritonpatch-cublaslt's")
        return ours("cublaslt")(case, pass_)

    @contextlib.contextmanager
    def backward_impl_triton():
        saved, lr_op.BACKWARD_IMPL = lr_op.BACKWARD_IMPL, "triton"
        try:
            yield
        finally:
            lr_op.BACKWARD_IMPL = saved

    return [
        Provider("torch", lambda case, pass_: case.reference),
        Provider("F.linear (no ReLU)", lambda case, pass_: lambda s: F.linear(s["x"], s["w"], s["b"]),
                 check=False, note="bound: the GEMM alone, not checked"),
        harness.compile_provider(ctx, lambda case: lambda x, w, b: F.relu(F.linear(x, w, b)),
                                 lambda f, s: f(s["x"], s["w"], s["b"])),
        Provider("liger", no_liger),
        Provider("triformer", triformer_build,
                 note="; ".join(filter(None, [tri.note, f"triformer {tri.version}" if tri.version else ""]))),
        Provider("tritonpatch-cublaslt", ours("cublaslt")),
        Provider("tritonpatch-triton", ours("triton")),
    ] + ([Provider("tritonpatch-triton-bwd", triton_bwd, around=backward_impl_triton,
                   note="cuBLASLt forward, BACKWARD_IMPL='triton'")] if os.environ.get("SUITE_TRITON_BWD") == "1" else [])


def run(ctx: Context) -> list[dict]:
    harness.configure_dynamo()
    return harness.run_stage(ctx, "linear_relu", cases(ctx), providers(ctx), env={"TRITONPATCH_SIZE_POLICY": "0"})


if __name__ == "__main__":
    sys.exit(harness.stage_main("linear_relu", run, __doc__))
