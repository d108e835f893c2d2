"""Softmax: tritonpatch (Triton) vs torch.softmax on one CUDA GPU, forward and backward.

    python benchmarks/bench_softmax.py                 # correctness checks, then the timing table
    python benchmarks/bench_softmax.py --csv out.csv   # also write the rows as CSV
    python benchmarks/bench_softmax.py --sweep         # also try launch-heuristic variants per shape

Timings: ``triton.testing.do_bench(..., return_mode="median")`` in ms. Backward alone is timed as
``torch.autograd.grad(y, x, dy, retain_graph=True)`` on an output ``y`` built once.
Bytes moved (GB/s = bytes / time):
    forward:  numel * (in_elt + out_elt)            (x read, y written)
    backward: numel * (2 * out_elt + in_elt)        (y and dy read, dx written)
``copy`` is the bandwidth of ``dst.copy_(src)`` on 1 GiB of bf16, the practical ceiling.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tritonpatch.ops import softmax as S  # noqa: E402
from results_io import write_csv  # noqa: E402 (benchmarks/ is on sys.path)

# (label, shape, dim, input dtype, dtype= argument)
CASES = [
    ("rows", (65536, 512), -1, torch.bfloat16, None),
    ("rows", (16384, 2048), -1, torch.bfloat16, None),
    ("rows", (8192, 4096), -1, torch.bfloat16, None),
    ("rows", (4096, 32768), -1, torch.bfloat16, None),
    ("rows", (1024, 131072), -1, torch.bfloat16, None),
    ("opt-attn", (8 * 16, 512, 512), -1, torch.bfloat16, torch.float32),
    ("dim1", (64, 512, 1024), 1, torch.bfloat16, None),
    ("dim1-long", (8, 4096, 1024), 1, torch.bfloat16, None),
]

TUNABLES = ["ROWS_TILE", "LOOP_BLOCK_BYTES", "MAX_SINGLE_N", "MAX_SINGLE_N_BWD", "STRIDED_TILE",
            "STRIDED_SINGLE_TILE"]
SWEEP = [
    {},
    {"ROWS_TILE": 2048}, {"ROWS_TILE": 8192},
    {"LOOP_BLOCK_BYTES": 8192}, {"LOOP_BLOCK_BYTES": 32768},
    {"MAX_SINGLE_N_BWD": 32768},
    {"STRIDED_TILE": 4096}, {"STRIDED_TILE": 16384, "STRIDED_SINGLE_TILE": 32768},
]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    m = ~torch.isnan(ref)
    if not torch.equal(torch.isnan(out), ~m):
        return float("inf")
    return ((out[m] - ref[m]).norm() / ref[m].norm().clamp_min(1e-300)).item()


def check_correctness(dev: str) -> bool:
    """A few shapes/paths vs float64, ours must be within 1.5x torch's own error (+1e-6 for fp32)."""
    ok = True
    checks = [((300, 1000), -1, torch.bfloat16, None), ((64, 40000), -1, torch.bfloat16, None),
              ((2, 300000), -1, torch.float32, None), ((16, 512, 512), -1, torch.bfloat16, torch.float32),
              ((8, 512, 256), 1, torch.float16, None), ((8, 3000, 64), 1, torch.float32, None),
              ((256, 300), -1, torch.float32, torch.bfloat16), ((512, 64), 0, torch.bfloat16, None)]
    for shape, dim, dt, odt in checks:
        x = (torch.randn(shape, device=dev) * 3).to(dt)
        rows = x.view(-1, x.shape[-1])
        if rows.shape[0] >= 8:
            rows[:2].fill_(float("-inf"))  # fully masked rows (dim=-1), partly masked columns otherwise
        xr = x.detach().clone().requires_grad_(True)
        xt = x.detach().clone().requires_grad_(True)
        y, yt = S.softmax(xr, dim, odt), torch.softmax(xt, dim, dtype=odt)
        x64 = (x if odt is None else x.to(odt)).double().requires_grad_(True)
        y64 = torch.softmax(x64, dim)
        dy = torch.randn_like(y)
        (dx,), (dxt,), (dx64,) = (torch.autograd.grad(a, b, g) for a, b, g in
                                  ((y, xr, dy), (yt, xt, dy), (y64, x64, dy.double())))
        fe, fte = rel_err(y, y64), rel_err(yt, y64)
        be, bte = rel_err(dx, dx64), rel_err(dxt, dx64)
        good = (fe <= 1.5 * fte + 1e-6 and be <= 1.5 * bte + 1e-6
                and torch.equal(y.isnan(), yt.isnan()) and torch.equal(dx.isnan(), dxt.isnan()))
        ok &= good
        print(f"  check {str(shape):>18} dim={dim:>2} {str(dt)[6:]:>8}->{str(odt or dt)[6:]:<8} "
              f"fwd err {fe:.2e} (torch {fte:.2e})  bwd err {be:.2e} (torch {bte:.2e})  "
              f"{'ok' if good else 'FAIL'}")
    return ok


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")


