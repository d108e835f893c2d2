"""Patched calls inside CUDA graphs: do they capture, and where do the kernels win in GPU time alone?

    python benchmarks/probe_graph_capture.py [--parts capture,crossover,e2e]

The size policy (``tritonpatch/ops/size_policy.py``) sends small calls to torch because a patched call
costs more host time than torch's op. Replayed from a CUDA graph, a call costs no host time at all, so
the question there is only which kernels are faster on the GPU. Three parts:

* ``capture``: in a fresh process, each op called for the first time *inside* ``torch.cuda.graph`` with
  the size policy off (so its Triton kernels compile and load during the capture), forward and
  forward+backward; then a patched 2-layer OPT-like model captured with the policy off. Reports whether
  the capture succeeds, and the replay's error against an eager float64 reference.
* ``crossover``: torch vs tritonpatch (ops called directly, size policy off) in GPU time, from CUDA graphs
  of 20 calls each on the same inputs, at sizes from a few KiB up: LayerNorm, softmax, Linear+ReLU,
  forward and forward+backward.
* ``e2e``: the OPT-350m-like model (24 layers, bf16, 8 x 512, SDPA attention), its forward and a
  forward+backward captured in CUDA graphs, unpatched vs patched with the size policy on (as shipped)
  and off; replays timed in alternation.
* ``query``: the CPU cost of the size policy's "is a graph being captured" query.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tritonpatch  # noqa: E402
from timing import graph_of, replay_ms  # noqa: E402
from timing import warm_up as warm  # noqa: E402
from tritonpatch.ops import layer_norm as ln_op  # noqa: E402
from tritonpatch.ops import linear_relu as lr_op  # noqa: E402
from tritonpatch.ops import softmax as sm_op  # noqa: E402
from tritonpatch.ops.common import environment  # noqa: E402

DEV = "cuda"


def randn(*shape, dtype=torch.float32) -> torch.Tensor:
    """Drawn on the CPU, then moved: the CUDA generator is unusable after a failed capture."""
    return torch.randn(*shape).to(DEV, dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


# ----------------------------------------------------------------------------------------------------
def part_capture() -> None:
    print("== capture: first calls inside torch.cuda.graph (size policy off: kernels compile in the capture)")
    torch.manual_seed(0)
    # cuBLAS handle and workspace exist before any capture, as after a user's unpatched warm-up
    a = randn(64, 64, dtype=torch.bfloat16)
    (a @ a).sum().item()

    def ln_case(m, n, dtype):
        x = randn(m, n, dtype=dtype).requires_grad_()
        w = (randn(n) * 0.5 + 1).to(dtype).requires_grad_()
        b = (randn(n) * 0.1).to(dtype).requires_grad_()
        dy = randn(m, n, dtype=dtype)
        return (x, w, b), dy, lambda t, lib: (ln_op.layer_norm(t[0], (n,), t[1], t[2], 1e-5) if lib
                                              else F.layer_norm(t[0], (n,), t[1], t[2], 1e-5))

    def sm_case(shape, dtype):
        x = (randn(shape) * 3).to(dtype).requires_grad_()
        dy = randn(shape, dtype=dtype)
        return (x,), dy, lambda t, lib: sm_op.softmax(t[0], -1) if lib else torch.softmax(t[0], -1)

    def lr_case(m, k, n):
        x = randn(m, k, dtype=torch.bfloat16).requires_grad_()
        w = (randn(n, k) / k ** 0.5).to(torch.bfloat16).requires_grad_()
        b = (randn(n) * 0.1).to(torch.bfloat16).requires_grad_()
        dy = randn(m, n, dtype=torch.bfloat16)
        return (x, w, b), dy, lambda t, lib: (lr_op.linear_relu(*t) if lib else F.relu(F.linear(*t)))

    cases = [("layer_norm bf16 300x1000", ln_case(300, 1000, torch.bfloat16)),
             ("layer_norm fp32 40x20000 (wide bwd)", ln_case(40, 20000, torch.float32)),
             ("softmax bf16 70x900", sm_case((70, 900), torch.bfloat16)),
             ("softmax fp32 3x70000 (split rows)", sm_case((3, 70000), torch.float32)),
             ("linear_relu bf16 300x200->500", lr_case(300, 200, 500))]
    with environment(TRITONPATCH_SIZE_POLICY="0"):
        for name, (inputs, dy, f) in cases:
            # the user's warm-up before a capture, where the size policy sends these calls to torch: torch's
            # forward and backward once (cuBLAS handles of the autograd thread exist from then on)
            warm(lambda: torch.autograd.grad(f(inputs, False), inputs, dy), 1)
            for pass_ in ("forward", "forward+backward"):
                try:
                    outs: list = []

                    def call():
                        y = f(inputs, True)
                        outs.clear()
                        outs.append(y)
                        if pass_ != "forward":
                            outs.extend(torch.autograd.grad(y, inputs, dy))
                    if pass_ == "forward":
                        with torch.no_grad():
                            g = graph_of(call, 1)
                    else:
                        g = graph_of(call, 1)
                    g.replay()
                    torch.cuda.synchronize()
                    ref_in = tuple(t.detach().double().requires_grad_() for t in inputs)
                    ref_y = f(ref_in, False)
                    refs = [ref_y] + (list(torch.autograd.grad(ref_y, ref_in, dy.double()))
                                      if pass_ != "forward" else [])
                    errs = ", ".join(f"{rel(o, r):.1e}" for o, r in zip(outs, refs))
                    print(f"  {name:38s} {pass_:17s} captured, replayed; rel err vs float64: {errs}")
                except Exception as e:  # noqa: BLE001 (report and go on)
                    print(f"  {name:38s} {pass_:17s} FAILED: {type(e).__name__}: {str(e)[:300]}")
                    torch.cuda.synchronize()
    # a patched model, policy off: every patched call on Triton inside the capture
    from bench_e2e import build
    for attn in ("sdpa",):  # eager attention does not capture: transformers' eager mask copies a CPU scalar
        try:
            model = build("opt-350m", attn, layers=2).to(DEV, torch.bfloat16).eval()
            ids = torch.randint(0, 1000, (2, 128)).to(DEV)
            with torch.no_grad():
                ref = model(ids).logits.float()
                warm(lambda: model(ids), 1)
            with environment(TRITONPATCH_SIZE_POLICY="0"), tritonpatch.patch(model) as p, torch.no_grad():
                out: list = []
                g = graph_of(lambda: out.append(model(ids).logits), 1)
                g.replay()
                torch.cuda.synchronize()
            print(f"  OPT-like 2 layers {attn:5s} 2x128 forward captured while patched: rel err vs unpatched "
                  f"{rel(out[-1].float(), ref):.1e}; Triton calls {sum(r.triton_calls for r in p.layers)}, "
                  f"fallbacks {sum(r.fallback_calls for r in p.layers)}")
        except Exception:  # noqa: BLE001
            print(f"  OPT-like {attn} capture FAILED:\n" + traceback.format_exc()[-1500:])


# ----------------------------------------------------------------------------------------------------
def crossover_cases():
    for dtype in (torch.bfloat16, torch.float32):
        for n in (768, 1024, 4096):
            for m in (16, 64, 256, 1024, 4096, 16384):
                if m * n * dtype.itemsize > 128 * 2 ** 20:
                    continue

                def make(m=m, n=n, dtype=dtype):
                    x = randn(m, n, dtype=dtype).requires_grad_()
                    w = (randn(n) * 0.5 + 1).to(dtype).requires_grad_()
                    b = (randn(n) * 0.1).to(dtype).requires_grad_()
                    return (x, w, b), randn(m, n, dtype=dtype)
                yield ("layer_norm", f"{m}x{n}", dtype, m * n * dtype.itemsize, make,
                       lambda t, n=n: F.layer_norm(t[0], (n,), t[1], t[2], 1e-5),
                       lambda t, n=n: ln_op.layer_norm(t[0], (n,), t[1], t[2], 1e-5))
    for dtype in (torch.bfloat16, torch.float32):
        for shape in ((64, 512), (256, 1024), (1024, 1024), (4096, 1024), (1, 16, 128, 128), (2, 16, 256, 256),
                      (8, 16, 512, 512), (1024, 4096), (16384, 1024)):
            if math.prod(shape) * dtype.itemsize > 128 * 2 ** 20:
                continue

            def make(shape=shape, dtype=dtype):
                x = (randn(shape) * 3).to(dtype).requires_grad_()
                return (x,), randn(shape, dtype=dtype)
            yield ("softmax", "x".join(map(str, shape)), dtype, math.prod(shape) * dtype.itemsize, make,
                   lambda t: torch.softmax(t[0], -1), lambda t: sm_op.softmax(t[0], -1))
    for m in (64, 256, 1024, 2048, 4096, 8192):
        for k, n in ((768, 3072), (1024, 4096), (4096, 1024)):
            def make(m=m, k=k, n=n):
                x = randn(m, k, dtype=torch.bfloat16).requires_grad_()
                w = (randn(n, k) / k ** 0.5).to(torch.bfloat16).requires_grad_()
                b = (randn(n) * 0.1).to(torch.bfloat16).requires_grad_()
                return (x, w, b), randn(m, n, dtype=torch.bfloat16)
            yield ("linear_relu", f"{m}x{k}->{n}", torch.bfloat16, 2 * m * n * k, make,
                   lambda t: F.relu(F.linear(*t)), lambda t: lr_op.linear_relu(*t))


def part_crossover() -> None:
    print("== crossover: GPU time per call from CUDA graphs of 20 calls (same inputs), torch / tritonpatch")
    print(f"{'op':12s} {'shape':18s} {'dtype':9s} {'size':>14s} {'fwd torch us':>12s} {'ours us':>8s} {'x':>6s} "
          f"{'f+b torch us':>12s} {'ours us':>8s} {'x':>6s}")
    with environment(TRITONPATCH_SIZE_POLICY="0"):
        for op, shape, dtype, size, make, ref, ours in crossover_cases():
            inputs, dy = make()
            res = []
            for pass_ in ("fwd", "fwd+bwd"):
                times = {"torch": [], "ours": []}
                fns = {}
                for who, f in (("torch", ref), ("ours", ours)):
                    if pass_ == "fwd":
                        def fn(f=f):
                            with torch.no_grad():
                                f(inputs)
                    else:
                        def fn(f=f):
                            torch.autograd.grad(f(inputs), inputs, dy)
                    warm(fn)
                    fns[who] = graph_of(fn, 20)
                for _ in range(3):  # alternate
                    for who in ("torch", "ours"):
                        times[who].append(replay_ms(fns[who]) / 20 * 1000)
                t, o = statistics.median(times["torch"]), statistics.median(times["ours"])
                res.append((t, o))
                del fns
            unit = "FLOP" if op == "linear_relu" else "B"
            print(f"{op:12s} {shape:18s} {str(dtype)[6:]:9s} {size:12.3g}{unit:>2s} "
                  f"{res[0][0]:12.2f} {res[0][1]:8.2f} {res[0][0] / res[0][1]:6.2f} "
                  f"{res[1][0]:12.2f} {res[1][1]:8.2f} {res[1][0] / res[1][1]:6.2f}", flush=True)
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------
def part_e2e() -> None:
    from bench_e2e import build
    print("== e2e: OPT-350m-like, bf16, 8x512, SDPA, captured in CUDA graphs; ms per replay (medians of "
          "alternations)\n   (eager attention does not capture: transformers' eager mask copies a CPU scalar)")
    torch.manual_seed(0)
    model = build("opt-350m", "sdpa").to(DEV, torch.bfloat16)
    params = [p_ for p_ in model.parameters() if p_.requires_grad]
    ids = torch.randint(0, 50000, (8, 512)).to(DEV)
    graphs: dict = {}
    outs: dict = {}
    for variant in ("unpatched", "patched", "patched, policy off"):
        for pass_ in ("forward", "forward+backward"):
            key = (variant, pass_)
            holder: list = []
            if pass_ == "forward":
                model.eval()

                def fn(holder=holder):
                    with torch.no_grad():
                        holder[:] = [model(ids).logits]
            else:
                model.train()

                def fn(holder=holder):
                    loss = model(ids, labels=ids).loss
                    holder[:] = [loss, *torch.autograd.grad(loss, params)]
            patch = tritonpatch.patch(model) if variant != "unpatched" else None
            try:
                with environment(TRITONPATCH_SIZE_POLICY="0" if variant.endswith("off") else "1"):
                    warm(fn, 2)
                    graphs[key] = graph_of(fn, 1)
                graphs[key].replay()
                torch.cuda.synchronize()
                outs[key] = holder
                note = ""
                if patch is not None:
                    note = (f"Triton calls {sum(r.triton_calls for r in patch.layers)}, fallbacks "
                            f"{sum(r.fallback_calls for r in patch.layers)} (warm-up and capture)")
                base = outs.get(("unpatched", pass_))
                if base is not None and variant != "unpatched":
                    note += "; rel err vs the unpatched graph: " + ", ".join(
                        f"{rel(a.float(), b.float()):.1e}" for a, b in list(zip(holder, base))[:3]) + " (first 3)"
                print(f"  {variant:20s} {pass_:17s} captured and replayed. {note}", flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"  {variant:20s} {pass_:17s} FAILED {type(e).__name__}: {str(e)[:400]}", flush=True)
                graphs.pop(key, None)
            finally:
                if patch is not None:
                    patch.unpatch()
    times: dict = {}
    for _ in range(5):
        for key, g in graphs.items():
            times.setdefault(key, []).append(replay_ms(g, 10))
    for pass_ in ("forward", "forward+backward"):
        base = times.get(("unpatched", pass_))
        if not base:
            continue
        tb = statistics.median(base)
        line = f"  {pass_:17s} unpatched {tb:8.3f} ms"
        for variant in ("patched", "patched, policy off"):
            ts = times.get((variant, pass_))
            if ts:
                t = statistics.median(ts)
                line += f" | {variant} {t:8.3f} ms ({tb / t:.3f}x)"
        print(line, flush=True)


def part_query() -> None:
    """What the size policy's capture query adds to a call under the size bars (the only calls that ask)."""
    import timeit

    from tritonpatch.ops import size_policy
    n = 200000

    def us(fn) -> float:
        fn()
        return min(timeit.repeat(fn, number=n, repeat=7)) / n * 1e6
    print(f"== query (best of 7 x {n}): CUDA's answer (torch.cuda.is_current_stream_capturing's binding) "
          f"{us(size_policy._capturing):.3f} us per call; size_policy.capturing() with no capture counted "
          f"{us(size_policy.capturing):.3f} us; size_policy.torch_is_faster('layer_norm', 1, False) "
          f"{us(lambda: size_policy.torch_is_faster('layer_norm', 1, False)):.3f} us; an empty lambda "
          f"{us(lambda: None):.3f} us")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="capture,crossover,e2e,query")
    args = ap.parse_args()
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | triton "
          f"{__import__('triton').__version__}")
    for part in args.parts.split(","):
        {"capture": part_capture, "crossover": part_crossover, "e2e": part_e2e, "query": part_query}[part]()


if __name__ == "__main__":
    main()
