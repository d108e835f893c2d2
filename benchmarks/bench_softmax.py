"""Softmax stage of the benchmark suite: forward and forward+backward.

    python benchmarks/bench_softmax.py [--smoke] [--out DIR | --csv PATH]   (or: run_suite.sh)

Cases, in bf16 / fp16 / fp32:
- rows: M x N over the last dim, N from 512 to 65536 (2^25 elements each);
- attn: attention scores (batch*heads, L, L), last dim: (8*16, 512, 512) and (2*16, 2048, 2048);
- attn->fp32: the same from bf16/fp16 input with ``dtype=torch.float32`` (OPT, ViT, CLIP, GPT-NeoX
  eager attention): the output is fp32, the input gradient is in the input's dtype;
- dim1: a softmax over a middle dim, (64, 512, 1024) and (8, 4096, 1024), dim=1.
Providers: torch eager ``torch.softmax(x, dim, dtype=)``; ``torch.compile`` of it; Liger
``LigerSoftmaxFunction`` and triformer ``SoftmaxFunction`` (last dim only, no ``dtype=``: for
attn->fp32 they get ``x.float()``, and that cast is timed with them); tritonpatch
``tritonpatch.ops.softmax.softmax`` (TRITONPATCH_SIZE_POLICY=0).
Bytes that must move (GB/s), ie/oe = input/output element size, n = numel:
    fwd:      n * (ie + oe)              read x, write y
    fwd+bwd:  n * (2*ie + 3*oe)          fwd, then read y, dy; write dx
See harness.py for checks and timing.
"""
from __future__ import annotations

import harness  # noqa: I001 (first: sets TRITON_INTERPRET for --smoke before triton is imported)

import math
import sys

import torch

import peers
from harness import Case, Context, Provider, Unavailable, Unsupported

F32 = torch.float32
DTYPES = [torch.bfloat16, torch.float16, torch.float32]  # bf16 first: a spent time budget cuts fp32
ROWS = [(65536, 512), (16384, 2048), (8192, 4096), (2048, 16384), (1024, 32768), (512, 65536)]
ATTN = [(8 * 16, 512, 512), (2 * 16, 2048, 2048)]
DIM1 = [(64, 512, 1024), (8, 4096, 1024)]
SMOKE = {"rows": [(16, 64), (5, 300)], "attn": [(2, 16, 16)], "dim1": [(2, 16, 8)]}


def cases(ctx: Context):
    for dtype in DTYPES:
        half = dtype != torch.float32
        for shape in SMOKE["rows"] if ctx.smoke else ROWS:
            yield make_case(ctx, "rows", shape, -1, dtype, None)
        for shape in SMOKE["attn"] if ctx.smoke else ATTN:
            yield make_case(ctx, "attn", shape, -1, dtype, None)
            if half:
                yield make_case(ctx, "attn->fp32", shape, -1, dtype, F32)
        for shape in SMOKE["dim1"] if ctx.smoke else DIM1:
            yield make_case(ctx, "dim1", shape, 1, dtype, None)


def make_case(ctx: Context, label: str, shape: tuple, dim: int, dtype: torch.dtype,
              out_dtype: torch.dtype | None) -> Case:
    dev = ctx.device
    n = math.prod(shape)
    ie = torch.empty((), dtype=dtype).element_size()
    oe = torch.empty((), dtype=out_dtype or dtype).element_size()

    def make_set(grad: bool) -> dict:
        s = {"x": torch.randn(shape, device=dev).mul_(3).to(dtype).requires_grad_(grad)}
        if grad:
            s["dy"] = torch.randn(shape, device=dev, dtype=out_dtype or dtype)
        return s

    dims = "x".join(map(str, shape)) + ("" if dim == -1 else f", dim={dim}")
    return Case(op="softmax", case=label, shape=dims, dtype=dtype, out_dtype=out_dtype or dtype,
                make_set=make_set, grad_keys=("x",),
                reference=lambda s: torch.softmax(s["x"], dim, dtype=None if s["x"].dtype == torch.float64
                                                  else out_dtype),
                set_bytes=n * (ie + oe),
                bytes={"fwd": n * (ie + oe), "fwd+bwd": n * (2 * ie + 3 * oe)},
                params={"dim": dim, "dtype_arg": out_dtype})


def providers(ctx: Context) -> list[Provider]:
    from tritonpatch.ops.softmax import softmax

    def peer_provider(name: str, peer: peers.Peer, extra: tuple) -> Provider:
        def build(case: Case, pass_: str):
            if not peer.available:
                raise Unavailable(peer.reason)
            if case.params["dim"] != -1:
                raise Unsupported("last dim only")
            fn, cast = peer.api["softmax"], case.params["dtype_arg"]
            if cast is None:
                return lambda s: fn(s["x"], *extra)
            return lambda s: fn(s["x"].to(cast), *extra)
        note = lambda case: "; ".join(filter(None, [  # noqa: E731
            peer.note, "no dtype=: x.float() first (timed)" if case.params["dtype_arg"] is not None else ""]))
        return Provider(name, build, note=note)

    def torch_fn(case: Case):
        dim, odt = case.params["dim"], case.params["dtype_arg"]
        return lambda x: torch.softmax(x, dim, dtype=odt)

    def eager(case: Case, pass_: str):
        dim, odt = case.params["dim"], case.params["dtype_arg"]
        return lambda s: torch.softmax(s["x"], dim, dtype=odt)

    def ours(case: Case, pass_: str):
        dim, odt = case.params["dim"], case.params["dtype_arg"]
        return lambda s: softmax(s["x"], dim, odt)

    return [
        Provider("torch", eager),
        harness.compile_provider(ctx, torch_fn, lambda f, s: f(s["x"])),
        peer_provider("liger", peers.liger(), ()),
        peer_provider("triformer", peers.triformer("softmax"), (False,)),  # is_causal=False
        Provider("tritonpatch", ours),
    ]


def run(ctx: Context) -> list[dict]:
    harness.configure_dynamo()
    return harness.run_stage(ctx, "softmax", cases(ctx), providers(ctx), env={"TRITONPATCH_SIZE_POLICY": "0"})


if __name__ == "__main__":
    sys.exit(harness.stage_main("softmax", run, __doc__))
