"""CPU cost of patching in a launch-bound HF forward: per model, what one forward costs the host to issue,
unpatched and patched, and so what each patched call adds.

    python benchmarks/host_cost_e2e.py [--batch 8x512] [--rounds 7] [--profile]

At batch 8x512 the bf16 OPT-350m-like and BERT-base models issue their kernels slower than the GPU runs
them: the forward's wall time is the host's. Each round times unpatched and patched forwards back to back
(the host drifts between blocks); per model it prints the median "issue" time (call to return, no sync
inside, the device idle at the start) and the GPU-synchronised wall time, the patched calls per forward,
and (issue patched - issue torch) / calls. ``--profile`` adds cProfile's top functions of patched forwards.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import statistics
import time

import torch

import tritonpatch
from bench_e2e import build  # noqa: E402 (benchmarks/ is on sys.path)


def timed(fn, iters: int) -> tuple[float, float]:
    """(median issue ms, median synchronised wall ms) of ``iters`` calls."""
    issue, wall = [], []
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        issue.append((t1 - t0) * 1e3)
        wall.append((t2 - t0) * 1e3)
    return statistics.median(issue), statistics.median(wall)


def calls_per_forward(p, fwd) -> int:
    def total() -> int:
        return sum(r.triton_calls + r.fallback_calls for r in p.layers)
    before = total()
    fwd()
    return total() - before


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="8x512")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--models", default="opt-350m:sdpa,bert-base-relu:sdpa,opt-350m:eager")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--kinds", default="layer_norm,softmax,linear_relu", help="what patch() takes")
    ap.add_argument("--gc", choices=("on", "off", "freeze"), default="on",
                    help="Python's garbage collector as is, disabled, or with the model's objects frozen")
    args = ap.parse_args()
    opts = {k: k in args.kinds.split(",") for k in ("layer_norm", "softmax", "linear_relu")}
    b, s = (int(v) for v in args.batch.split("x"))
    print(f"tritonpatch {tritonpatch.__file__}; {torch.cuda.get_device_name()}; torch {torch.__version__}")
    for spec in args.models.split(","):
        name, attn = spec.split(":")
        torch.manual_seed(0)
        model = build(name, attn).to("cuda", torch.bfloat16).eval()
        ids = torch.randint(0, 1000, (b, s), device="cuda")

        def fwd():
            with torch.no_grad():
                model(input_ids=ids)
        for _ in range(3):
            fwd()
        if args.gc == "off":
            gc.disable()
        elif args.gc == "freeze":
            gc.collect()
            gc.freeze()
        ref, pat = [], []
        for _ in range(args.rounds):
            ref.append(timed(fwd, args.iters))
            with tritonpatch.patch(model, **opts):
                for _ in range(2):
                    fwd()
                pat.append(timed(fwd, args.iters))
        with tritonpatch.patch(model, **opts) as p:
            fwd()
            calls = calls_per_forward(p, fwd)
            summary = str(p).splitlines()[0]
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(5):
                    fwd()
                torch.cuda.synchronize()
                prof.disable()
        ri, rw = (statistics.median(v[k] for v in ref) for k in (0, 1))
        pi, pw = (statistics.median(v[k] for v in pat) for k in (0, 1))
        print(f"{name} {attn} {args.batch} (gc {args.gc}, {args.kinds}): torch issue {ri:.2f} ms wall {rw:.2f} ms | patched issue {pi:.2f} ms "
              f"wall {pw:.2f} ms | wall ratio {rw / pw:.3f} | {calls} patched calls per forward, "
              f"{(pi - ri) / max(calls, 1) * 1e3:.1f} us of issue each | {summary}")
        mi, mp = min(v[0] for v in ref), min(v[0] for v in pat)
        print(f"   best round (the host's least contended): torch issue {mi:.2f} ms, patched {mp:.2f} ms, "
              f"ratio {mi / mp:.3f}, {(mp - mi) / max(calls, 1) * 1e3:.1f} us each")
        print("   rounds issue torch/patched:", " ".join(f"{a[0]:.2f}/{c[0]:.2f}" for a, c in zip(ref, pat)))
        if args.profile:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(22)
            print("\n".join(out.getvalue().splitlines()[6:]))
        model = None  # free it before the next model is built
        gc.enable()
        gc.unfreeze()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
