"""CPU cost of launching one Triton kernel: JITFunction[grid](...) vs the compiled kernel's own launcher.

    python benchmarks/probe_launch.py
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl
from triton import knobs
from timing import cpu_us  # noqa: E402 (benchmarks/ is on sys.path)


@triton.jit
def _copy(x_ptr, y_ptr, w_ptr, b_ptr, m_ptr, r_ptr, stride, n, M, N, eps,
          HAS_W: tl.constexpr, HAS_B: tl.constexpr, STORE: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    v = tl.load(x_ptr + pid * stride + offs, mask=offs < n)
    tl.store(y_ptr + pid * stride + offs, v, mask=offs < n)


def main() -> None:
    x = torch.randn(64, 64, device="cuda")
    y = torch.empty_like(x)
    args = (x, y, x, x, x, x, 64, 64, 64, 64, 1e-5)
    kw = dict(HAS_W=True, HAS_B=True, STORE=False, BLOCK=64, ROWS=1)
    k = _copy[(64,)](*args, **kw, num_warps=4)
    dev = torch.cuda.current_device()
    allargs = (*args, True, True, False, 64, 1)
    run, fn, meta = k.run, k.function, k.packed_metadata
    raw_stream = torch._C._cuda_getCurrentRawStream

    def direct():
        run(64, 1, 1, raw_stream(dev), fn, meta, None, None, None, *allargs)
    print(f"jit launch          {cpu_us(lambda: _copy[(64,)](*args, **kw, num_warps=4)):.2f} us")
    print(f"direct launch       {cpu_us(direct):.2f} us")
    print(f"torch.empty_like    {cpu_us(lambda: torch.empty_like(x)):.2f} us")
    print(f"x.data_ptr()%16     {cpu_us(lambda: x.data_ptr() % 16):.2f} us")
    print(f"raw stream          {cpu_us(lambda: raw_stream(dev)):.2f} us")
    direct()
    torch.testing.assert_close(y, x)
    print("direct launch wrote the right values; launch hook:", knobs.runtime.launch_enter_hook)


if __name__ == "__main__":
    main()
