"""Fixed CPU cost of a Python autograd.Function on this host, and where a patched LayerNorm's
training time goes in a model (torch profiler: our kernels' GPU time vs torch's).

    python benchmarks/probe_autograd.py
"""
from __future__ import annotations

import time

import torch
from torch import nn

import tritonpatch
from bench_e2e import build  # noqa: E402
from timing import cpu_us  # noqa: E402 (benchmarks/ is on sys.path)


class Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g


def main() -> None:
    x = torch.randn(64, 64, device="cuda", requires_grad=True)
    g = torch.randn(64, 64, device="cuda")
    ln = nn.LayerNorm(64).cuda()
    print(f"x.mul(2).backward            {cpu_us(lambda: x.mul(2).backward(g)):7.1f} us")
    print(f"Identity.apply().backward    {cpu_us(lambda: Identity.apply(x).backward(g)):7.1f} us")
    print(f"Identity.apply() only        {cpu_us(lambda: Identity.apply(x)):7.1f} us")
    print(f"torch LN fwd+bwd             {cpu_us(lambda: ln(x).backward(g)):7.1f} us")
    with tritonpatch.patch(ln):
        print(f"patched LN fwd+bwd           {cpu_us(lambda: ln(x).backward(g)):7.1f} us")
        print(f"patched LN fwd only (grad)   {cpu_us(lambda: ln(x)):7.1f} us")
    print(f"torch LN fwd only (grad)     {cpu_us(lambda: ln(x)):7.1f} us")

    model = build("opt-350m", "eager", layers=6).to("cuda", torch.bfloat16).train()
    ids = torch.randint(0, 1000, (8, 512), device="cuda")

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
    for label, kw in (("torch", None), ("layer_norm only", dict(softmax=False, linear_relu=False))):
        p = tritonpatch.patch(model, **kw) if kw else None
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / 5 * 1e3
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        ev = prof.key_averages()
        tot = sum(e.device_time_total for e in ev) / 1e3
        norm = sum(e.device_time_total for e in ev if "norm" in e.key.lower()) / 1e3
        print(f"{label:16s}: wall {wall:.2f} ms/step, GPU kernels {tot:.2f} ms, of which *norm* {norm:.3f} ms")
        for e in sorted(ev, key=lambda e: -e.device_time_total)[:8]:
            print(f"    {e.key[:70]:70s} {e.device_time_total / 1e3:8.3f} ms  x{e.count}")
        if p:
            p.unpatch()


if __name__ == "__main__":
    main()
