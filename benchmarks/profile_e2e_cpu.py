"""Where the CPU time of a patched HF forward goes (a launch-bound model on a GPU).

    python benchmarks/profile_e2e_cpu.py [--layers 24]

Prints: GPU-timed forward (torch vs patched), the CPU time to *issue* one forward (no sync inside),
the number of host-device syncs in a patched forward, and cProfile's top functions of patched forwards.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
import warnings

import torch

import tritonpatch
from bench_e2e import build, cuda_ms  # noqa: E402 (benchmarks/ is on sys.path)


def issue_ms(fn, iters: int = 10) -> float:
    """Median CPU ms from call to return (the GPU may still be busy): the cost of issuing the work."""
    out = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return sorted(out)[len(out) // 2]


def syncs_in(fn) -> list:
    """The warnings of torch's sync debug mode raised by one call of ``fn`` (one per host-device sync)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    torch.cuda.set_sync_debug_mode(0)
    return caught


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--csv")
    args = ap.parse_args()
    model = build("opt-350m", "eager", layers=args.layers).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, 1000, (8, 512), device="cuda")

    def fwd():
        with torch.no_grad():
            model(input_ids=ids)
    for _ in range(3):
        fwd()
    print(f"torch   : gpu-timed fwd {cuda_ms(fwd, 10):.2f} ms, issue {issue_ms(fwd):.2f} ms")
    print(f"syncs in one unpatched forward: {len(syncs_in(fwd))}")
    for kind in ("layer_norm", "softmax", "linear_relu"):
        with tritonpatch.patch(model, **{k: k == kind for k in ("layer_norm", "softmax", "linear_relu")}):
            for _ in range(3):
                fwd()
            print(f"only {kind:11s}: gpu-timed fwd {cuda_ms(fwd, 10):.2f} ms, issue {issue_ms(fwd):.2f} ms")
    with tritonpatch.patch(model) as p:
        for _ in range(3):
            fwd()
        print(f"patched : gpu-timed fwd {cuda_ms(fwd, 10):.2f} ms, issue {issue_ms(fwd):.2f} ms")
        caught = syncs_in(fwd)
        print(f"syncs in one patched forward: {len(caught)}")
        for w in caught[:3]:
            print("  ", str(w.message)[:160])
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(3):
            fwd()
        torch.cuda.synchronize()
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
        print(s.getvalue())
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumtime").print_stats(40)
        print(s.getvalue())
    print(str(p).splitlines()[0])
    # training: forward + backward (no optimizer), per kind
    model.train()

    def fwd_bwd():
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
    for _ in range(2):
        fwd_bwd()
    print(f"train torch  : gpu-timed fwd+bwd {cuda_ms(fwd_bwd, 5):.2f} ms")
    for kind in ("layer_norm", "softmax", "linear_relu", "all"):
        opts = {k: kind in (k, "all") for k in ("layer_norm", "softmax", "linear_relu")}
        with tritonpatch.patch(model, **opts):
            for _ in range(2):
                fwd_bwd()
            print(f"train {kind:11s}: gpu-timed fwd+bwd {cuda_ms(fwd_bwd, 5):.2f} ms")


if __name__ == "__main__":
    main()
