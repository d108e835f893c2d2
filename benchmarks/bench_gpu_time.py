"""GPU time alone: torch eager vs tritonpatch ops replayed from CUDA graphs (no host overhead).

    python benchmarks/bench_gpu_time.py [--csv PATH]

The suite (run_suite.sh) times each call with ``do_bench``, which includes the host's cost per call;
for problems under a few hundred microseconds of GPU work, forward+backward there measures Python and
launch overhead (an autograd.Function alone costs ~74 us per forward+backward on the H100 host). This
script captures each provider's calls in a CUDA graph and times graph replays, so the ratio is the
kernels' own: what a GPU-bound model (or one run under CUDA graphs) gets.

Each replay runs the op once per input set, over enough sets (> 2x L2 together) that every call reads
from HBM; time per call = replay time / sets. Forward+backward is ``y = op(...)`` then
``torch.autograd.grad(y, inputs, dy)``. Outputs are checked against torch before timing.
GB/s use the suite's byte counts (bench_layer_norm.py, bench_softmax.py) against a measured copy.
"""
from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

os.environ["TRITONPATCH_SIZE_POLICY"] = "0"  # time the kernels at every size (read per call)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from results_io import write_csv  # noqa: E402
from timing import graph_of, replay_ms, warm_up  # noqa: E402
from tritonpatch.ops import layer_norm as ln_op  # noqa: E402
from tritonpatch.ops import linear_relu as lr_op  # noqa: E402
from tritonpatch.ops import softmax as sm_op  # noqa: E402

L2_BYTES = 50 * 2 ** 20


def graph_ms(fn, sets: list[dict], replays: int = 20) -> float:
    """Median ms per call: a CUDA graph of fn(s) for every s in sets, replayed; time / len(sets)."""
    def all_sets() -> None:
        for s in sets:
            fn(s)
    warm_up(all_sets, 2)  # compiles and caches, off the capture
    g = graph_of(all_sets)
    ms = replay_ms(g, replays)
    del g
    return ms / len(sets)


