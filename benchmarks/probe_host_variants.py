"""Where the host time of a patched, launch-bound HF forward goes: variants of the patched path, in-model.

    python benchmarks/probe_host_variants.py [--batch 8x512] [--rounds 7] [--models opt-350m:sdpa]

At 8x512 every patched call of the bf16 OPT-350m-like model falls back (size policy) and the forward is
host-bound, so the host time a forward takes to issue is its wall time. Per round, each variant below
times ``--iters`` forwards (issue time: call to return, device idle at the start); variants alternate in
a fresh order every round, so host drift hits them alike. Per variant: median issue ms and the µs it adds
per patched call over torch.

Variants: ``torch`` (unpatched); ``all`` / ``ln`` / ``lr`` / ``sm`` (tritonpatch.patch with all kinds,
LayerNorm only, Linear+ReLU only, softmax only); and diagnostic swaps of the patched ``forward``:
``ln-orig`` (the patched LayerNorm class, forward = nn.LayerNorm.forward itself: the class swap alone),
``ln-state`` (plus is_compiling and the state lookup), ``ln-direct`` (the shipped decision with the
fallback calling ``torch.layer_norm`` directly), ``lr-orig`` (likewise nn.Linear.forward / nn.ReLU.forward for the pair's modules);
for the size-first fallback (every call of these models at 8x512): ``ln-size`` / ``ln-count`` (its
LayerNorm path without / with the count), ``lr-size`` / ``lr-site`` (its Linear path without the count,
without / with the call-site probe; the ReLU as nn.ReLU), ``lr-relu`` (the shipped Linear, nn.ReLU's forward).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import random
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import tritonpatch
from tritonpatch import layers
from tritonpatch.ops import layer_norm as layer_norm_op
from bench_e2e import build  # noqa: E402 (benchmarks/ is on sys.path)


@contextlib.contextmanager
def swapped(cls: type, name: str, value):
    old = cls.__dict__[name]
    setattr(cls, name, value)
    try:
        yield
    finally:
        setattr(cls, name, old)


def ln_state(self, input):
    """The class swap plus the state lookup, then what nn.LayerNorm.forward runs."""
    if torch.compiler.is_compiling():
        return nn.LayerNorm.forward(self, input)
    layers.STATES.get(self)
    return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


def ln_direct(self, input):
    """The shipped decision, with the fallback calling torch.layer_norm directly (no F.layer_norm frame)."""
    if torch.compiler.is_compiling():
        return nn.LayerNorm.forward(self, input)
    state = layers.STATES.get(self)
    if state is None:
        return nn.LayerNorm.forward(self, input)
    shape = self.normalized_shape
    if layers.autocast_dtype("layer_norm", input) is None and state.patch.plain:
        params = self._parameters
        weight, bias, eps = params["weight"], params["bias"], self.eps
        reason = layer_norm_op.unsupported(input, shape, weight, bias, eps)
        state.record.count(reason)
        if reason is None:
            return layer_norm_op.layer_norm(input, shape, weight, bias, eps)
        return torch.layer_norm(input, shape, weight, bias, eps, torch.backends.cudnn.enabled)
    return nn.LayerNorm.forward(self, input)


def ln_steps(step: int):
    """The shipped LayerNorm decision cut after ``step`` of its parts (1 parameters + autocast check,
    2 + tensors_reason, 3 + shape checks, 4 + size policy, 5 + the count); always falls back."""
    from tritonpatch.ops import common, size_policy

    def forward(self, input):
        if torch.compiler.is_compiling():
            return nn.LayerNorm.forward(self, input)
        state = layers.STATES.get(self)
        shape = self.normalized_shape
        layers.autocast_dtype("layer_norm", input)
        weight, bias, eps = *layers.weight_and_bias(self), self.eps
        reason = None
        if step >= 2:
            reason = common.tensors_reason(input, weight, bias)
        if step >= 3:
            k = len(shape)
            if k == 0 or input.dim() < k or input.shape[input.dim() - k:] != shape:
                reason = "normalized_shape does not match the input"
            if weight is not None and weight.shape != shape:
                reason = "x"
            if bias is not None and bias.shape != shape:
                reason = "y"
        if step >= 4:
            if size_policy.torch_is_faster("layer_norm", input.numel() * input.element_size(),
                                           common.records_grad(input, weight, bias)):
                reason = size_policy.REASON
        if step >= 5:
            state.record.count(reason)
        return F.layer_norm(input, shape, weight, bias, eps)
    return forward


def lr_steps(step: int):
    """The shipped Linear decision cut after ``step`` of its parts (1 state + parameters, 2 + hooks and
    unsupported, 3 + the call-site check and the count); always falls back."""
    from tritonpatch.ops import linear_relu as lr_op

    def forward(self, input):
        if torch.compiler.is_compiling():
            return nn.Linear.forward(self, input)
        state = layers.STATES.get(self)
        layers.autocast_dtype("linear", input)
        w, b = layers.weight_and_bias(self)
        reason = None
        if step >= 2:
            reason = "hooks" if layers._hooked(self) else lr_op.unsupported(input, w, b)
        if step >= 3 and layers._at_accepted_site(state.sites, check_parent=False):
            state.record.count(reason)
        return F.linear(input, w, b)
    return forward


def ln_size(count: bool):
    """The shipped size-first fallback of a LayerNorm (state lookup, the patch's mode, the size bar), then
    torch's op through ``layers.torch_layer_norm``; the count only with ``count``."""
    from tritonpatch.ops import size_policy

    def forward(self, input):
        if layers._is_compiling():
            return nn.LayerNorm.forward(self, input)
        state = layers._STATE_DATA.get(layers._ref(self))
        if state.patch.plain and layers._below_size_bar(input, "layer_norm", input.nbytes):
            if count:
                state.record.count(size_policy.REASON)
            return layers.torch_layer_norm(input, self.normalized_shape, *layers.weight_and_bias(self), self.eps)
        return nn.LayerNorm.forward(self, input)
    return forward


def lr_size(site: bool):
    """The shipped size-first fallback of a pair's Linear without the count, and without the call-site
    probe unless ``site``."""
    def forward(self, input):
        if layers._is_compiling():
            return nn.Linear.forward(self, input)
        state = layers._STATE_DATA.get(layers._ref(self))
        if state.patch.plain and layers._below_size_bar(input, "linear_relu", 2 * input.numel() * self.out_features):
            if site:
                layers._at_accepted_site(state.sites, check_parent=False)
            return F.linear(input, *layers.weight_and_bias(self))
        return nn.Linear.forward(self, input)
    return forward


#: variant -> per-call ns spent inside the timed forward (the ``-t`` variants)
INSIDE: dict[str, list[int]] = {}


def timed_forward(fn, key: str):
    """``fn`` (a forward) timed from inside, per call, into INSIDE[key]: what the call itself costs in
    the model, to set against what the forward as a whole gains."""
    sink = INSIDE.setdefault(key, [])
    clock = time.perf_counter_ns

    def forward(self, input):
        t = clock()
        out = fn(self, input)
        sink.append(clock() - t)
        return out
    return forward


def variants(model: nn.Module) -> dict[str, callable]:
    def p(**kw):
        return lambda: tritonpatch.patch(model, **kw)

    def with_swaps(kw, swaps):
        @contextlib.contextmanager
        def cm():
            with contextlib.ExitStack() as st:
                for cls, name, value in swaps:
                    st.enter_context(swapped(cls, name, value))
                yield st.enter_context(tritonpatch.patch(model, **kw))
        return cm
    ln_only = dict(softmax=False, linear_relu=False)
    lr_only = dict(layer_norm=False, softmax=False)
    return {
        "torch": contextlib.nullcontext,
        "all": p(),
        "ln": p(**ln_only),
        "lr": p(**lr_only),
        "ln-state": with_swaps(ln_only, [(layers.LayerNormBehaviour, "forward", ln_state)]),
        "ln-direct": with_swaps(ln_only, [(layers.LayerNormBehaviour, "forward", ln_direct)]),
        **{f"ln-s{i}": with_swaps(ln_only, [(layers.LayerNormBehaviour, "forward", ln_steps(i))])
           for i in range(1, 6)},
        **{f"lr-s{i}": with_swaps(lr_only, [(layers.LinearReluBehaviour, "forward", lr_steps(i)),
                                            (layers.ReluBehaviour, "forward", nn.ReLU.forward)])
           for i in range(1, 4)},
        "lr-relu": with_swaps(lr_only, [(layers.ReluBehaviour, "forward", nn.ReLU.forward)]),
        "ln-t": with_swaps(ln_only, [(layers.LayerNormBehaviour, "forward",
                                      timed_forward(layers.LayerNormBehaviour.forward, "ln-t"))]),
        "ln-orig-t": with_swaps(ln_only, [(layers.LayerNormBehaviour, "forward",
                                           timed_forward(nn.LayerNorm.forward, "ln-orig-t"))]),
        "sm": p(layer_norm=False, linear_relu=False),
        "ln-size": with_swaps(ln_only, [(layers.LayerNormBehaviour, "forward", ln_size(False))]),
        "ln-count": with_swaps(ln_only, [(layers.LayerNormBehaviour, "forward", ln_size(True))]),
        "lr-size": with_swaps(lr_only, [(layers.LinearReluBehaviour, "forward", lr_size(False)),
                                        (layers.ReluBehaviour, "forward", nn.ReLU.forward)]),
        "lr-site": with_swaps(lr_only, [(layers.LinearReluBehaviour, "forward", lr_size(True)),
                                        (layers.ReluBehaviour, "forward", nn.ReLU.forward)]),
        "ln-orig": with_swaps(ln_only, [(layers.LayerNormBehaviour, "forward", nn.LayerNorm.forward)]),
        "lr-orig": with_swaps(lr_only, [(layers.LinearReluBehaviour, "forward", nn.Linear.forward),
                                        (layers.ReluBehaviour, "forward", nn.ReLU.forward)]),
    }


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def issue_ms(fn, iters: int) -> float:
    times = []
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    sync()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="8x512")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--models", default="opt-350m:sdpa")
    ap.add_argument("--only", default="", help="comma-separated subset of the variants")
    ap.add_argument("--gc-off", action="store_true", help="Python's garbage collector disabled while timing")
    ap.add_argument("--small", action="store_true", help="a few-MB model on the CPU (smoke run)")
    args = ap.parse_args()
    b, s = (int(v) for v in args.batch.split("x"))
    dev = "cpu" if args.small else "cuda"
    print(f"tritonpatch {tritonpatch.__file__}; "
          f"{torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'}; torch {torch.__version__}")
    for spec in args.models.split(","):
        name, attn = spec.split(":")
        torch.manual_seed(0)
        model = build(name, attn, small=args.small).to(dev, torch.bfloat16).eval()
        ids = torch.randint(0, 1000, (b, s), device=dev)

        def fwd():
            with torch.no_grad():
                model(input_ids=ids)
        for _ in range(3):
            fwd()
        table = variants(model)
        if args.only:
            table = {k: table[k] for k in ["torch", *args.only.split(",")]}
        calls = {}
        for key, cm in table.items():
            with cm() as p:
                fwd()
                if p is not None:
                    before = sum(r.triton_calls + r.fallback_calls for r in p.layers)
                    fwd()
                    calls[key] = sum(r.triton_calls + r.fallback_calls for r in p.layers) - before
        times: dict[str, list[float]] = {k: [] for k in table}
        if args.gc_off:
            gc.collect()
            gc.disable()
        rng = random.Random(0)
        for _ in range(args.rounds):
            order = list(table)
            rng.shuffle(order)
            for key in order:
                with table[key]():
                    fwd()
                    fwd()
                    times[key].append(issue_ms(fwd, args.iters))
        base = statistics.median(times["torch"])
        print(f"{name} {attn} {args.batch}{' (gc off)' if args.gc_off else ''}: torch issue {base:.2f} ms")
        for key, ts in times.items():
            med = statistics.median(ts)
            n = calls.get(key) or calls.get(key.split("-")[0], 0)
            per = f"{(med - base) / n * 1e3:+.1f} us per patched call ({n} calls)" if n else ""
            print(f"  {key:8s} {med:6.2f} ms  ratio {base / med:.3f}  {per}  rounds " +
                  " ".join(f"{t:.2f}" for t in ts), flush=True)
        gc.enable()
        for key, ns in INSIDE.items():
            if ns:
                print(f"  inside {key}: median {statistics.median(ns) / 1e3:.2f} us per call, "
                      f"mean {statistics.fmean(ns) / 1e3:.2f} us ({len(ns)} calls)")
            ns.clear()
        model = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
