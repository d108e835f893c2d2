"""Wide rows: launch-config sweep for the LayerNorm forward (single pass in registers vs the chunked
kernel) and the softmax backward (single pass vs looped) at widths 16384-65536, on a GPU.

    python benchmarks/sweep_wide.py

Prints, per shape: the shipped path's ms and % of the copy ceiling, then each candidate's. Every
candidate is checked against torch (relative error) before it is timed. The result sets FUSED_FWD_MAX
(tritonpatch/ops/layer_norm.py) and MAX_SINGLE_N_BWD / the looped block (tritonpatch/ops/softmax.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from tritonpatch.kernels import layer_norm as LK
from tritonpatch.kernels import softmax as SK
from tritonpatch.ops import layer_norm as L
from tritonpatch.ops import softmax as S
from tritonpatch.ops.common import next_power_of_2


def bench(fn) -> float:
    return do_bench(fn, warmup=10, rep=40, return_mode="median")


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def copy_ceiling() -> float:
    """GB/s of a 256 MiB device-to-device copy, bytes read + written."""
    a = torch.empty(2 ** 28, dtype=torch.uint8, device=DEVICE)
    return 2 * a.numel() / bench(lambda: a.clone()) / 1e6


DEVICE = "cuda"
LN_SHAPES = ((4096, 32768, torch.bfloat16), (4096, 65536, torch.bfloat16), (4096, 32768, torch.float32),
             (2048, 65536, torch.float32), (8192, 16384, torch.bfloat16))
SM_SHAPES = ((2048, 16384, torch.bfloat16), (1024, 32768, torch.bfloat16), (512, 65536, torch.bfloat16),
             (2048, 16384, torch.float32), (4096, 32768, torch.bfloat16))


def main() -> None:
    ceiling = copy_ceiling()
    print(f"copy ceiling {ceiling:.0f} GB/s", flush=True)
    for m, n, dt in LN_SHAPES:
        x = torch.randn(m, n, device=DEVICE, dtype=dt)
        w = torch.randn(n, device=DEVICE, dtype=dt)
        b = torch.randn(n, device=DEVICE, dtype=dt)
        ref = F.layer_norm(x.float(), (n,), w.float(), b.float(), 1e-5)
        nbytes = 2 * x.numel() * x.element_size()
        t = bench(lambda: L.forward_rows(x, n, w, b, 1e-5, False))
        line = [f"LN fwd {m}x{n} {str(dt)[6:]}: shipped {t:.4f} ms {nbytes / t / 1e6 / ceiling:.0%}"]
        y = torch.empty_like(x)
        block = next_power_of_2(n)
        for nw in (8, 16, 32):
            def run(nw=nw):
                LK.layer_norm_fwd_kernel[(m,)](x, y, w, b, x, x, n, n, m, n, 1e-5, HAS_W=True, HAS_B=True,
                                               STORE_STATS=False, BLOCK_N=block, ROWS=1, EVEN=False,
                                               num_warps=nw)
            try:
                run()
                e = rel(y, ref)
                tt = bench(run)
                line.append(f"single nw={nw}: {tt:.4f} ({nbytes / tt / 1e6 / ceiling:.0%}, err {e:.1e})")
            except Exception as ex:  # noqa: BLE001 (out of resources: report)
                line.append(f"single nw={nw}: {type(ex).__name__}")
        print("; ".join(line), flush=True)
    for m, n, dt in SM_SHAPES:
        y = torch.softmax(torch.randn(m, n, device=DEVICE), -1).to(dt)
        dy = torch.randn(m, n, device=DEVICE, dtype=dt)
        ref = torch.ops.aten._softmax_backward_data(dy.float(), y.float(), -1, torch.float32)
        nbytes = 3 * y.numel() * y.element_size()
        t_torch = bench(lambda: torch.ops.aten._softmax_backward_data(dy, y, -1, dt))
        t = bench(lambda: S._backward(y, dy, 1, dt))
        line = [f"SM bwd {m}x{n} {str(dt)[6:]}: torch {t_torch:.4f}, shipped {t:.4f} ms "
                f"{nbytes / t / 1e6 / ceiling:.0%}"]
        dx = torch.empty_like(dy)
        block = next_power_of_2(n)
        cands = [("single", nw, block) for nw in (16, 32) if block <= 32768]
        cands += [("looped", nw, bn) for bn in (2048, 4096, 8192) for nw in (4, 8, 16) if bn >= 32 * nw]
        for kind, nw, bn in cands:
            def run(kind=kind, nw=nw, bn=bn):
                if kind == "single":
                    SK.softmax_bwd_rows_kernel[(m,)](y, dy, dx, m, n, n, n, 1, ROWS=1, BLOCK_N=bn, DY_COL_UNIT=True,
                                                     SOFT_BF16=False, num_warps=nw)
                else:
                    SK.softmax_bwd_rows_looped_kernel[(m,)](y, dy, dx, n, n, n, 1, BLOCK_N=bn, DY_COL_UNIT=True,
                                                            SOFT_BF16=False, L2_HINTS=False, num_warps=nw)
            try:
                run()
                e = rel(dx, ref)
                tt = bench(run)
                line.append(f"{kind} bn={bn} nw={nw}: {tt:.4f} ({nbytes / tt / 1e6 / ceiling:.0%}, err {e:.1e})")
            except Exception as ex:  # noqa: BLE001
                line.append(f"{kind} bn={bn} nw={nw}: {type(ex).__name__}")
        print("; ".join(line), flush=True)


if __name__ == "__main__":
    main()