def copy_gbps(dev: str) -> float:
    src = torch.empty(512 * 1024 * 1024, dtype=torch.bfloat16, device=dev).normal_()
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * src.numel() * 2 / ms / 1e6


def time_case(shape, dim, dt, odt, dev):
    x = torch.randn(shape, device=dev, dtype=dt).mul_(3).requires_grad_(True)
    n = x.numel()
    ie = x.element_size()
    oe = torch.empty((), dtype=odt or dt).element_size()
    fb, bb = n * (ie + oe), n * (2 * oe + ie)
    with torch.no_grad():
        f_t = bench(lambda: torch.softmax(x, dim, dtype=odt))
        f_o = bench(lambda: S.softmax(x, dim, odt))
    yt = torch.softmax(x, dim, dtype=odt)
    yo = S.softmax(x, dim, odt)
    dy = torch.randn_like(yt)
    b_t = bench(lambda: torch.autograd.grad(yt, x, dy, retain_graph=True))
    b_o = bench(lambda: torch.autograd.grad(yo, x, dy, retain_graph=True))
    return f_t, f_o, b_t, b_o, fb, bb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", help="write the table rows to this CSV file")
    ap.add_argument("--sweep", action="store_true", help="time launch-heuristic variants per shape")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    dev = "cuda"
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
    print("correctness:")
    ok = check_correctness(dev)
    peak = copy_gbps(dev)
    print(f"copy bandwidth: {peak:.0f} GB/s\n")

    hdr = (f"{'case':<10}{'shape':>18}{'dim':>4} {'dtype':<15}| {'fwd ms torch/ours':>18} "
           f"{'GB/s ours':>9} {'%copy':>6} {'x':>5} | {'bwd ms torch/ours':>18} {'GB/s ours':>9} "
           f"{'%copy':>6} {'x':>5} | {'f+b x':>5}")
    print(hdr)
    print("-" * len(hdr))
    rows = []
    for label, shape, dim, dt, odt in CASES:
        f_t, f_o, b_t, b_o, fb, bb = time_case(shape, dim, dt, odt, dev)
        fg, bg = fb / f_o / 1e6, bb / b_o / 1e6
        dts = f"{str(dt)[6:]}" + (f"->{str(odt)[6:]}" if odt else "")
        print(f"{label:<10}{str(shape):>18}{dim:>4} {dts:<15}| {f_t:8.4f}/{f_o:<9.4f} {fg:9.0f} "
              f"{100 * fg / peak:5.0f}% {f_t / f_o:5.2f} | {b_t:8.4f}/{b_o:<9.4f} {bg:9.0f} "
              f"{100 * bg / peak:5.0f}% {b_t / b_o:5.2f} | {(f_t + b_t) / (f_o + b_o):5.2f}")
        rows.append(dict(case=label, shape="x".join(map(str, shape)), dim=dim, dtype=str(dt)[6:],
                         out_dtype=str(odt or dt)[6:], fwd_ms_torch=f_t, fwd_ms_ours=f_o,
                         fwd_gbps_torch=fb / f_t / 1e6, fwd_gbps_ours=fg, bwd_ms_torch=b_t, bwd_ms_ours=b_o,
                         bwd_gbps_torch=bb / b_t / 1e6, bwd_gbps_ours=bg, copy_gbps=peak,
                         fwd_speedup=f_t / f_o, bwd_speedup=b_t / b_o,
                         fwd_bwd_speedup=(f_t + b_t) / (f_o + b_o)))
    if args.csv:
        write_csv(rows, args.csv)

    if args.sweep:
        print("\nsweep (ours only, ms fwd / bwd; default first):")
        saved = {k: getattr(S, k) for k in TUNABLES}
        for label, shape, dim, dt, odt in CASES:
            parts = []
            for variant in SWEEP:
                for k, v in variant.items():
                    setattr(S, k, v)
                try:
                    _, f_o, _, b_o, _, _ = time_case(shape, dim, dt, odt, dev)
                    parts.append(f"{variant or 'default'}: {f_o:.4f}/{b_o:.4f}")
                finally:
                    for k, v in saved.items():
                        setattr(S, k, v)
            print(f"{label} {shape} dim={dim}:\n    " + "\n    ".join(parts))
    print("\ncorrectness:", "ok" if ok else "FAILED")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
