"""Host cost of patched calls that fall back, per call and per kind (isolates the glue's CPU time).

    python benchmarks/probe_fallback_cost.py

1. Per call, host microseconds to issue one call on a small CUDA tensor (GPU never the bottleneck),
   unpatched vs patched-but-falling-back (size policy), forward only and forward+backward: LayerNorm,
   a module's F.softmax, a Linear->ReLU pair.
2. BERT-base relu train step (eager, bf16, 8x512): host issue ms with no patch, every kind, and each kind
   alone, in alternating rounds; and the same with Python's gc disabled.
"""
from __future__ import annotations

import gc
import logging
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import tritonpatch
from bench_e2e import build  # noqa: E402
from timing import cpu_us  # noqa: E402


class Attn(nn.Module):
    def forward(self, x):
        return F.softmax(x, dim=-1)


def issue_us(fn) -> float:
    """Host microseconds per call: median of 5 batches of 600 (timing.cpu_us)."""
    return cpu_us(fn, n=3000, warmup=100, batches=5)


def per_call() -> None:
    dev = "cuda"
    x = torch.randn(64, 256, device=dev, dtype=torch.bfloat16)
    xg = x.clone().requires_grad_()
    cases = {
        "LayerNorm": nn.LayerNorm(256).to(dev, torch.bfloat16),
        "F.softmax in a module": Attn(),
        "Linear->ReLU pair": nn.Sequential(nn.Linear(256, 256), nn.ReLU()).to(dev, torch.bfloat16),
    }
    print(f"{'per call, host us':28s} {'fwd torch':>10s} {'fwd patched':>12s} {'f+b torch':>10s} {'f+b patched':>12s}")
    for name, m in cases.items():
        def fwd():
            with torch.no_grad():
                m(x)

        def fb():
            m(xg).sum().backward()
        r = [issue_us(fwd), None, issue_us(fb), None]
        with tritonpatch.patch(m) as p:
            r[1], r[3] = issue_us(fwd), issue_us(fb)
        first = str(p).splitlines()[0]
        print(f"{name:28s} {r[0]:10.1f} {r[1]:12.1f} {r[2]:10.1f} {r[3]:12.1f}   ({first[first.find(':') + 2:]})")


def steps() -> None:
    model = build("bert-base-relu", "eager").to("cuda", torch.bfloat16).train()
    ids = torch.randint(0, model.config.vocab_size, (8, 512), device="cuda")

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    def issue_ms(n: int = 6) -> float:
        step()
        torch.cuda.synchronize()
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            step()
            t.append(time.perf_counter() - t0)
            torch.cuda.synchronize()
        return statistics.median(t) * 1e3
    variants = {"none": None, "all": {}, "layer_norm only": dict(softmax=False, linear_relu=False),
                "softmax only": dict(layer_norm=False, linear_relu=False),
                "linear_relu only": dict(layer_norm=False, softmax=False)}
    for gc_off in (False, True):
        if gc_off:
            gc.collect()
            gc.disable()
        res = {k: [] for k in variants}
        for _ in range(5):
            for k, kw in variants.items():
                if kw is None:
                    res[k].append(issue_ms())
                else:
                    with tritonpatch.patch(model, **kw):
                        res[k].append(issue_ms())
        gc.enable()
        base = statistics.median(res["none"])
        print(f"BERT train step host issue ms{' (gc off)' if gc_off else ''}:")
        for k, v in res.items():
            m = statistics.median(v)
            print(f"  {k:18s} {m:7.2f}  ({m - base:+.2f})  rounds {[round(t, 1) for t in v]}")


def main() -> None:
    logging.getLogger("tritonpatch").setLevel(logging.ERROR)
    per_call()
    steps()


if __name__ == "__main__":
    main()
