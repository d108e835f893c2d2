"""Launch configs of the strided softmax forward (softmax over a dim that is not the last, e.g. dim=1 of
(B, R, C)): whole-column tiles [R, BLOCK_P] in one pass, and the looped kernel (online max/sum over
[BLOCK_R, BLOCK_P] chunks, then a second sweep) at several chunk shapes. Each config is checked against
float64 first; GPU time from CUDA graph replays over rotating inputs (> 2x L2); % of the measured copy.

    python benchmarks/sweep_softmax_strided.py
"""
from __future__ import annotations

import itertools

import torch

from bench_gpu_time import L2_BYTES, copy_gbs, graph_ms
from tritonpatch.ops import softmax as sm_op
from tritonpatch.ops.common import cdiv

SHAPES = [((64, 512, 1024), 1), ((8, 4096, 1024), 1), ((16, 128, 4096), 1), ((512, 64, 1024), 1)]


def launch(x, y, bounds, block_r, block_p, looped, warps):
    G, R, P = bounds
    n_pb = cdiv(P, block_p)
    sm_op.K.softmax_fwd_strided_kernel[(G * n_pb,)](
        x, y, R, P, n_pb, R * P, P, 1, R * P, P, 1,
        BLOCK_R=block_r, BLOCK_P=block_p, LOOPED=looped, X_R_UNIT=False, X_P_UNIT=True, Y_R_UNIT=False,
        Y_P_UNIT=True, ROUND=False, SOFT_BF16=False, num_warps=warps)
    return y


