"""Probe: where does the fused Linear+ReLU lose time? cuBLASLt's bias+ReLU epilogue for comparison.

    python benchmarks/probe_linear_relu.py
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton

from tritonpatch.ops import linear_relu as op


def ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def main() -> None:
    torch.manual_seed(0)
    print("shape               F.linear  lin+relu  fused  addmm_act(cuBLASLt)   [fwd ms, bf16]")
    for m, k, n in ((8192, 768, 3072), (16384, 1024, 4096), (8192, 4096, 16384), (128, 4096, 4096),
                    (2048, 768, 3072), (512, 1024, 4096)):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = (torch.randn(n, k, device="cuda") * k**-0.5).to(torch.bfloat16)
        b = torch.randn(n, device="cuda", dtype=torch.bfloat16)
        ref = F.relu(F.linear(x, w, b))
        act = torch._addmm_activation(b, x, w.t())
        err = ((act.float() - ref.float()).norm() / ref.float().norm()).item()
        t = [ms(lambda: F.linear(x, w, b)), ms(lambda: F.relu(F.linear(x, w, b))),
             ms(lambda: op.linear_relu(x, w, b)), ms(lambda: torch._addmm_activation(b, x, w.t()))]
        print(f"{m:6d}x{k:5d}->{n:6d}  " + "  ".join(f"{v:.4f}" for v in t) + f"   (epilogue rel diff {err:.1e})")
    # Profile the fused forward+backward at a shape where it was slow.
    m, k, n = 128, 4096, 4096
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(n, k, device="cuda") * k**-0.5).to(torch.bfloat16).requires_grad_()
    b = torch.randn(n, device="cuda", dtype=torch.bfloat16).requires_grad_()
    dy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    for label, f in (("fused", lambda: op.linear_relu(x, w, b)), ("eager", lambda: F.relu(F.linear(x, w, b)))):
        for _ in range(5):
            f().backward(dy)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                f().backward(dy)
            torch.cuda.synchronize()
        print(f"\n== {label} fwd+bwd x10 at {m}x{k}->{n}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()
