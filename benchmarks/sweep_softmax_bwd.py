"""Launch-config sweep of the softmax row kernels (backward, and forward for reference) on a GPU.

    python benchmarks/sweep_softmax_bwd.py

For each shape: torch's time, ours with the shipped heuristic, and the best (ROWS, num_warps) found,
as ms and % of the copy ceiling. The result sets ``_rows_config`` in tritonpatch/ops/softmax.py.
"""
from __future__ import annotations

import torch
from triton.testing import do_bench

from tritonpatch.kernels import softmax as K
from tritonpatch.ops import softmax as S
from tritonpatch.ops.common import next_power_of_2


def copy_gbs() -> float:
    a = torch.empty(2 ** 28, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), return_mode="median")
    return 2 * a.numel() / ms / 1e6


def main() -> None:
    ceiling = copy_gbs()
    print(f"copy ceiling {ceiling:.0f} GB/s")
    shapes = [  # (rows, width, y dtype, dy dtype) — y is the forward's output (fp32 when dtype=float32)
        (65536, 512, torch.float32, torch.float32),   # OPT eager attention, dtype=fp32 softmax
        (65536, 512, torch.bfloat16, torch.bfloat16),
        (16384, 2048, torch.bfloat16, torch.bfloat16),
        (16384, 2048, torch.float32, torch.float32),
        (8192, 4096, torch.bfloat16, torch.bfloat16),
        (32768, 1024, torch.bfloat16, torch.bfloat16),
        (4096, 8192, torch.bfloat16, torch.bfloat16),
    ]
    for m, n, ydt, dydt in shapes:
        y = torch.softmax(torch.randn(m, n, device="cuda"), -1).to(ydt)
        dy = torch.randn(m, n, device="cuda", dtype=dydt)
        dx = torch.empty(m, n, device="cuda", dtype=dydt)
        nbytes = m * n * (y.element_size() + 2 * dy.element_size())
        t_torch = do_bench(lambda: torch.ops.aten._softmax_backward_data(dy, y, -1, dydt), return_mode="median")
        t_ours = do_bench(lambda: S._backward(y, dy, 1, dydt), return_mode="median")
        ref = torch.ops.aten._softmax_backward_data(dy.float(), y.float(), -1, torch.float32)
        results = []
        block = next_power_of_2(n)
        for rows in (1, 2, 4, 8, 16):
            for nw in (1, 2, 4, 8, 16):
                if rows * block > 32768 or rows * block < 32 * nw:
                    continue

                def run(rows=rows, nw=nw):
                    K.softmax_bwd_rows_kernel[(-(-m // rows),)](
                        y, dy, dx, m, n, n, n, 1, ROWS=rows, BLOCK_N=block, DY_COL_UNIT=True, SOFT_BF16=False,
                        num_warps=nw)
                run()
                err = ((dx.float() - ref).norm() / ref.norm()).item()
                if err > 1e-2:
                    continue
                results.append((do_bench(run, return_mode="median"), rows, nw))
        results.sort()
        best = results[0]
        cfg = S._rows_config(n, m, max(y.element_size(), dy.element_size()), 132,
                             (S.MAX_SINGLE_N_BWD, S.ROWS_TILE_BWD, S.LOOP_BLOCK_BYTES_BWD))
        print(f"bwd {m}x{n} y {str(ydt)[6:]} dy {str(dydt)[6:]}: torch {t_torch:.4f} ms, ours {t_ours:.4f} ms "
              f"(cfg rows={cfg[1]} warps={cfg[3]}, {nbytes / t_ours / 1e6 / ceiling:.0%} of copy), "
              f"best {best[0]:.4f} ms rows={best[1]} warps={best[2]} ({nbytes / best[0] / 1e6 / ceiling:.0%}); "
              f"top5 {[(round(t, 4), r, w) for t, r, w in results[:5]]}", flush=True)
    for m, n, dt in ((65536, 512, torch.bfloat16), (16384, 2048, torch.bfloat16), (8192, 4096, torch.float32)):
        x = torch.randn(m, n, device="cuda", dtype=dt)
        y = torch.empty_like(x)
        block = next_power_of_2(n)
        nbytes = 2 * x.numel() * x.element_size()
        results = []
        for rows in (1, 2, 4, 8, 16):
            for nw in (1, 2, 4, 8, 16):
                if rows * block > 32768 or rows * block < 32 * nw:
                    continue

                def runf(rows=rows, nw=nw):
                    K.softmax_fwd_rows_kernel[(-(-m // rows),)](
                        x, y, m, n, n, n, ROWS=rows, BLOCK_N=block, ROUND=False, SOFT_BF16=False, num_warps=nw)
                results.append((do_bench(runf, return_mode="median"), rows, nw))
        results.sort()
        t_ours = do_bench(lambda: S._forward(x, 1, dt), return_mode="median")
        cfg = S._rows_config(n, m, x.element_size(), 132, (S.MAX_SINGLE_N, S.ROWS_TILE, S.LOOP_BLOCK_BYTES))
        print(f"fwd {m}x{n} {str(dt)[6:]}: ours {t_ours:.4f} (rows={cfg[1]} warps={cfg[3]}, "
              f"{nbytes / t_ours / 1e6 / ceiling:.0%}), best {results[0][0]:.4f} rows={results[0][1]} "
              f"warps={results[0][2]} ({nbytes / results[0][0] / 1e6 / ceiling:.0%})", flush=True)


if __name__ == "__main__":
    main()
