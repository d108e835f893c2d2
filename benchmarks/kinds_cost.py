"""Wall and CPU time of an HF forward with each patched kind alone (isolates a slow kind).

    python benchmarks/kinds_cost.py
"""
from __future__ import annotations

import time

import torch

import tritonpatch
from tritonpatch.ops import common
from bench_e2e import build  # noqa: E402


def timed(model, ids) -> tuple[float, float]:
    for _ in range(3):
        model(input_ids=ids)
    torch.cuda.synchronize()
    cpu, wall = [], []
    for _ in range(10):
        t0 = time.perf_counter()
        model(input_ids=ids)
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        cpu.append(t1 - t0)
        wall.append(t2 - t0)
    return sorted(cpu)[5] * 1e3, sorted(wall)[5] * 1e3


def main() -> None:
    for attn in ("eager", "sdpa"):
        model = build("opt-350m", attn, layers=6).to("cuda", torch.bfloat16).eval()
        ids = torch.randint(0, 1000, (8, 512), device="cuda")
        with torch.no_grad():
            print(attn, "unpatched: CPU %.2f ms, wall %.2f ms" % timed(model, ids))
            for kind in ("layer_norm", "softmax", "linear_relu"):
                opts = {k: k == kind for k in ("layer_norm", "softmax", "linear_relu")}
                with tritonpatch.patch(model, **opts):
                    print(attn, f"{kind} only: CPU %.2f ms, wall %.2f ms" % timed(model, ids))
            with tritonpatch.patch(model):
                print(attn, "all: CPU %.2f ms, wall %.2f ms" % timed(model, ids))
            with common.environment(TRITONPATCH_LINEAR_RELU="triton"), tritonpatch.patch(
                    model, layer_norm=False, softmax=False):
                print(attn, "linear_relu (triton) only: CPU %.2f ms, wall %.2f ms" % timed(model, ids))


if __name__ == "__main__":
    main()
