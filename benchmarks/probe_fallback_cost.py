"""Host cost of patched calls that fall back, per call and per kind (isolates the glue's CPU time).

    python benchmarks/probe_fallback_cost.py

1. Per call, host microseconds to issue one call on a small CUDA tensor (GPU never the bottleneck),
   unpatched vs patched-but-falling-back (size policy), forward only and forward+backward: LayerNorm,
   a module's F.softmax, a Linear->ReLU pair.
2. ``parts``: single pieces of the fallback path, best of 9 timeit repeats (``--only parts``).
3. BERT-base relu train step (eager, bf16, 8x512): host issue ms with no patch, every kind, and each kind
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


def parts() -> None:
    """Host cost of single pieces of the fallback path: the best of 9 timeit repeats of 20000 calls each
    (the host's least contended repeat), in microseconds per call."""
    import threading
    import timeit
    import weakref

    from tritonpatch import layers

    class WithDefault(threading.local):
        fused = None
    plain_local, with_default = threading.local(), WithDefault()
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    ln = nn.LayerNorm(256).to("cuda", torch.bfloat16)
    w, b = ln.weight, ln.bias
    states = weakref.WeakKeyDictionary({ln: 1})
    data, ref = states.data, weakref.ref
    cases = {
        "getattr(threading.local(), 'fused', None), unset": lambda: getattr(plain_local, "fused", None),
        "threading.local subclass with a class default": lambda: with_default.fused,
        "torch.backends.cudnn.enabled": lambda: torch.backends.cudnn.enabled,
        "torch._C._get_cudnn_enabled()": lambda: torch._C._get_cudnn_enabled(),
        "WeakKeyDictionary.get(module)": lambda: states.get(ln),
        "its .data.get(weakref.ref(module))": lambda: data.get(ref(ln)),
        "module.weight (nn.Module.__getattr__)": lambda: ln.weight,
        "layers.weight_and_bias(module)": lambda: layers.weight_and_bias(ln),
        "F.layer_norm, CUDA 64x256 bf16": lambda: F.layer_norm(x, (256,), w, b),
        "layers.torch_layer_norm, same": lambda: layers.torch_layer_norm(x, (256,), w, b, 1e-5),
    }
    with torch.no_grad():
        for name, fn in cases.items():
            best = min(timeit.repeat(fn, number=20000, repeat=9)) / 20000 * 1e6
            print(f"{name:52s} {best:7.3f} us")
    torch.cuda.synchronize()


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="per_call,parts,steps", help="comma-separated: per_call, parts, steps")
    only = ap.parse_args().only.split(",")
    logging.getLogger("tritonpatch").setLevel(logging.ERROR)
    for name, fn in (("per_call", per_call), ("parts", parts), ("steps", steps)):
        if name in only:
            fn()


if __name__ == "__main__":
    main()
