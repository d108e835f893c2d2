"""Wide-row softmax with each row split over K programs that exchange their partial statistics
(a prototype: does reading x once beat the looped kernel's two reads?).

    python benchmarks/sweep_softmax_coop.py [--quick]

The shipped kernels keep a whole row in one program: in registers up to 32768 wide (one CTA per SM at
32 warps, so loads and the row's arithmetic do not overlap), and looped beyond (x read twice). Here a
row is split into K chunks of CHUNK elements, one per program, held in registers. Each program writes its
chunk's (max, sum of exp) and waits at a barrier shared by the K programs of its row (a count and a
generation word per group: the last to arrive resets the count and bumps the generation); then every
program combines the K partials and writes its chunk of y. Forward: x read once, y written once;
backward (partial dot(y, dy), then dx): y and dy read once, dx written once.

A program that waits needs its partners resident, so the grid is persistent and launched cooperatively
(``launch_cooperative_grid``: the driver refuses a grid that cannot be co-resident instead of letting
it hang); G = (blocks per SM from the compiled kernel's registers and shared memory) x SMs, rounded down
to a multiple of K. Tile t = round * G + pid; a row's K tiles fall in one round on K consecutive programs.

Variants: ``v1`` (the barrier reads the generation word at every arrival), ``v3`` (read once per launch
and counted locally), ``v3+pf`` (the next round's chunk loaded while waiting). A first run also had kernels
whose barrier count was never reset (each barrier adding K): they hung once a launch with another K
reused the counters, and were removed (``results_2026-12-01/session11/sweep_softmax_coop_hang.txt``). Prints per shape: torch, the shipped kernel, a copy of the
same bytes, then each (variant, CHUNK, num_warps) candidate with the blocks per SM it got and its
registers, as us and % of the 1 GiB copy ceiling; each is checked against a float64 reference (output
poisoned first). Results and the reading: BENCHMARKS.md, "Found, not shipped: wide softmax rows split
over several programs" (H200, 2026-12-01).
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from tritonpatch.kernels.softmax import _row_group_barrier as _group_barrier  # v1's barrier, as shipped
from tritonpatch.ops import softmax as S


@triton.jit
def coop_fwd(x_ptr, y_ptr, part_ptr, bar_ptr, n_cols, stride_x, stride_y, n_tiles,
             K: tl.constexpr, KP: tl.constexpr, CHUNK: tl.constexpr, ONE_EXP: tl.constexpr):
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    slot = pid // K
    cols = (pid % K) * CHUNK + tl.arange(0, CHUNK)
    cmask = cols < n_cols
    ks = tl.arange(0, KP)
    for t in range(0, tl.cdiv(n_tiles, G)):
        tile = t * G + pid
        if tile < n_tiles:
            row = (tile // K).to(tl.int64)
            x = tl.load(x_ptr + row * stride_x + cols, mask=cmask, other=-float("inf")).to(tl.float32)
            m = tl.max(x, axis=0)
            m_ref = tl.where(m == -float("inf"), 0.0, m)
            p = tl.exp(x - m_ref)
            s = tl.sum(p, axis=0)
            buf = part_ptr + (t % 2) * 2 * G
            tl.store(buf + pid, m)
            tl.store(buf + G + pid, s)
            _group_barrier(bar_ptr, slot, K)
            ms = tl.load(buf + slot * K + ks, mask=ks < K, other=-float("inf"), volatile=True)
            ss = tl.load(buf + G + slot * K + ks, mask=ks < K, other=0.0, volatile=True)
            M = tl.max(ms, axis=0)
            S_ = tl.sum(ss * tl.exp(ms - M), axis=0)
            if ONE_EXP:
                # p = exp(x - m_ref); y = p * exp(m_ref - M) / S (m <= M: no overflow; an all -inf chunk: p = 0)
                scale = tl.where(m == -float("inf"), 0.0, tl.exp(m_ref - M)) / S_
                y = p * scale
            else:
                y = tl.exp(x - M) / S_
            tl.store(y_ptr + row * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def coop_bwd(y_ptr, dy_ptr, dx_ptr, part_ptr, bar_ptr, n_cols, stride, n_tiles,
             K: tl.constexpr, KP: tl.constexpr, CHUNK: tl.constexpr):
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    slot = pid // K
    cols = (pid % K) * CHUNK + tl.arange(0, CHUNK)
    cmask = cols < n_cols
    ks = tl.arange(0, KP)
    for t in range(0, tl.cdiv(n_tiles, G)):
        tile = t * G + pid
        if tile < n_tiles:
            base = (tile // K).to(tl.int64) * stride
            y = tl.load(y_ptr + base + cols, mask=cmask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + base + cols, mask=cmask, other=0.0).to(tl.float32)
            buf = part_ptr + (t % 2) * G
            tl.store(buf + pid, tl.sum(y * dy, axis=0))
            _group_barrier(bar_ptr, slot, K)
            dot = tl.sum(tl.load(buf + slot * K + ks, mask=ks < K, other=0.0, volatile=True), axis=0)
            tl.store(dx_ptr + base + cols, (y * (dy - dot)).to(dx_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _arrive(bar_ptr, slot, K: tl.constexpr):
    """Arrive at group ``slot``'s barrier (count, generation); the last of the K resets the count and
    bumps the generation. Returns whether this program was the last."""
    cnt = bar_ptr + 2 * slot
    tl.debug_barrier()
    old = tl.atomic_add(cnt, 1, sem="acq_rel")
    last = old == K - 1
    if last:
        tl.atomic_xchg(cnt, 0, sem="relaxed")
        tl.atomic_add(cnt + 1, 1, sem="release")
    return last


@triton.jit
def _await(bar_ptr, slot, gen, last):
    """Wait until group ``slot``'s generation has moved past ``gen`` (read once at the kernel's start, then
    counted locally: it moves only when this program's own group completes a barrier); return it."""
    if not last:
        g = tl.atomic_add(bar_ptr + 2 * slot + 1, 0, sem="acquire")
        while g == gen:
            g = tl.atomic_add(bar_ptr + 2 * slot + 1, 0, sem="acquire")
    tl.debug_barrier()
    return gen + 1


