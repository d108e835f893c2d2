"""Where does Triton start to win? Patched vs unpatched modules at small sizes, on a GPU.

    python benchmarks/crossover.py [--csv PATH]

Times whole module calls, the way a model makes them: back-to-back calls of a patched and an unpatched
LayerNorm module, softmax-calling module and Linear+ReLU pair, synchronising once per batch of calls,
so that the patched path's Python dispatch and kernel launch count as much as GPU time does. The
result is, per op and dtype, the smallest size (elements of the input) from which the patched module
is at least as fast at every larger size measured: the size policy's threshold.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

os.environ["TRITONPATCH_SIZE_POLICY"] = "0"  # measure the kernels at every size
import tritonpatch  # noqa: E402
from tritonpatch.ops.linear_relu import CUBLASLT_NOTE  # noqa: E402
from results_io import write_csv  # noqa: E402 (benchmarks/ is on sys.path)


class SoftmaxCall(nn.Module):
    def forward(self, x):
        return F.softmax(x, dim=-1)


class LinearRelu(nn.Module):
    def __init__(self, k: int, n: int) -> None:
        super().__init__()
        self.fc = nn.Linear(k, n)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x))


def per_call_us(fn, calls: int = 50, reps: int = 7) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(samples)


def measure(module: nn.Module, x: torch.Tensor, backward: bool) -> tuple[float, float]:
    if backward:
        x = x.detach().requires_grad_()
        dy = torch.randn_like(module(x))

        def run():
            module(x).backward(dy)
    else:
        def run():
            with torch.no_grad():
                module(x)
    base = per_call_us(run)
    with tritonpatch.patch(module) as p:
        patched = per_call_us(run)
    fused = sum(r.triton_calls + r.fallback_reasons.get(CUBLASLT_NOTE, 0) for r in p.layers)
    assert fused > 0, str(p)  # the patched path really ran (Triton, or the pair's cuBLASLt epilogue)
    return base, patched


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv")
    args = ap.parse_args()
    rows = []
    cases = []
    for dtype in (torch.bfloat16, torch.float32):
        for n in (256, 1024, 4096):
            for m in (1, 8, 64, 256, 1024, 4096, 16384):
                cases.append(("layer_norm", dtype, m, n))
                cases.append(("softmax", dtype, m, n))
        for m in (16, 128, 512, 2048, 8192):
            for k, n in ((768, 3072), (1024, 4096), (4096, 1024)):
                if dtype == torch.bfloat16:
                    cases.append(("linear_relu", dtype, m, (k, n)))
    for op, dtype, m, n in cases:
        if op == "layer_norm":
            mod = nn.LayerNorm(n).cuda().to(dtype)
            x = torch.randn(m, n, device="cuda", dtype=dtype)
        elif op == "softmax":
            mod = SoftmaxCall()
            x = torch.randn(m, n, device="cuda", dtype=dtype)
        else:
            k, nn_ = n
            mod = LinearRelu(k, nn_).cuda().to(dtype)
            x = torch.randn(m, k, device="cuda", dtype=dtype)
        for backward in (False, True):
            base, patched = measure(mod, x, backward)
            row = dict(op=op, dtype=str(dtype).replace("torch.", ""), m=m, n=str(n), numel=x.numel(),
                       backward=backward, torch_us=base, patched_us=patched, ratio=base / patched)
            rows.append(row)
            print(f"{op:12s} {row['dtype']:9s} {m:6d} x {str(n):12s} {'fwd+bwd' if backward else 'fwd':7s} "
                  f"torch {base:8.1f} us  patched {patched:8.1f} us  x{base / patched:5.2f}", flush=True)
    print("\nthreshold (smallest numel from which patched >= torch at all larger sizes):")
    for op in ("layer_norm", "softmax", "linear_relu"):
        for dtype in ("bfloat16", "float32"):
            for backward in (False, True):
                sel = sorted((r for r in rows if r["op"] == op and r["dtype"] == dtype and r["backward"] == backward),
                             key=lambda r: r["numel"])
                if not sel:
                    continue
                threshold = None
                for i, r in enumerate(sel):
                    if all(s["ratio"] >= 1.0 for s in sel[i:]):
                        threshold = r["numel"]
                        break
                print(f"  {op:12s} {dtype:9s} {'fwd+bwd' if backward else 'fwd':7s} -> {threshold}")
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
