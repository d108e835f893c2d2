"""Compile every kernel the ops launch for an sm_90 (Hopper) GPU, on a machine without one.

    python tests/hopper_compile.py [layer_norm,softmax,linear_relu]    # one JSON line per compiled kernel

Run by ``tests/test_hopper_compile.py`` in a subprocess, without ``TRITON_INTERPRET``. The interpreter runs
a kernel's Python body, so it does not see what only Triton's compiler checks (a loop-carried variable
whose type changes inside the loop, a constexpr branch that does not type-check for one dtype, a block too
large for the target); such a kernel passes every CPU test and fails on the first GPU launch. Here the
ops themselves run on CPU tensors over a set of shapes, layouts and dtypes that reaches each kernel and
each constexpr branch the plans choose; every launch (:class:`tritonpatch.ops.launch.FastKernel`) is
replaced by a compilation for ``cuda:90`` (Triton's own ``triton.compile`` down to the cubin, with the
launch's argument types, constexprs, warps and stages), and nothing runs; each record carries the
kernel's shared memory. The autotuned Linear+ReLU GEMMs compile configs the autotuner may pick. Plans
are made as for a device-less run (4 SMs, rows split over programs only when one chunk covers a row),
so the launch parameters can differ from an H100's, not the code.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

os.environ["TRITONPATCH_FAST_LAUNCH"] = "0"
os.environ.setdefault("TRITONPATCH_POISON", "0")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
          torch.int32: "i32", torch.int64: "i64", torch.uint8: "u8", torch.bool: "i1"}
results: dict[tuple, dict] = {}


def _arg_type(a) -> str:
    if isinstance(a, torch.Tensor):
        return "*" + _TYPES[a.dtype]
    if isinstance(a, bool):
        return "i1"
    if isinstance(a, int):
        return "i32" if -(2 ** 31) <= a < 2 ** 31 else "i64"
    if isinstance(a, float):
        return "fp32"
    raise TypeError(f"argument of type {type(a).__name__}")


def _jit(fn):
    """The JITFunction under autotuner / heuristics wrappers."""
    while not hasattr(fn, "params"):
        fn = fn.fn
    return fn


def compile_for_target(fn, args: tuple, constexprs: dict, num_warps: int, num_stages: int | None = None,
                       cooperative: bool = False) -> None:
    """Compile ``fn`` as ``fn[grid](*args, **constexprs)`` would be for TARGET; record the outcome."""
    fn = _jit(fn)
    types = iter([_arg_type(a) for a in args])
    signature = {p.name: ("constexpr" if p.is_constexpr else next(types)) for p in fn.params}
    options = {"num_warps": num_warps}
    if num_stages is not None:
        options["num_stages"] = num_stages
    if cooperative:
        options["launch_cooperative_grid"] = True
    key = (fn.__name__, tuple(signature.values()), tuple(sorted(constexprs.items())), num_warps, num_stages)
    if key in results:
        return
    try:
        compiled = triton.compile(ASTSource(fn, signature, constexprs=dict(constexprs)), target=TARGET,
                                  options=options)
        results[key] = {"kernel": fn.__name__, "ok": True, "shared": compiled.metadata.shared,
                        "constexprs": {k: str(v) for k, v in constexprs.items()}, "num_warps": num_warps}
    except Exception as e:  # noqa: BLE001 - every failure is a result to report
        results[key] = {"kernel": fn.__name__, "ok": False, "constexprs": {k: str(v) for k, v in constexprs.items()},
                        "signature": signature, "num_warps": num_warps,
                        "error": f"{type(e).__name__}: {e}"[-1500:]}


def _install() -> None:
    from tritonpatch.ops.launch import FastKernel

    def slow(self, grid, args, num_warps, num_stages, cooperative, constexprs):
        compile_for_target(self.fn, args, constexprs, num_warps, num_stages, cooperative)
        return None
    FastKernel._slow = slow


def _layer_norm() -> None:
    from tritonpatch.ops import layer_norm as L

    # several rows per program (even tiles, masked tiles), a 32-warp row, looped rows (fp32: a held head;
    # wider than that: none), the wide-row backward (> 8192)
    widths = [(64, 768), (7, 1000), (2, 32768), (2, 40000), (2, 70000), (3, 9000)]
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        for m, n in widths if dt != torch.float16 else widths[:1]:
            x = torch.randn(m, n).to(dt)
            dy = torch.randn(m, n).to(dt)
            w, b = torch.randn(n).to(dt), torch.randn(n).to(dt)
            mean, rstd = torch.randn(m), torch.rand(m) + 1
            for wb in ((w, b), (None, None)):
                L.forward_rows(x, n, wb[0], wb[1], 1e-5, True)
                L.backward_rows(x, dy, n, wb[0], mean, rstd, True, wb[0] is not None, wb[1] is not None, dt)
            L.forward_rows(x, n, w, b, 1e-5, False)
            L.backward_rows(x, dy, n, w, mean, rstd, False, True, False, dt)


def _softmax() -> None:
    from tritonpatch.ops import softmax as S

    # rows held whole, looped rows, a dim of length 1, the reduced axis strided (one pass, split over
    # programs, looped), a transposed last dim
    cases = [((300, 1000), 1), ((3, 70000), 1), ((2, 16), 0), ((5, 300, 8), 1), ((2, 5000, 40), 1),
             ((2, 70000, 3), 1)]
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        for shape, d in cases if dt != torch.float16 else cases[:2]:
            x = torch.randn(*shape).to(dt)
            for out in {dt, torch.float32, torch.bfloat16}:
                y = S._forward(x, d, out)
            dy = torch.randn(*shape).to(dt)
            S._backward(y.to(dt), dy, d, dt)
        S._forward(torch.randn(8, 50).to(dt).t(), 1, dt)
    # fp32 rows split over co-resident programs: planned as for a GPU (132 SMs, 2 programs per SM)
    S.num_sms, S.programs_per_sm = (lambda device: 132), (lambda *args: 2)
    cuda = torch.device("cuda", 0)
    for n in (40000, 20000):
        x = torch.randn(3, n)
        S._fwd_plan(x.shape, x.stride(), 1, x.dtype, x.dtype, cuda, S._heuristics())(x, torch.empty_like(x))
        S._bwd_plan(x.shape, x.stride(), 1, x.dtype, x.dtype, x.dtype, cuda, S._bwd_heuristics())(
            x, x, torch.empty_like(x))


def _linear_relu() -> None:
    from tritonpatch.kernels import linear_relu as K
    from tritonpatch.ops import linear_relu as LR

    for dt in (torch.float32, torch.bfloat16):
        LR.relu_grad(torch.randn(64, 300).to(dt), torch.randn(64, 300).to(dt))
        LR.relu_grad(torch.randn(64, 256).to(dt), torch.randn(64, 256).to(dt))
        prec = LR._input_precision(dt)
        t = torch.empty(0, dtype=dt)
        # the autotuned GEMMs: of the configs the autotuner keeps for a large problem (_prune_*: those
        # whose pipelined tiles fit shared memory), the first and last, and the other constexpr branches
        # with the first
        fwd = K._prune_fwd(K.FWD_CONFIGS, {"x_ptr": t, "M": 4096, "N": 4096, "K": 4096})
        for cfg, bias, even in ((fwd[0], True, True), (fwd[-1], True, True), (fwd[0], False, False)):
            compile_for_target(K.linear_relu_fwd_kernel, (t,) * 4 + (4096,) * 3 + (4096, 1, 4096, 1, 1, 4096, 1, 4096),
                               dict(cfg.kwargs, HAS_BIAS=bias, UPCAST=False, INPUT_PRECISION=prec, EVEN_K=even),
                               cfg.num_warps, cfg.num_stages)
        bwd = K._prune_bwd(K.BWD_CONFIGS, {"a_ptr": t, "P": 4096, "Q": 4096, "R": 4096})
        for cfg, want_sum, even in ((bwd[0], True, True), (bwd[-1], True, True), (bwd[0], False, False)):
            compile_for_target(K.masked_matmul_kernel, (t,) * 5 + (4096,) * 3 + (4096, 1) * 4 + (4096, 4096),
                               dict(cfg.kwargs, HAS_SUM=want_sum, UPCAST=False, INPUT_PRECISION=prec, EVEN_R=even),
                               cfg.num_warps, cfg.num_stages)


PARTS = {"layer_norm": _layer_norm, "softmax": _softmax, "linear_relu": _linear_relu}


def main() -> int:
    _install()
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(PARTS)
    for part in (PARTS[n] for n in names):
        try:
            part()
        except Exception:  # noqa: BLE001 - a driver failure is reported, not a crash
            print(json.dumps({"kernel": part.__name__, "ok": False, "error": traceback.format_exc()[-3000:]}))
    for r in results.values():
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
