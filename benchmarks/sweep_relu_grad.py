"""The Linear+ReLU backward's elementwise part: torch's ``threshold_backward`` then ``g.sum(0)`` against
one Triton pass writing g and fp32 column partials of grad_b (``relu_grad_kernel``) plus the fixed-order
partial sum, over launch configs; then the whole backward (with the two cuBLAS GEMMs) both ways.
GPU time from CUDA graph replays over rotating inputs (> 2x L2), each output checked first.

    python benchmarks/sweep_relu_grad.py [--quick]
"""
from __future__ import annotations

import argparse
import itertools

import torch

from bench_gpu_time import L2_BYTES, copy_gbs, graph_ms
from tritonpatch.kernels import linear_relu as _k
from tritonpatch.ops.column_sums import column_sums_launch
from tritonpatch.ops.common import cdiv
from tritonpatch.ops.launch import FastKernel

relu_grad = FastKernel(_k.relu_grad_kernel)
SHAPES = [(8192, 768, 3072), (16384, 1024, 4096), (8192, 4096, 16384), (4096, 16384, 4096), (2048, 768, 3072),
          (128, 4096, 4096)]


def ours(dy, y, bm, bn, warps, per_sm):
    M, N = dy.shape
    g = torch.empty((M, N), dtype=dy.dtype, device=dy.device)
    n_cb = cdiv(N, bn)
    tiles = cdiv(M, bm)
    G = max(1, min(tiles, 132 * per_sm // n_cb))
    rpp = cdiv(tiles, G) * bm
    G = cdiv(M, rpp)
    part = torch.empty((G, N), dtype=torch.float32, device=dy.device)
    even = M % rpp == 0 and N % bn == 0
    relu_grad[(G, n_cb)](dy, y, g, part, M, N, dy.stride(0), y.stride(0), rpp,
                         EVEN=even, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps)
    db = torch.empty(N, dtype=dy.dtype, device=dy.device)
    column_sums_launch(G, N, 1, None)(part, db, db)
    return g, db


def torch_pass(dy, y):
    g = torch.ops.aten.threshold_backward(dy, y, 0)
    return g, g.sum(0)


def whole_backward() -> None:
    """The whole backward (both GEMMs), torch's elementwise passes vs the shipped relu_grad, timed
    alternately (ABABAB): long GEMM rows can lose clock speed to whichever runs second."""
    from tritonpatch.ops import linear_relu as lr_op
    print(f"# {torch.cuda.get_device_name()}: whole backward, bf16, GPU us per call (CUDA graphs), ABABAB")
    for M, K, N in SHAPES:
        nsets = max(2, min(8, -(-2 * L2_BYTES // (2 * M * N * 2))))
        sets = [dict(dy=torch.randn(M, N, device="cuda", dtype=torch.bfloat16),
                     y=torch.randn(M, N, device="cuda", dtype=torch.bfloat16).relu_(),
                     w=torch.randn(N, K, device="cuda", dtype=torch.bfloat16),
                     x=torch.randn(M, K, device="cuda", dtype=torch.bfloat16)) for _ in range(nsets)]

        def bwd_torch(s):
            g, db = torch_pass(s["dy"], s["y"])
            return torch.mm(g, s["w"]), torch.mm(g.t(), s["x"]), db

        def bwd_ours(s):
            return lr_op._backward_cublas(s["dy"], s["y"], s["x"], s["w"], True, True, True)
        a, b = [], []
        for _ in range(3):
            a.append(graph_ms(bwd_torch, sets) * 1e3)
            b.append(graph_ms(bwd_ours, sets) * 1e3)
        print(f"{M}x{K}->{N}: torch {' '.join(f'{t:7.1f}' for t in a)} | ours {' '.join(f'{t:7.1f}' for t in b)}"
              f" | medians {sorted(a)[1] / sorted(b)[1]:4.2f}x", flush=True)
        del sets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--whole", action="store_true",
                    help="only the whole backward, shipped tile, torch/ours alternated 3 times (bf16)")
    args = ap.parse_args()
    if args.whole:
        return whole_backward()
    ceil = copy_gbs()
    print(f"# {torch.cuda.get_device_name()}, copy ceiling {ceil:.0f} GB/s; GPU us per call (CUDA graphs)")
    configs = list(itertools.product((8, 16, 32), (128, 256, 512), (4, 8), (4,))) + \
        [(16, 256, 4, 2), (16, 256, 4, 8), (32, 256, 8, 2), (32, 256, 8, 8), (16, 512, 8, 8), (8, 512, 4, 8)]
    if args.quick:
        configs = configs[:4]
    best_cfg: dict = {}
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for M, K, N in SHAPES:
            es = torch.tensor([], dtype=dtype).element_size()
            nsets = max(2, min(8, -(-2 * L2_BYTES // (2 * M * N * es))))
            sets = [dict(dy=torch.randn(M, N, device="cuda", dtype=dtype),
                         y=torch.randn(M, N, device="cuda", dtype=dtype).relu_()) for _ in range(nsets)]
            for s in sets:
                s["y"][torch.rand(M, N, device="cuda") < 0.01] = float("nan") if dtype != torch.float32 else -0.0
            g_ref, db_ref = torch_pass(sets[0]["dy"], sets[0]["y"])
            db64 = torch.ops.aten.threshold_backward(sets[0]["dy"].double(), sets[0]["y"].double(), 0).sum(0)
            bytes_ = 3 * M * N * es
            t_torch = graph_ms(lambda s: torch_pass(s["dy"], s["y"]), sets) * 1e3
            t_thr = graph_ms(lambda s: torch.ops.aten.threshold_backward(s["dy"], s["y"], 0), sets) * 1e3
            line = [f"{str(dtype)[6:]} {M}x{N}: torch thr+sum {t_torch:7.1f} us (thr {t_thr:6.1f}, "
                    f"{bytes_ / t_thr / 1e3 / ceil * 100:4.1f}% of copy)"]
            res = []
            cfgs = configs if dtype == torch.bfloat16 else [best_cfg[(M, N)]]
            for cfg in cfgs:
                g, db = ours(sets[0]["dy"], sets[0]["y"], *cfg)
                ok = torch.equal(g, g_ref)
                err = ((db.double() - db64).norm() / db64.norm()).item()
                err_t = ((db_ref.double() - db64).norm() / db64.norm()).item()
                if not ok or err > 2 * err_t + 1e-6:
                    line.append(f"  cfg {cfg}: WRONG (g equal {ok}, db err {err:.2e} vs torch {err_t:.2e})")
                    continue
                t = graph_ms(lambda s, c=cfg: ours(s["dy"], s["y"], *c), sets) * 1e3
                res.append((t, cfg, err, err_t))
            res.sort()
            for t, cfg, err, err_t in res[:5]:
                line.append(f"  cfg {cfg}: {t:7.1f} us ({t_torch / t:4.2f}x; {bytes_ / t / 1e3 / ceil * 100:4.1f}%"
                            f" of copy) db err {err:.1e} (torch {err_t:.1e})")
            if dtype == torch.bfloat16:
                best_cfg[(M, N)] = res[0][1]
            # the whole backward, both ways
            ws = [torch.randn(N, K, device="cuda", dtype=dtype) for _ in sets]
            xs = [torch.randn(M, K, device="cuda", dtype=dtype) for _ in sets]
            for s, w, x in zip(sets, ws, xs):
                s["w"], s["x"] = w, x
            cfg = res[0][1]

            def bwd_torch(s):
                g, db = torch_pass(s["dy"], s["y"])
                return torch.mm(g, s["w"]), torch.mm(g.t(), s["x"]), db

            def bwd_ours(s):
                g, db = ours(s["dy"], s["y"], *cfg)
                return torch.mm(g, s["w"]), torch.mm(g.t(), s["x"]), db
            tb, to = graph_ms(bwd_torch, sets) * 1e3, graph_ms(bwd_ours, sets) * 1e3
            line.append(f"  whole backward (K={K}): torch {tb:7.1f} us, fused {to:7.1f} us ({tb / to:4.2f}x)")
            print("\n".join(line), flush=True)
            del sets, ws, xs


if __name__ == "__main__":
    main()
