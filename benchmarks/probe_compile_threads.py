"""Does torch.compile, once it has run in a process, slow down Python autograd nodes in that process?

    python benchmarks/probe_compile_threads.py

The suite times every provider of a shape in one process, torch.compile among them. Its forward+backward
rows of Python-autograd providers (tritonpatch, Liger, torch.compile's own) are far slower per call than
the isolated probes (overhead_parts.py) say. This probe times per call, in a fresh process, a LayerNorm
forward+backward (torch, and patched) and an identity autograd.Function, then runs torch.compile on a
LayerNorm forward+backward once (as the suite does), lists the threads it left, and times them again.
"""
from __future__ import annotations

import os
import sys
import threading

import torch
import torch.nn.functional as F
from torch import nn
from triton.testing import do_bench

os.environ["TRITONPATCH_SIZE_POLICY"] = "0"  # the patched LayerNorm must run on Triton at this size
import tritonpatch  # noqa: E402
from crossover import per_call_us  # noqa: E402 (benchmarks/ is on sys.path)
from probe_autograd import Identity  # noqa: E402


def measure(tag: str) -> None:
    ln = nn.LayerNorm(4096).cuda().to(torch.bfloat16)
    x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn_like(x)
    small = torch.randn(64, 64, device="cuda", requires_grad=True)
    g = torch.randn(64, 64, device="cuda")

    def step():
        ln(x).backward(dy)
    rows = [("identity Function fwd+bwd (64x64)", per_call_us(lambda: Identity.apply(small).backward(g))),
            ("LayerNorm 8192x4096 fwd+bwd, torch", per_call_us(step))]
    torch_db = do_bench(step, grad_to_none=[x, ln.weight, ln.bias], return_mode="median") * 1e3
    with tritonpatch.patch(ln) as p:
        rows.append(("LayerNorm 8192x4096 fwd+bwd, patched", per_call_us(step)))
        ours_db = do_bench(step, grad_to_none=[x, ln.weight, ln.bias], return_mode="median") * 1e3
    assert p.layers[0].triton_calls > 0 and not p.layers[0].fallback_calls, str(p)
    rows += [("  same, do_bench median: torch", torch_db), ("  same, do_bench median: patched", ours_db)]
    print(f"-- {tag}: {threading.active_count()} Python threads, switch interval {sys.getswitchinterval() * 1e3:.1f} ms")
    for name, us in rows:
        print(f"{name:42s} {us:9.1f} us")


def main() -> None:
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    measure("fresh process")
    x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    compiled = torch.compile(lambda a, b: F.layer_norm(a, (4096,), b, b), dynamic=False)
    compiled(x, w).sum().backward()
    torch.cuda.synchronize()
    print("threads after torch.compile:", sorted(t.name for t in threading.enumerate()))
    measure("after one torch.compile")
    measure("after one torch.compile, again")


if __name__ == "__main__":
    main()