@triton.jit
def coop_fwd3(x_ptr, y_ptr, part_ptr, bar_ptr, n_cols, stride_x, stride_y, n_tiles,
              K: tl.constexpr, KP: tl.constexpr, CHUNK: tl.constexpr, PREFETCH: tl.constexpr):
    """coop_fwd with the generation read once per launch (one atomic per arrival for all but the last),
    and with PREFETCH the next round's chunk loaded while waiting."""
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    slot = pid // K
    cols = (pid % K) * CHUNK + tl.arange(0, CHUNK)
    cmask = cols < n_cols
    ks = tl.arange(0, KP)
    gen = tl.atomic_add(bar_ptr + 2 * slot + 1, 0, sem="acquire")
    x = tl.load(x_ptr + (pid // K).to(tl.int64) * stride_x + cols, mask=cols < tl.where(pid < n_tiles, n_cols, 0),
                other=-float("inf")).to(tl.float32)
    for t in range(0, tl.cdiv(n_tiles, G)):
        tile = t * G + pid
        if tile < n_tiles:
            row = (tile // K).to(tl.int64)
            if not PREFETCH:
                x = tl.load(x_ptr + row * stride_x + cols, mask=cmask, other=-float("inf")).to(tl.float32)
            m = tl.max(x, axis=0)
            m_ref = tl.where(m == -float("inf"), 0.0, m)
            p = tl.exp(x - m_ref)
            s = tl.sum(p, axis=0)
            buf = part_ptr + (t % 2) * 2 * G
            tl.store(buf + pid, m)
            tl.store(buf + G + pid, s)
            last = _arrive(bar_ptr, slot, K)
            if PREFETCH:
                nrow = ((tile + G) // K).to(tl.int64)
                x = tl.load(x_ptr + nrow * stride_x + cols, mask=cols < tl.where(tile + G < n_tiles, n_cols, 0),
                            other=-float("inf")).to(tl.float32)
            gen = _await(bar_ptr, slot, gen, last)
            ms = tl.load(buf + slot * K + ks, mask=ks < K, other=-float("inf"), volatile=True)
            ss = tl.load(buf + G + slot * K + ks, mask=ks < K, other=0.0, volatile=True)
            M = tl.max(ms, axis=0)
            S_ = tl.sum(ss * tl.exp(ms - M), axis=0)
            scale = tl.where(m == -float("inf"), 0.0, tl.exp(m_ref - M)) / S_
            tl.store(y_ptr + row * stride_y + cols, (p * scale).to(y_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def coop_bwd3(y_ptr, dy_ptr, dx_ptr, part_ptr, bar_ptr, n_cols, stride, n_tiles,
              K: tl.constexpr, KP: tl.constexpr, CHUNK: tl.constexpr, PREFETCH: tl.constexpr):
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    slot = pid // K
    cols = (pid % K) * CHUNK + tl.arange(0, CHUNK)
    cmask = cols < n_cols
    ks = tl.arange(0, KP)
    gen = tl.atomic_add(bar_ptr + 2 * slot + 1, 0, sem="acquire")
    first = (pid // K).to(tl.int64) * stride + cols
    fm = cols < tl.where(pid < n_tiles, n_cols, 0)
    y = tl.load(y_ptr + first, mask=fm, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + first, mask=fm, other=0.0).to(tl.float32)
    for t in range(0, tl.cdiv(n_tiles, G)):
        tile = t * G + pid
        if tile < n_tiles:
            base = (tile // K).to(tl.int64) * stride
            if not PREFETCH:
                y = tl.load(y_ptr + base + cols, mask=cmask, other=0.0).to(tl.float32)
                dy = tl.load(dy_ptr + base + cols, mask=cmask, other=0.0).to(tl.float32)
            buf = part_ptr + (t % 2) * G
            tl.store(buf + pid, tl.sum(y * dy, axis=0))
            last = _arrive(bar_ptr, slot, K)
            yc = y
            dyc = dy
            if PREFETCH:
                nb = ((tile + G) // K).to(tl.int64) * stride
                nm = cols < tl.where(tile + G < n_tiles, n_cols, 0)
                y = tl.load(y_ptr + nb + cols, mask=nm, other=0.0).to(tl.float32)
                dy = tl.load(dy_ptr + nb + cols, mask=nm, other=0.0).to(tl.float32)
            gen = _await(bar_ptr, slot, gen, last)
            dot = tl.sum(tl.load(buf + slot * K + ks, mask=ks < K, other=0.0, volatile=True), axis=0)
            tl.store(dx_ptr + base + cols, (yc * (dyc - dot)).to(dx_ptr.dtype.element_ty), mask=cmask)


def blocks_per_sm(compiled, num_warps: int) -> int:
    """Resident CTAs per SM for this compiled kernel (registers, warps, shared memory; sm_80/sm_90 limits)."""
    regs_per_warp = -(-compiled.n_regs * 32 // 256) * 256
    by_regs = (65536 // regs_per_warp) // num_warps
    shared = compiled.metadata.shared
    by_smem = (228 * 1024) // (shared + 1024) if shared else 32
    return max(0, min(32, 64 // num_warps, by_regs, by_smem))


def bench(fn) -> float:
    return do_bench(fn, warmup=10, rep=50, return_mode="median")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b).norm() / b.norm()).item()


QUICK = "--quick" in sys.argv
SHAPES = [(512, 65536, torch.bfloat16), (1024, 32768, torch.bfloat16), (2048, 16384, torch.bfloat16),
          (256, 131072, torch.bfloat16), (512, 128256, torch.bfloat16), (4096, 32000, torch.bfloat16),
          (512, 65536, torch.float32), (1024, 32768, torch.float32), (2048, 16384, torch.float32),
          (8192, 4096, torch.bfloat16)]
#: (CHUNK elements, num_warps)
CANDIDATES = [(2048, 4), (4096, 4), (4096, 8), (8192, 8)]
SMS = torch.cuda.get_device_properties(0).multi_processor_count
_BAR = torch.zeros(2 * 4096, dtype=torch.int32, device="cuda")
_PART = torch.empty(4 * 8192, dtype=torch.float32, device="cuda")
#: name -> (kernel, barrier words, extra constexprs)
FWD = {"v1": (coop_fwd, _BAR, {"ONE_EXP": True}), "v3": (coop_fwd3, _BAR, {"PREFETCH": False}),
       "v3+pf": (coop_fwd3, _BAR, {"PREFETCH": True})}
BWD = {"v1": (coop_bwd, _BAR, {}), "v3": (coop_bwd3, _BAR, {"PREFETCH": False}),
       "v3+pf": (coop_bwd3, _BAR, {"PREFETCH": True})}


def try_variants(variants: dict, tensors: tuple, n_rows: int, n_cols: int, out: torch.Tensor,
                 ref: torch.Tensor, pct, line: list[str]):
    """Time every (variant, CHUNK, warps) on ``tensors`` (inputs..., output); append to ``line``; return the
    best (time, text) among those within 1e-2 of ``ref``."""
    best = None
    for name, (kernel, bar, extra) in variants.items():
        for chunk, nw in CANDIDATES:
            if chunk > 2 * triton.next_power_of_2(n_cols):
                continue
            K = triton.cdiv(n_cols, chunk)
            KP = triton.next_power_of_2(K)
            scalars = (n_cols, n_cols) if len(tensors) == 3 else (n_cols, n_cols, n_cols)
            try:
                compiled = kernel[(K,)](*tensors, _PART, bar, *scalars, 0, K=K, KP=KP, CHUNK=chunk, num_warps=nw,
                                        launch_cooperative_grid=True, **extra)
                b = blocks_per_sm(compiled, nw)
                G = min(n_rows * K, (b * SMS) // K * K)
                if G < K:
                    continue

                def run(G=G, K=K, KP=KP, chunk=chunk, nw=nw, kernel=kernel, bar=bar, extra=extra, scalars=scalars):
                    kernel[(G,)](*tensors, _PART, bar, *scalars, n_rows * K, K=K, KP=KP, CHUNK=chunk, num_warps=nw,
                                 launch_cooperative_grid=True, **extra)
                print(f"  running {name} c{chunk} w{nw} G{G}", flush=True)
                out.fill_(float("nan"))
                run()
                torch.cuda.synchronize()
                e = rel(out, ref)
                t = bench(run)
                line.append(f"{name} c{chunk} w{nw} b{b} r{compiled.n_regs} {pct(t)} e{e:.0e}")
                if e < 1e-2 and (best is None or t < best[0]):
                    best = (t, line[-1])
            except Exception as ex:  # noqa: BLE001 -- a sweep reports and goes on
                line.append(f"{name} c{chunk} w{nw}: {type(ex).__name__}: {str(ex)[:80]}")
    return best


def main() -> None:
    a = torch.empty(2 ** 30, dtype=torch.uint8, device="cuda")
    ceiling = 2 * a.numel() / bench(lambda: a.clone()) / 1e6
    print(f"{torch.cuda.get_device_name()}, {SMS} SMs, copy ceiling {ceiling:.0f} GB/s, triton {triton.__version__},"
          f" torch {torch.__version__}")
    shapes = SHAPES[:3] if QUICK else SHAPES
    for m, n, dt in shapes:
        x = torch.randn(m, n, device="cuda", dtype=dt) * 3
        y = torch.empty_like(x)
        nbytes = 2 * x.numel() * x.element_size()

        def pct(t: float, b: int = nbytes) -> str:
            return f"{t * 1e3:.1f} us {b / t / 1e6 / ceiling:.0%}"
        shape = f"{m}x{n} {str(dt)[6:]}"
        line = [f"FWD {shape}: torch {pct(bench(lambda: torch.softmax(x, -1)))}",
                f"shipped {pct(bench(lambda: S._forward(x, 1, dt)))}",
                f"copy {pct(bench(lambda: x.clone()))}"]
        best = try_variants(FWD, (x, y), m, n, y, torch.softmax(x.double(), -1), pct, line)
        print("; ".join(line), flush=True)
        print(f"  best FWD {shape}: {best[1] if best else None}", flush=True)

        yv = torch.softmax(torch.randn(m, n, device="cuda") * 3, -1).to(dt)
        dy = torch.randn(m, n, device="cuda", dtype=dt)
        refb = yv.double() * (dy.double() - (yv.double() * dy.double()).sum(-1, keepdim=True))
        dx = torch.empty_like(dy)

        def pct3(t: float) -> str:
            return pct(t, 3 * dy.numel() * dy.element_size())
        line = [f"BWD {shape}: torch {pct3(bench(lambda: torch.ops.aten._softmax_backward_data(dy, yv, -1, dt)))}",
                f"shipped {pct3(bench(lambda: S._backward(yv, dy, 1, dt)))}"]
        best = try_variants(BWD, (yv, dy, dx), m, n, dx, refb, pct3, line)
        print("; ".join(line), flush=True)
        print(f"  best BWD {shape}: {best[1] if best else None}", flush=True)
    # every barrier must end aligned: int32 counts back at 0, int64 counts at a multiple of their group's K
    print("v1 barrier counts all zero:", bool((_BAR[0::2] == 0).all().item()), flush=True)


if __name__ == "__main__":
    main()