def copy_gbs() -> float:
    """The suite's copy ceiling (harness.copy_ceiling): do_bench median of a 1 GiB bf16 copy, read + write,
    after ~0.5 s of warm-up so that the clocks have ramped up."""
    import triton
    src = torch.empty(2 ** 29, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    for _ in range(500):
        dst.copy_(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=100, rep=500, return_mode="median")
    return 2 * src.numel() * 2 / ms / 1e6


def n_sets(set_bytes: int) -> int:
    return max(2, min(8, -(-2 * L2_BYTES // set_bytes)))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def alternating(ft, fo, sets: list[dict], repeats: int) -> tuple[float, float]:
    """(torch ms, ours ms): each timed ``repeats`` times in the order torch, ours, torch, ...; medians."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        times[0].append(graph_ms(ft, sets))
        times[1].append(graph_ms(fo, sets))
    return statistics.median(times[0]), statistics.median(times[1])


def fwd_bwd(op, keys):
    def run(s):
        y = op(s)
        return torch.autograd.grad(y, [s[k] for k in keys], s["dy"])
    return run


def cases():
    dev = "cuda"
    for dtype in (torch.bfloat16, torch.float32):
        for m, n in ((32768, 768), (32768, 1024), (16384, 2048), (8192, 4096), (4096, 8192), (4096, 16384),
                     (4096, 32768), (4096, 65536)):
            elt = torch.empty((), dtype=dtype).element_size()

            def make(m=m, n=n, dtype=dtype):
                return {"x": torch.randn(m, n, device=dev, dtype=dtype).requires_grad_(),
                        "w": (torch.randn(n, device=dev) * 0.5 + 1).to(dtype).requires_grad_(),
                        "b": (torch.randn(n, device=dev) * 0.1).to(dtype).requires_grad_(),
                        "dy": torch.randn(m, n, device=dev, dtype=dtype)}
            yield ("layer_norm", f"{m}x{n}", dtype, make, 2 * m * n * elt, ("x", "w", "b"),
                   lambda s, n=n: F.layer_norm(s["x"], (n,), s["w"], s["b"], 1e-5),
                   lambda s, n=n: ln_op.layer_norm(s["x"], (n,), s["w"], s["b"], 1e-5),
                   {"fwd": (2 * m * n + 2 * n) * elt, "fwd+bwd": (5 * m * n + 6 * n) * elt})
    wide = ((512, 65536), (512, 128256))  # vocabulary-wide rows: the looped (bf16) and split (fp32) kernels
    for dtype, shapes in ((torch.bfloat16, ((16384, 1024), (4096, 4096), (4096, 8192), (8, 16, 512, 512), *wide)),
                          (torch.float32, wide)):
        for shape in shapes:
            numel = 1
            for d in shape:
                numel *= d

            def make(shape=shape, dtype=dtype):
                return {"x": (torch.randn(shape, device=dev) * 3).to(dtype).requires_grad_(),
                        "dy": torch.randn(shape, device=dev, dtype=dtype)}
            elt = dtype.itemsize
            yield ("softmax", "x".join(map(str, shape)), dtype, make, 2 * numel * elt, ("x",),
                   lambda s: torch.softmax(s["x"], -1), lambda s: sm_op.softmax(s["x"], -1),
                   {"fwd": 2 * numel * elt, "fwd+bwd": 5 * numel * elt})
    for m, k, n in ((8192, 768, 3072), (16384, 1024, 4096), (8192, 1024, 4096)):
        def make(m=m, k=k, n=n):
            return {"x": torch.randn(m, k, device=dev, dtype=torch.bfloat16).requires_grad_(),
                    "w": (torch.randn(n, k, device=dev) / k ** 0.5).to(torch.bfloat16).requires_grad_(),
                    "b": (torch.randn(n, device=dev) * 0.1).to(torch.bfloat16).requires_grad_(),
                    "dy": torch.randn(m, n, device=dev, dtype=torch.bfloat16)}
        yield ("linear_relu", f"{m}x{k}->{n}", torch.bfloat16, make, 2 * (m * k + n * k + m * n), ("x", "w", "b"),
               lambda s: F.relu(F.linear(s["x"], s["w"], s["b"])),
               lambda s: lr_op.linear_relu(s["x"], s["w"], s["b"]),
               {"flops_fwd": 2 * m * n * k, "flops_fwd+bwd": 6 * m * n * k})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=None)
    ap.add_argument("--ops", default="layer_norm,softmax,linear_relu", help="comma-separated op kinds")
    ap.add_argument("--repeats", type=int, default=1,
                    help="time torch and ours this many times each, alternating; report each one's median "
                         "(long GEMM rows: a provider timed second may run at lower clocks)")
    args = ap.parse_args()
    kinds = set(args.ops.split(","))
    ceiling = copy_gbs()
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | copy ceiling {ceiling:.0f} GB/s")
    print(f"{'op':12s} {'shape':18s} {'dtype':6s} {'pass':8s} {'torch ms':>9s} {'ours ms':>9s} {'x':>6s} "
          f"{'ours GB/s|TF/s':>14s} {'%copy':>6s}  err")
    rows = []
    for op, shape, dtype, make, set_bytes, keys, ref, ours, work in cases():
        if op not in kinds:
            continue
        sets = [make() for _ in range(n_sets(set_bytes))]
        for pass_ in ("fwd", "fwd+bwd"):
            if pass_ == "fwd":
                ft, fo = (lambda s, f=ref: f(s)), (lambda s, f=ours: f(s))
                with torch.no_grad():
                    err = rel(fo(sets[0]), ft(sets[0]))
                    tt, to = alternating(ft, fo, sets, args.repeats)
            else:
                ft, fo = fwd_bwd(ref, keys), fwd_bwd(ours, keys)
                err = max(rel(a, b) for a, b in zip(fo(sets[0]), ft(sets[0])))
                tt, to = alternating(ft, fo, sets, args.repeats)
            if op == "linear_relu":
                rate, pct = work["flops_" + pass_] / to / 1e9, ""
                unit = "TF/s"
            else:
                rate = work[pass_] / to / 1e6
                pct, unit = f"{100 * rate / ceiling:5.1f}", "GB/s"
            sdt = str(dtype).replace("torch.", "")
            print(f"{op:12s} {shape:18s} {sdt:6s} {pass_:8s} {tt:9.4f} {to:9.4f} {tt / to:6.2f} "
                  f"{rate:9.0f} {unit} {pct:>6s}  {err:.1e}", flush=True)
            rows.append({"op": op, "shape": shape, "dtype": sdt, "pass": pass_, "torch_ms": f"{tt:.5f}",
                         "tritonpatch_ms": f"{to:.5f}", "vs_torch": f"{tt / to:.3f}", "rate": f"{rate:.1f}",
                         "unit": unit, "pct_copy": pct.strip(), "rel_err_vs_torch": f"{err:.2e}",
                         "copy_gbs": f"{ceiling:.0f}"})
        del sets
        torch.cuda.empty_cache()
    if args.csv:
        write_csv(rows, args.csv)
        meta = Path(args.csv).parent / "meta.json"
        if not meta.exists():  # report.py reads the device, date and versions from it
            import json
            import time

            import triton
            meta.write_text(json.dumps({
                "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
                "torch": torch.__version__, "triton": triton.__version__}, indent=1))


if __name__ == "__main__":
    main()
