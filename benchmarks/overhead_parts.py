"""CPU cost per call of each piece of the patched path (small tensors, so the CPU is the bottleneck).

    python benchmarks/overhead_parts.py

Each row is the median of 10 timed batches of calls (the hosts these run on are preempted now and then).
A patched module is timed twice: on its Triton (or cuBLASLt) path with the size policy off, and falling
back with it on (64x64 is below every threshold). (Runs before 2026-11-30 17:20 UTC timed only the
second, under the first's name.)
"""
from __future__ import annotations

import gc

import torch
import torch.nn.functional as F
from torch import nn

import tritonpatch
from tritonpatch.ops import common
from tritonpatch.ops import layer_norm as ln_op
from tritonpatch.ops import linear_relu as lr_op
from tritonpatch.ops import softmax as sm_op
from timing import cpu_us as _cpu_us  # noqa: E402 (benchmarks/ is on sys.path)


def cpu_us(fn, n: int = 2000) -> float:
    return _cpu_us(fn, n, batches=10)


def size_policy(on: bool):
    """The size policy on or off for the block."""
    return common.environment(TRITONPATCH_SIZE_POLICY="1" if on else "0")


def both_paths(rows: list, name: str, fn, n: int = 2000) -> None:
    """Time a patched call on its Triton path and falling back."""
    with size_policy(False):
        rows.append((name + ", Triton", cpu_us(fn, n)))
    with size_policy(True):
        rows.append((name + ", falls back", cpu_us(fn, n)))


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(64, 64), nn.ReLU()

    def forward(self, x):
        h = self.fc(x)
        h = self.act(h)
        return h


class Soft(nn.Module):
    def forward(self, x):
        return F.softmax(x, dim=-1, dtype=torch.float32)


def main() -> None:
    dev, dt = "cuda", torch.bfloat16
    x = torch.randn(64, 64, device=dev, dtype=dt)
    ln = nn.LayerNorm(64).to(dev, dt)
    w, b = ln.weight, ln.bias
    pair = Pair().to(dev, dt)
    soft = Soft()
    rows = []
    with torch.no_grad():
        rows.append(("F.layer_norm", cpu_us(lambda: F.layer_norm(x, (64,), w, b))))
        rows.append(("nn.LayerNorm module", cpu_us(lambda: ln(x))))
        rows.append(("ln unsupported()", cpu_us(lambda: ln_op.unsupported(x, (64,), w, b, 1e-5))))
        rows.append(("ln_op.layer_norm", cpu_us(lambda: ln_op.layer_norm(x, (64,), w, b))))
        rows.append(("ln _forward (launch)", cpu_us(lambda: ln_op.forward_rows(x, 64, w, b, 1e-5, False))))
        with tritonpatch.patch(ln):
            both_paths(rows, "patched LayerNorm module", lambda: ln(x))
        rows.append(("F.linear + relu", cpu_us(lambda: F.relu(F.linear(x, pair.fc.weight, pair.fc.bias)))))
        rows.append(("_addmm_activation", cpu_us(lambda: torch._addmm_activation(pair.fc.bias, x, pair.fc.weight.t()))))
        rows.append(("pair module", cpu_us(lambda: pair(x))))
        rows.append(("lr unsupported()", cpu_us(lambda: lr_op.unsupported(x, pair.fc.weight, pair.fc.bias))))
        rows.append(("lr_op cublaslt", cpu_us(lambda: lr_op.linear_relu(x, pair.fc.weight, pair.fc.bias, "cublaslt"))))
        rows.append(("lr_op triton", cpu_us(lambda: lr_op.linear_relu(x, pair.fc.weight, pair.fc.bias, "triton"))))
        with tritonpatch.patch(pair):
            both_paths(rows, "patched pair module", lambda: pair(x))
        rows.append(("softmax module", cpu_us(lambda: soft(x))))
        rows.append(("sm unsupported()", cpu_us(lambda: sm_op.unsupported(x, -1, torch.float32))))
        rows.append(("sm_op.softmax", cpu_us(lambda: sm_op.softmax(x, -1, torch.float32))))
        with tritonpatch.patch(soft):
            both_paths(rows, "patched softmax module", lambda: soft(x))
            rows.append(("F.softmax outside the model, patched", cpu_us(lambda: F.softmax(x, dim=-1))))
    xg = x.detach().requires_grad_()
    dy = torch.randn_like(x)
    rows.append(("LayerNorm fwd+bwd torch", cpu_us(lambda: ln(xg).backward(dy), 500)))
    with tritonpatch.patch(ln):
        both_paths(rows, "LayerNorm fwd+bwd patched", lambda: ln(xg).backward(dy), 500)
    gc.disable()
    with tritonpatch.patch(ln), size_policy(False):
        rows.append(("LayerNorm fwd+bwd patched, Triton, gc off", cpu_us(lambda: ln(xg).backward(dy), 500)))
    gc.enable()
    x2 = x.detach()
    mean = torch.zeros(64, device=dev)
    if hasattr(ln_op, "backward_rows"):  # (this script also times the code of earlier commits)
        rows.append(("ln backward (launches)",
                     cpu_us(lambda: ln_op.backward_rows(x2, dy, 64, w, mean, mean, True, True, True, dt), 500)))
    else:
        rows.append(("ln backward (launches)",
                     cpu_us(lambda: ln_op._backward(x2, dy, w, mean, mean, True, True, True, dt, x2.shape), 500)))
    for name, v in rows:
        print(f"{name:40s} {v:8.1f} us")
    import cProfile
    import io
    import pstats
    with tritonpatch.patch(ln), size_policy(False):
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(300):
            ln(xg).backward(dy)
        prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
    print(out.getvalue())


if __name__ == "__main__":
    main()
