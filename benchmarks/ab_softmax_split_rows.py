"""The shipped softmax with rows split over programs (``SPLIT_ROWS``) against the same op with it off, on the
rows it takes: forward and backward GPU time (``do_bench`` medians, alternating on/off three times).

    python benchmarks/ab_softmax_split_rows.py

Prints the device properties the grid is sized from, then per shape and pass: the split plan (K chunks per
row, grid, programs per SM), the times on/off and their ratio, and the output's error against float64.
"""
from __future__ import annotations

import torch
import triton
from triton.testing import do_bench

from tritonpatch.ops import softmax as S

SHAPES = [(512, 65536, torch.float32), (1024, 32768, torch.float32), (256, 131072, torch.float32),
          (512, 65536, torch.bfloat16), (256, 131072, torch.bfloat16), (512, 128256, torch.bfloat16),
          (1024, 49152, torch.float16), (64, 65536, torch.float32), (2048, 16384, torch.float32)]


def bench(fn) -> float:
    return do_bench(fn, warmup=10, rep=50, return_mode="median")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b).norm() / b.norm()).item()


def describe(plan) -> str:
    if isinstance(plan, S._RowsSplitLaunch) and plan.main is not None:
        g, k = plan.main.grid[0], plan.main.constexprs["K"]
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        return f"split K={k} grid={g} (~{g / sms:.1f}/SM) warps={plan.main.num_warps}"
    return type(plan).__name__


def main() -> None:
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, {props.multi_processor_count} SMs, regs/SM {getattr(props, 'regs_per_multiprocessor', '?')},"
          f" threads/SM {getattr(props, 'max_threads_per_multi_processor', '?')}, smem/SM "
          f"{getattr(props, 'shared_memory_per_multiprocessor', '?')}; torch {torch.__version__}, triton {triton.__version__}")
    for m, n, dt in SHAPES:
        x = torch.randn(m, n, device="cuda", dtype=dt) * 3
        y = torch.softmax(torch.randn(m, n, device="cuda") * 3, -1).to(dt)
        dy = torch.randn(m, n, device="cuda", dtype=dt)
        ref_f = torch.softmax(x.double(), -1)
        yd = y.double()
        ref_b = yd * (dy.double() - (yd * dy.double()).sum(-1, keepdim=True))
        for name, run, ref, nbytes in (
                ("fwd", lambda: S._forward(x, 1, dt), ref_f, 2 * x.numel() * x.element_size()),
                ("bwd", lambda: S._backward(y, dy, 1, dt), ref_b, 3 * x.numel() * x.element_size())):
            times = {True: [], False: []}
            plans = {}
            errs = {}
            for _ in range(3):
                for on in (True, False):
                    S.SPLIT_ROWS = on
                    plans[on] = (S._fwd_plan(x.shape, x.stride(), 1, dt, dt, x.device, S._heuristics()) if name == "fwd"
                                 else S._bwd_plan(y.shape, dy.stride(), 1, dt, dt, dt, y.device, S._bwd_heuristics()))
                    errs[on] = rel(run(), ref)
                    times[on].append(bench(run))
            S.SPLIT_ROWS = True
            on, off = sorted(times[True])[1], sorted(times[False])[1]
            print(f"{name} {m}x{n} {str(dt)[6:]}: {describe(plans[True])}; on {on * 1e3:.1f} us"
                  f" ({nbytes / on / 1e6:.0f} GB/s) off {off * 1e3:.1f} us ({nbytes / off / 1e6:.0f} GB/s)"
                  f" off/on {off / on:.2f}x; err on {errs[True]:.1e} off {errs[False]:.1e}", flush=True)


if __name__ == "__main__":
    main()
