"""LayerNorm stage of the benchmark suite: forward and forward+backward over a width sweep.

    python benchmarks/bench_layer_norm.py [--smoke] [--out DIR | --csv PATH]   (or: run_suite.sh)

Cases: M x N from 768 to 65536 wide (M >= 4096 rows, about 2^25 elements up to N = 8192), bf16 /
fp16 / fp32, affine (weight and bias), eps 1e-5.
Providers: torch eager ``F.layer_norm``; ``torch.compile`` of it; Liger ``LigerLayerNormFunction``;
triformer ``Fast_Layernorm`` (its backward returns no weight/bias gradient: flagged, not timed);
tritonpatch ``tritonpatch.ops.layer_norm.layer_norm`` (TRITONPATCH_SIZE_POLICY=0).
Bytes that must move (GB/s), elt = element size:
    fwd:      (2*M*N + 2*N) * elt        read x, w, b; write y
    fwd+bwd:  (5*M*N + 6*N) * elt        fwd, then read x, dy, w; write dx, dw, db
(the fp32 mean/rstd rows, 8*M bytes each way, are left out). See harness.py for checks and timing.
"""
from __future__ import annotations

import harness  # noqa: I001 (first: sets TRITON_INTERPRET for --smoke before triton is imported)

import sys

import torch
import torch.nn.functional as F

import peers
from harness import Case, Context, Provider, Unavailable

EPS = 1e-5
SHAPES = [(32768, 768), (32768, 1024), (16384, 2048), (8192, 4096), (4096, 8192), (4096, 16384),
          (4096, 32768), (4096, 65536)]
SMOKE_SHAPES = [(16, 64), (9, 300)]
DTYPES = [torch.bfloat16, torch.float16, torch.float32]  # bf16 first: a spent time budget cuts fp32


def cases(ctx: Context):
    for dtype in DTYPES:
        for m, n in SMOKE_SHAPES if ctx.smoke else SHAPES:
            yield make_case(ctx, m, n, dtype)


def make_case(ctx: Context, m: int, n: int, dtype: torch.dtype) -> Case:
    dev = ctx.device
    elt = torch.empty((), dtype=dtype).element_size()
    w = torch.randn(n, device=dev).mul_(0.5).add_(1).to(dtype)
    b = torch.randn(n, device=dev).mul_(0.1).to(dtype)

    def make_set(grad: bool) -> dict:
        s = {"x": torch.randn(m, n, device=dev).mul_(2).add_(0.5).to(dtype).requires_grad_(grad),
             "w": w.detach().clone().requires_grad_(grad), "b": b.detach().clone().requires_grad_(grad)}
        if grad:
            s["dy"] = torch.randn(m, n, device=dev, dtype=dtype)
        return s

    return Case(op="layer_norm", case="rows", shape=f"{m}x{n}", dtype=dtype, out_dtype=dtype,
                make_set=make_set, grad_keys=("x", "w", "b"),
                reference=lambda s: F.layer_norm(s["x"], (n,), s["w"], s["b"], EPS),
                set_bytes=2 * m * n * elt,
                bytes={"fwd": (2 * m * n + 2 * n) * elt, "fwd+bwd": (5 * m * n + 6 * n) * elt},
                params={"M": m, "N": n})


def providers(ctx: Context) -> list[Provider]:
    from tritonpatch.ops.layer_norm import layer_norm

    def peer_provider(name: str, peer: peers.Peer) -> Provider:
        def build(case: Case, pass_: str):
            if not peer.available:
                raise Unavailable(peer.reason)
            fn = peer.api["layer_norm"]
            return lambda s: fn(s["x"], s["w"], s["b"], EPS)
        return Provider(name, build, note=peer.note)

    def torch_fn(case: Case):
        n = case.params["N"]
        return lambda x, w, b: F.layer_norm(x, (n,), w, b, EPS)

    def ours(case: Case, pass_: str):
        n = case.params["N"]
        return lambda s: layer_norm(s["x"], (n,), s["w"], s["b"], EPS)

    return [
        Provider("torch", lambda case, pass_: case.reference),
        harness.compile_provider(ctx, torch_fn, lambda f, s: f(s["x"], s["w"], s["b"])),
        peer_provider("liger", peers.liger()),
        peer_provider("triformer", peers.triformer("layer_norm")),
        Provider("tritonpatch", ours),
    ]


def run(ctx: Context) -> list[dict]:
    harness.configure_dynamo()
    return harness.run_stage(ctx, "layer_norm", cases(ctx), providers(ctx), env={"TRITONPATCH_SIZE_POLICY": "0"})


if __name__ == "__main__":
    sys.exit(harness.stage_main("layer_norm", run, __doc__))
