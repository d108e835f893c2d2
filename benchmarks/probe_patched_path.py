"""CPU cost of each step a patched LayerNorm / Linear+ReLU call takes, measured one by one (small CUDA
tensors: the host is the bottleneck). Complements overhead_parts.py, which times whole calls.

    python benchmarks/probe_patched_path.py
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

import tritonpatch
from tritonpatch import layers as L
from tritonpatch.ops import common
from tritonpatch.ops import layer_norm as ln_op
from tritonpatch.ops import linear_relu as lr_op
from overhead_parts import Pair, cpu_us as _cpu_us  # noqa: E402 (benchmarks/ is on sys.path)


def cpu_us(fn) -> float:
    return _cpu_us(fn, 4000)  # 10 batches of 400 calls, median


def main() -> None:
    dev, dt = "cuda", torch.bfloat16
    x = torch.randn(64, 64, device=dev, dtype=dt)
    ln = nn.LayerNorm(64).to(dev, dt)
    pair = Pair().to(dev, dt)
    w, b = ln.weight, ln.bias
    fc = pair.fc
    frame = sys._getframe()
    rows = []
    with torch.no_grad():
        rows.append(("nop lambda", cpu_us(lambda: None)))
        rows.append(("torch.layer_norm", cpu_us(lambda: torch.layer_norm(x, (64,), w, b, 1e-5))))
        rows.append(("F.layer_norm", cpu_us(lambda: F.layer_norm(x, (64,), w, b, 1e-5))))
        rows.append(("nn.LayerNorm module", cpu_us(lambda: ln(x))))
        rows.append(("ln.forward (no __call__)", cpu_us(lambda: ln.forward(x))))
        rows.append(("pair module", cpu_us(lambda: pair(x))))
        with tritonpatch.patch(ln), tritonpatch.patch(pair):
            state = L.STATES.get(ln)
            rows.append(("patched LayerNorm module", cpu_us(lambda: ln(x))))
            rows.append(("patched ln.forward (no __call__)", cpu_us(lambda: ln.forward(x))))
            rows.append(("patched pair module", cpu_us(lambda: pair(x))))
            rows.append(("is_compiling", cpu_us(torch.compiler.is_compiling)))
            rows.append(("STATES.get", cpu_us(lambda: L.STATES.get(ln))))
            rows.append(("autocast_dtype", cpu_us(lambda: L.autocast_dtype("layer_norm", x))))
            rows.append(("parameter x2", cpu_us(lambda: (L.parameter(ln, "weight"), L.parameter(ln, "bias")))))
            rows.append(("ln unsupported", cpu_us(lambda: ln_op.unsupported(x, (64,), w, b, 1e-5))))
            rows.append(("  device_reason", cpu_us(lambda: common.device_reason(x, w, b))))
            rows.append(("  dtype+same_dtype", cpu_us(lambda: (common.dtype_reason(x), common.same_dtype_reason(x, w, b)))))
            rows.append(("  autocast_reason", cpu_us(lambda: common.autocast_reason(x))))
            rows.append(("  records_grad", cpu_us(lambda: common.records_grad(x, w, b))))
            rows.append(("  size_policy_on", cpu_us(common.size_policy_on)))
            rows.append(("  os.environ.get", cpu_us(lambda: os.environ.get("TRITONPATCH_SIZE_POLICY", "1"))))
            rows.append(("record.count(reason)", cpu_us(lambda: state.record.count("torch is faster at this size"))))
            rows.append(("lr unsupported", cpu_us(lambda: lr_op.unsupported(x, fc.weight, fc.bias))))
            rows.append(("forward_provider", cpu_us(lambda: lr_op.forward_provider(x))))
            rows.append(("x.device.type", cpu_us(lambda: x.device.type)))
            rows.append(("_hooked", cpu_us(lambda: L._hooked(fc))))
            rows.append(("frame.f_locals.get", cpu_us(lambda: frame.f_locals.get("self"))))
            rows.append(("sys._getframe(1)", cpu_us(lambda: sys._getframe(1))))
            rows.append(("take_fused", cpu_us(lambda: L.take_fused(x))))
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, python {sys.version.split()[0]}")
    for name, us in rows:
        print(f"{name:36s} {us:7.2f} us")


if __name__ == "__main__":
    main()