def forward_sets(shape: tuple[int, int, int], dtype: torch.dtype, d: int) -> tuple[list[dict], torch.Tensor, int, int]:
    """Rotating input sets (x, y) of together > 2x L2, the float64 reference of the first set's softmax over
    ``d``, elements per set and bytes per element."""
    numel = shape[0] * shape[1] * shape[2]
    es = torch.tensor([], dtype=dtype).element_size()
    sets = [dict(x=(torch.randn(shape, device="cuda") * 3).to(dtype))
            for _ in range(max(2, min(8, -(-2 * L2_BYTES // (numel * es)))))]
    for s in sets:
        s["y"] = torch.empty_like(s["x"])
    return sets, torch.softmax(sets[0]["x"].double(), d), numel, es


def rank(cands: list[tuple], run, timed, ref: torch.Tensor, tol: float) -> list[tuple[float, tuple]]:
    """Each candidate config: ``run(c)``'s output checked against the float64 ``ref`` (rel err under
    ``tol``, else reported and dropped), then ``timed(c)`` (us); sorted fastest first."""
    res = []
    for c in cands:
        out = run(c)
        err = ((out.double() - ref).norm() / ref.norm()).item()
        if not err < tol:
            print(f"  {c}: WRONG rel err {err:.2e}")
            continue
        res.append((timed(c), c))
    return sorted(res)


def print_top(res: list[tuple[float, tuple]], n: int, fields: str, pct, shipped: float) -> None:
    for t, c in res[:n]:
        print(f"  ({fields}) {c}: {t:7.1f} us ({pct(t):4.1f}% of copy, {shipped / t:4.2f}x shipped)", flush=True)


def launch_bwd(y, dy, dx, bounds, block_r, block_p, looped, warps):
    G, R, P = bounds
    n_pb = cdiv(P, block_p)
    sm_op.K.softmax_bwd_strided_kernel[(G * n_pb,)](
        y, dy, dx, R, P, n_pb, R * P, P, 1, R * P, P, 1,
        BLOCK_R=block_r, BLOCK_P=block_p, LOOPED=looped, O_R_UNIT=False, O_P_UNIT=True, D_R_UNIT=False,
        D_P_UNIT=True, SOFT_BF16=False, num_warps=warps)
    return dx


def candidates(R: int, per_thread: int) -> list[tuple]:
    """Whole-column tiles (at most ``per_thread`` elements per thread) and looped chunks."""
    cands = []
    r2 = 1 << (R - 1).bit_length()
    for bp, w in itertools.product((16, 32, 64, 128), (4, 8, 16, 32)):
        if r2 * bp // (32 * w) <= per_thread and r2 * bp <= 65536:
            cands.append((r2, bp, False, w))
    for br, bp, w in itertools.product((4, 8, 16, 32, 64), (32, 64, 128, 256), (4, 8)):
        if br * bp // (32 * w) <= per_thread // 2 and br < r2:
            cands.append((br, bp, True, w))
    return cands


def backward(ceil: float) -> None:
    """The same sweep for the strided backward, dx = y * (dy - sum(y * dy)), y/dy/dx contiguous."""
    for dtype in (torch.bfloat16, torch.float32):
        for shape, d in SHAPES:
            G, R, P = shape
            numel = G * R * P
            es = torch.tensor([], dtype=dtype).element_size()
            nsets = max(2, min(8, -(-2 * L2_BYTES // (2 * numel * es))))
            sets = []
            for _ in range(nsets):
                y = torch.softmax(torch.randn(shape, device="cuda") * 3, d).to(dtype)
                sets.append(dict(y=y, dy=torch.randn(shape, device="cuda").to(dtype), dx=torch.empty_like(y)))
            y64, dy64 = sets[0]["y"].double(), sets[0]["dy"].double()
            ref = y64 * (dy64 - (y64 * dy64).sum(d, keepdim=True))
            shipped = graph_ms(lambda s: sm_op._backward(s["y"], s["dy"], d, dtype), sets) * 1e3
            t_torch = graph_ms(lambda s: torch._softmax_backward_data(s["dy"], s["y"], d, dtype), sets) * 1e3
            bytes_ = 3 * numel * es
            pct = lambda t: bytes_ / t / 1e3 / ceil * 100  # noqa: E731
            print(f"bwd {str(dtype)[6:]} {shape} dim={d}: torch {t_torch:7.1f} us, shipped {shipped:7.1f} us "
                  f"({pct(shipped):4.1f}% of copy)", flush=True)
            s0 = sets[0]
            res = rank(candidates(R, 64),
                       lambda c: launch_bwd(s0["y"], s0["dy"], torch.full_like(s0["dx"], float("nan")), shape, *c),
                       lambda c: graph_ms(lambda s: launch_bwd(s["y"], s["dy"], s["dx"], shape, *c), sets) * 1e3,
                       ref, 1e-5 if dtype == torch.float32 else 8e-3)
            print_top(res, 6, "BLOCK_R, BLOCK_P, looped, warps", pct, shipped)
            sets = s0 = None  # free before the next shape


def launch_split(x, y, bounds, block_r, block_p, warps):
    """The split-R forward: stats pass, then apply pass (fp32 partials (G, chunks, P))."""
    G, R, P = bounds
    n_pb = cdiv(P, block_p)
    n_c = cdiv(R, block_r)
    m = torch.empty((G, n_c, P), device=x.device, dtype=torch.float32)
    s = torch.empty_like(m)
    sm_op.K.softmax_fwd_strided_stats_kernel[(G * n_pb, n_c)](
        x, y, m, s, R, P, n_pb, n_c, R * P, P, 1, BLOCK_R=block_r, BLOCK_P=block_p, X_R_UNIT=False,
        X_P_UNIT=True, ROUND=False, SOFT_BF16=False, num_warps=warps)
    sm_op.K.softmax_fwd_strided_apply_kernel[(G * n_pb, n_c)](
        x, y, m, s, R, P, n_pb, n_c, R * P, P, 1, R * P, P, 1, BLOCK_R=block_r, BLOCK_P=block_p,
        BLOCK_C=max(2, 1 << (n_c - 1).bit_length()), X_R_UNIT=False, X_P_UNIT=True, Y_R_UNIT=False,
        Y_P_UNIT=True, ROUND=False, SOFT_BF16=False, num_warps=warps)
    return y


def split(ceil: float) -> None:
    """The split-R forward at long reduced axes, over chunk shapes, against the shipped op."""
    shapes = [(8, 4096, 1024), (4, 8192, 512), (8, 2048, 1024), (1, 16384, 1024), (64, 512, 1024)]
    for dtype in (torch.bfloat16, torch.float32):
        for shape in shapes:
            G, R, P = shape
            sets, ref, numel, es = forward_sets(shape, dtype, 1)
            shipped = graph_ms(lambda s: sm_op.softmax(s["x"], 1), sets) * 1e3
            bytes_ = 2 * numel * es
            pct = lambda t: bytes_ / t / 1e3 / ceil * 100  # noqa: E731
            print(f"split {str(dtype)[6:]} {shape} dim=1: shipped {shipped:7.1f} us ({pct(shipped):4.1f}% of copy)",
                  flush=True)
            s0 = sets[0]
            cands = [c for c in itertools.product((64, 128, 256, 512), (16, 32, 64), (4, 8))
                     if c[0] * c[1] <= 16384 and cdiv(R, c[0]) <= 256]
            res = rank(cands,
                       lambda c: launch_split(s0["x"], torch.full_like(s0["y"], float("nan")), shape, *c),
                       lambda c: graph_ms(lambda s: launch_split(s["x"], s["y"], shape, *c), sets) * 1e3,
                       ref, 1e-6 if dtype == torch.float32 else 4e-3)
            print_top(res, 5, "BLOCK_R, BLOCK_P, warps", pct, shipped)
            sets = s0 = None  # free before the next shape


def shipped_only(ceil: float) -> None:
    """The shipped forward (whatever path the op picks) at every swept shape, against torch eager."""
    shapes = sorted({s for s, _ in SHAPES} | {(8, 4096, 1024), (4, 8192, 512), (8, 2048, 1024), (1, 16384, 1024)})
    for dtype in (torch.bfloat16, torch.float32):
        for shape in shapes:
            sets, ref, numel, es = forward_sets(shape, dtype, 1)
            y = sm_op.softmax(sets[0]["x"], 1)
            err = ((y.double() - ref).norm() / ref.norm()).item()
            t = graph_ms(lambda s: sm_op.softmax(s["x"], 1), sets) * 1e3
            t_torch = graph_ms(lambda s: torch.softmax(s["x"], 1), sets) * 1e3
            print(f"{str(dtype)[6:]} {shape} dim=1: shipped {t:7.1f} us ({2 * numel * es / t / 1e3 / ceil * 100:4.1f}% "
                  f"of copy, {t_torch / t:5.2f}x torch), rel err {err:.1e}", flush=True)
            sets = None  # free before the next shape


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--backward", action="store_true", help="also sweep the backward kernel")
    ap.add_argument("--backward-only", action="store_true", help="shipped forward only, then the backward sweep")
    ap.add_argument("--split", action="store_true", help="only the split-R forward at long reduced axes")
    ap.add_argument("--shipped", action="store_true", help="only the shipped op's forward, every shape, vs torch")
    args = ap.parse_args()
    ceil = copy_gbs()
    if args.shipped:
        return shipped_only(ceil)
    if args.split:
        return split(ceil)
    print(f"# {torch.cuda.get_device_name()}, copy ceiling {ceil:.0f} GB/s; GPU us per call (CUDA graphs)")
    for dtype in (torch.bfloat16, torch.float32):
        for shape, d in SHAPES:
            G, R, P = shape
            sets, ref, numel, es = forward_sets(shape, dtype, d)
            shipped = graph_ms(lambda s: sm_op.softmax(s["x"], d), sets) * 1e3
            t_torch = graph_ms(lambda s: torch.softmax(s["x"], d), sets) * 1e3
            bytes_ = 2 * numel * es
            pct = lambda t: bytes_ / t / 1e3 / ceil * 100  # noqa: E731
            print(f"{str(dtype)[6:]} {shape} dim={d}: torch {t_torch:7.1f} us, shipped {shipped:7.1f} us "
                  f"({pct(shipped):4.1f}% of copy)", flush=True)
            s0 = sets[0]
            res = rank([] if args.backward_only else candidates(R, 64),
                       lambda c: launch(s0["x"], torch.full_like(s0["y"], float("nan")), shape, *c),
                       lambda c: graph_ms(lambda s: launch(s["x"], s["y"], shape, *c), sets) * 1e3,
                       ref, 1e-6 if dtype == torch.float32 else 4e-3)
            print_top(res, 6, "BLOCK_R, BLOCK_P, looped, warps", pct, shipped)
            sets = s0 = None  # free before the next shape
    if args.backward or args.backward_only:
        backward(ceil)


if __name__ == "__main__":
    main()
