"""Machinery shared by the benchmark suite's op stages (bench_layer_norm.py, bench_softmax.py,
bench_linear_relu.py) and its driver (run_suite.py).

A stage lists *cases* (one op, shape and dtype) and *providers* (torch eager, torch.compile, peers,
tritonpatch). For each case and each pass ("fwd", "fwd+bwd") every provider is

1. checked, on a private copy of the first input set: its output (and, for "fwd+bwd", every input
   gradient) against a float64 reference computed by torch, next to torch eager's own error. Relative
   error is ||out - ref|| / ||ref|| (inf when NaNs differ). A provider passes when each tensor's error
   is at most ``2 * eager's + FLOOR[dtype]``; otherwise, or when a gradient is missing or a shape
   differs, its row says ``mismatch: ...`` and it is **not timed**. The check is run twice (unless
   its first call took over REPEAT_MAX_S): ``bitwise_repeat`` says whether both runs gave identical
   bits (deterministic reductions).
   That first call is also the warm-up (torch.compile compiles, Triton autotunes): ``first_call_s``.
2. timed: ``triton.testing.do_bench(..., return_mode="median")`` (which also clears L2 before each
   call) over a rotation of input sets whose total size is at least twice the GPU's L2 cache, so the
   data comes from HBM. A provider whose warm call takes over ``SLOW_MS`` is timed by that one call
   (``timing`` says so) instead of do_bench's dozens.

Each row also carries effective GB/s (bytes that must move, defined per stage) and its share of the
copy ceiling measured in the same run (``copy_ceiling``: a device-to-device copy of 1 GiB counting read
+ write), TFLOP/s where the stage gives FLOPs, and ``vs_eager`` = eager ms / provider ms.

Statuses: ``ok``, ``mismatch: ...``, ``unsupported: ...`` (the provider cannot express the case),
``unavailable: ...`` (peer not importable), ``error: ...`` (it raised), ``skipped: ...`` (smoke mode,
time budget).

Smoke mode (``--smoke``): CPU, ``TRITON_INTERPRET=1`` (set here before triton is imported), tiny
shapes, torch.compile skipped, one wall-clock-timed call instead of do_bench: it exercises every code
path, its numbers mean nothing.
"""
from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv:  # before triton (and tritonpatch) are imported anywhere
    os.environ.setdefault("TRITON_INTERPRET", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as _dt  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Iterable  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # the repository root: tritonpatch without installing it
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from results_io import write_csv  # noqa: E402
from tritonpatch.ops import common  # noqa: E402

#: Per-tensor allowance added to the bar, by the dtype torch returns: the unit roundoff for bf16 (2^-8)
#: and fp16 (2^-11), 1e-5 for fp32 (room for reassociated fp32 reductions); it keeps the bar meaningful
#: where eager's own error is ~0.
FLOOR = {torch.float32: 1e-5, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float64: 1e-12}
#: A warm call slower than this is timed once instead of by do_bench.
SLOW_MS = 200.0
#: The check is repeated (for ``bitwise_repeat``) unless its first call (compile, autotune included)
#: took longer than this.
REPEAT_MAX_S = 10.0
PASSES = ("fwd", "fwd+bwd")

COLUMNS = ["op", "case", "shape", "dtype", "out_dtype", "pass", "provider", "status", "ms", "gbps",
           "pct_copy", "tflops", "vs_eager", "err", "err_eager", "bitwise_repeat", "first_call_s", "timing",
           "rotation_sets", "bytes", "flops", "copy_gbps", "note"]


class Unsupported(Exception):
    """The provider cannot express this case (e.g. a softmax over a dim other than the last)."""


class Unavailable(Exception):
    """The provider's library could not be imported."""


class Skip(Exception):
    """Not run on purpose (smoke mode, time budget)."""


def dtype_name(dt: torch.dtype | None) -> str:
    return "" if dt is None else str(dt).replace("torch.", "")


def short_dtype(dt: torch.dtype | None) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}.get(dtype_name(dt),
                                                                                            dtype_name(dt))


def short_error(e: BaseException) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {first}"[:240]


# ------------------------------------------------------------------------------------------------------
# run context
# ------------------------------------------------------------------------------------------------------
@dataclass
class Context:
    device: str
    smoke: bool
    out_dir: Path
    deadline: float                    # time.monotonic() past which cases are skipped
    warmup_ms: float = 10.0
    rep_ms: float = 50.0
    copy_gbps: float = float("nan")
    l2_bytes: int = 50 * 2**20
    meta: dict = field(default_factory=dict)
    csv_override: Path | None = None   # a standalone stage's --csv

    def csv_path(self, op: str) -> Path:
        return self.csv_override or self.out_dir / f"{op}.csv"

    @classmethod
    def create(cls, out_dir: str | Path, smoke: bool, budget_s: float) -> "Context":
        if not smoke and not torch.cuda.is_available():
            raise SystemExit("the benchmark suite needs a CUDA GPU (or --smoke on a CPU)")
        device = "cpu" if smoke else "cuda"
        ctx = cls(device=device, smoke=smoke, out_dir=Path(out_dir), deadline=time.monotonic() + budget_s,
                  warmup_ms=float(os.environ.get("SUITE_WARMUP_MS", 10)),
                  rep_ms=float(os.environ.get("SUITE_REP_MS", 50)))
        if device == "cuda":
            ctx.l2_bytes = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or ctx.l2_bytes)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        return ctx

    def over_budget(self) -> bool:
        return time.monotonic() > self.deadline

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def free(self) -> None:
        if self.device == "cuda":
            torch.cuda.empty_cache()


def env_info(ctx: Context) -> dict:
    """Device, versions and settings for meta.json (filled further by run_suite.py)."""
    import triton
    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "smoke": ctx.smoke,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "device": "cpu (TRITON_INTERPRET=1)" if ctx.device == "cpu" else torch.cuda.get_device_name(),
        "allow_tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "do_bench": {"warmup_ms": ctx.warmup_ms, "rep_ms": ctx.rep_ms, "return_mode": "median",
                     "slow_ms": SLOW_MS},
    }
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except Exception as e:  # noqa: BLE001
        info["transformers"] = f"unavailable: {short_error(e)}"
    if ctx.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(sms=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1),
                    l2_mib=round(ctx.l2_bytes / 2**20, 1))
        with contextlib.suppress(Exception):
            q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            if q.returncode == 0:
                drv, clk = (s.strip() for s in q.stdout.strip().splitlines()[0].split(","))
                info.update(driver=drv, max_sm_clock=clk)
    return info


def write_meta(ctx: Context) -> None:
    (ctx.out_dir / "meta.json").write_text(json.dumps(ctx.meta, indent=1, default=str) + "\n")


def copy_ceiling(ctx: Context) -> float:
    """GB/s of ``dst.copy_(src)`` on 1 GiB (bytes read + written): the practical bandwidth ceiling."""
    n = 2**20 if ctx.smoke else 2**29

    def timed() -> float:
        src = torch.empty(n, dtype=torch.bfloat16, device=ctx.device).normal_()
        dst = torch.empty_like(src)
        return measure(ctx, lambda: dst.copy_(src))[0]
    ms = timed()
    ctx.free()
    return 2 * n * 2 / ms / 1e6


# ------------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------------
def measure(ctx: Context, fn: Callable[[], object]) -> tuple[float, str]:
    """(ms, how): do_bench's median; one timed call if that call is over SLOW_MS; one call in smoke mode."""
    ctx.sync()
    t0 = time.perf_counter()
    fn()
    ctx.sync()
    one = (time.perf_counter() - t0) * 1e3
    if ctx.smoke:
        return one, "smoke: 1 call, meaningless"
    if one > SLOW_MS:
        return one, "1 call (slow)"
    import triton.testing
    return triton.testing.do_bench(fn, warmup=ctx.warmup_ms, rep=ctx.rep_ms, return_mode="median"), "do_bench median"


def rotation_count(ctx: Context, set_bytes: int) -> int:
    """How many input sets to rotate through: together at least 2x L2 (2..32 sets)."""
    if ctx.smoke:
        return 2
    return max(2, min(32, math.ceil(2 * ctx.l2_bytes / max(1, set_bytes))))


# ------------------------------------------------------------------------------------------------------
# correctness
# ------------------------------------------------------------------------------------------------------
def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 over the entries where ref is not NaN; inf if NaNs differ."""
    out, ref = out.detach().double(), ref.detach().double()
    nan = torch.isnan(ref)
    if not torch.equal(torch.isnan(out), nan):
        return float("inf")
    if nan.any():
        out, ref = out[~nan], ref[~nan]
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def clone_set(s: dict) -> dict:
    return {k: (v.detach().clone().requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v)
            for k, v in s.items()}


def to_double(s: dict) -> dict:
    return {k: (v.detach().double().requires_grad_(v.requires_grad)
                if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in s.items()}


# ------------------------------------------------------------------------------------------------------
# cases and providers
# ------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One op at one shape and dtype.

    ``make_set(grad)`` returns one input set: a dict of tensors (``grad``: the differentiable ones
    require grad, and ``dy``, the output gradient, is included). ``grad_keys`` name the tensors whose
    gradients "fwd+bwd" computes, in order. ``reference(set)`` is torch's own function, run on the
    float64 copy of a set for the reference and on the set itself for "torch" eager.
    ``bytes``/``flops`` map a pass to what must move / be computed.
    """
    op: str
    case: str
    shape: str
    dtype: torch.dtype
    out_dtype: torch.dtype
    make_set: Callable[[bool], dict]
    grad_keys: tuple[str, ...]
    reference: Callable[[dict], torch.Tensor]
    set_bytes: int
    bytes: dict = field(default_factory=dict)
    flops: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


@dataclass
class Provider:
    """``build(case, pass)`` returns ``f(set) -> output tensor`` or raises Unsupported / Unavailable /
    Skip. ``check=False`` marks a bound that computes something else on purpose (e.g. F.linear without
    the ReLU): it is timed, not checked."""
    name: str
    build: Callable[[Case, str], Callable[[dict], torch.Tensor]]
    check: bool = True
    note: str | Callable[[Case], str] = ""
    around: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # held over fwd and bwd


def make_call(fn: Callable[[dict], torch.Tensor], case: Case, pass_: str,
              around: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> Callable[[dict], tuple]:
    """The pass around a provider's function: fwd under no_grad -> (y,); fwd+bwd -> (y, *grads)."""
    if pass_ == "fwd":
        def call(s: dict) -> tuple:
            with torch.no_grad(), around():
                return (fn(s),)
    else:
        def call(s: dict) -> tuple:
            with around():
                y = fn(s)
                grads = torch.autograd.grad(y, [s[k] for k in case.grad_keys], s["dy"], allow_unused=True)
            return (y, *grads)
    return call


def compare(outs: tuple, ref: tuple, eager_errs: list[float] | None, names: list[str],
            dtypes: list[torch.dtype]) -> tuple[list[float], str | None]:
    """Errors per tensor, and a mismatch reason (None when every tensor is within its bar).

    The bar of tensor i is ``2 * eager_errs[i] + FLOOR[dtypes[i]]`` (dtypes: what torch returns);
    without eager errors (eager itself failed) it is ``8 * FLOOR``."""
    errs: list[float] = []
    reason = None
    for i, (o, r) in enumerate(zip(outs, ref)):
        if o is None:
            errs.append(float("inf"))
            reason = reason or f"{names[i]} missing (no gradient returned)"
            continue
        if tuple(o.shape) != tuple(r.shape):
            errs.append(float("inf"))
            reason = reason or f"{names[i]} shape {tuple(o.shape)} != {tuple(r.shape)}"
            continue
        e = rel_err(o, r)
        errs.append(e)
        floor = FLOOR.get(dtypes[i], 1e-5)
        bar = 2 * eager_errs[i] + floor if eager_errs is not None else 8 * floor
        if not e <= bar and reason is None:
            reason = f"{names[i]} rel err {e:.2e} > bar {bar:.2e}"
    return errs, reason


def _fmt(v, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


class Sink:
    """Collects a stage's rows (keys ``columns``, in order), rewrites its CSV after every case (a killed
    run keeps what it measured) and prints one line per row (``show``; default: an op row)."""

    def __init__(self, ctx: Context, path: Path | None, columns: list[str] = COLUMNS,
                 show: Callable[[dict], str] | None = None):
        self.ctx, self.path, self.columns, self.rows = ctx, path, columns, []
        self.show = show or show_op_row

    def add(self, row: dict) -> None:
        r = {c: row.get(c, "") for c in self.columns}
        self.rows.append(r)
        print(self.show(r), flush=True)

    def flush(self) -> None:
        if self.path is not None and self.rows:
            write_csv(self.rows, self.path, quiet=True)


def show_op_row(r: dict) -> str:
    perf = ""
    if r["ms"] != "":
        perf = f"{float(r['ms']):9.4f} ms"
        if r["gbps"] != "":
            perf += f" {float(r['gbps']):6.0f} GB/s ({float(r['pct_copy'] or 'nan'):3.0f}%)"
        if r["tflops"] != "":
            perf += f" {float(r['tflops']):6.1f} TFLOP/s"
        if r["vs_eager"] != "":
            perf += f"  x{float(r['vs_eager']):.2f}"
        if r["timing"] == "1 call (slow)":
            perf += " (1 call)"
    err = f" err {float(r['err']):.1e}" if r["err"] != "" and math.isfinite(float(r["err"])) else ""
    dts = short_dtype_str(r["dtype"]) + ("->" + short_dtype_str(r["out_dtype"]) if r["out_dtype"] != r["dtype"] else "")
    return (f"  {r['op']:<11} {dts:<10} {r['case']:<10} {r['shape']:<16} {r['pass']:<7} {r['provider']:<20}"
            f" {perf}{err}  {r['status'][:120]}")


def short_dtype_str(name: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, name)


def run_case(ctx: Context, case: Case, providers: list[Provider], sink: Sink) -> None:
    """Check and time every provider on ``case`` for both passes; rows go to ``sink``."""
    base = dict(op=case.op, case=case.case, shape=case.shape, dtype=dtype_name(case.dtype),
                out_dtype=dtype_name(case.out_dtype), copy_gbps=_fmt(ctx.copy_gbps, ".0f"))
    for pass_ in PASSES:
        prow = dict(base, **{"pass": pass_, "bytes": case.bytes.get(pass_, ""), "flops": case.flops.get(pass_, "")})
        if ctx.over_budget():
            for p in providers:
                sink.add(dict(prow, provider=p.name, status="skipped: time budget (SUITE_BUDGET_S) spent"))
            continue
        grad = pass_ == "fwd+bwd"
        names = ["out"] + [f"d{k}" for k in case.grad_keys] if grad else ["out"]
        try:
            first = case.make_set(grad)
            dtypes = [case.out_dtype] + [first[k].dtype for k in case.grad_keys] if grad else [case.out_dtype]
            k = rotation_count(ctx, case.set_bytes)
            sets = [first] + [case.make_set(grad) for _ in range(k - 1)]
            ref = make_call(case.reference, case, pass_)(to_double(first))
            ref = tuple(t.detach() if t is not None else None for t in ref)
        except Exception as e:  # noqa: BLE001 (e.g. out of memory: report, go on)
            for p in providers:
                sink.add(dict(prow, provider=p.name, status=f"error: inputs/reference: {short_error(e)}"))
            sets, ref = [], ()
            ctx.free()
            continue
        eager_errs: list[float] | None = None
        eager_ms: float | None = None
        for p in providers:
            row = dict(prow, provider=p.name, rotation_sets=len(sets),
                       note=p.note(case) if callable(p.note) else p.note)
            try:
                fn = p.build(case, pass_)
                call = make_call(fn, case, pass_, p.around)
                t0 = time.perf_counter()
                outs = call(clone_set(first))
                ctx.sync()
                row["first_call_s"] = f"{time.perf_counter() - t0:.3f}"
                if p.check:
                    if p.name == "torch":            # torch eager (first in every stage): the bars' base
                        eager_errs, reason = compare(outs, ref, None, names, dtypes)[0], None
                        errs = eager_errs
                    else:
                        errs, reason = compare(outs, ref, eager_errs, names, dtypes)
                    row["err"] = f"{max(errs):.3e}"
                    if eager_errs is not None:
                        row["err_eager"] = f"{max(eager_errs):.3e}"
                    if outs[0] is not None and outs[0].dtype != case.out_dtype:
                        row["note"] = "; ".join(filter(None, [row["note"], f"returns {dtype_name(outs[0].dtype)}"]))
                    if reason:
                        row["status"] = f"mismatch: {reason}"
                        sink.add(row)
                        del outs
                        continue
                    if float(row["first_call_s"]) < REPEAT_MAX_S:
                        again = call(clone_set(first))
                        row["bitwise_repeat"] = all(
                            (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
                            for a, b in zip(outs, again))
                        del again
                del outs
                it = itertools.cycle(sets)
                ms, how = measure(ctx, lambda: call(next(it)))
            except Unsupported as e:
                row["status"] = f"unsupported: {e}"
            except Unavailable as e:
                row["status"] = f"unavailable: {e}"
            except Skip as e:
                row["status"] = f"skipped: {e}"
            except Exception as e:  # noqa: BLE001 (a provider must never stop the suite)
                row["status"] = f"error: {short_error(e)}"
                ctx.free()
            else:
                row.update(status="ok", ms=f"{ms:.5f}", timing=how)
                if p.name == "torch":
                    eager_ms = ms
                nbytes, nflops = case.bytes.get(pass_), case.flops.get(pass_)
                if nbytes:
                    gbps = nbytes / ms / 1e6
                    row.update(gbps=f"{gbps:.1f}", pct_copy=_fmt(100 * gbps / ctx.copy_gbps, ".1f"))
                if nflops:
                    row["tflops"] = f"{nflops / ms / 1e9:.2f}"
                if eager_ms:
                    row["vs_eager"] = f"{eager_ms / ms:.3f}"
            sink.add(row)
        del sets, first, ref
        ctx.free()
    sink.flush()


def run_stage(ctx: Context, op: str, cases: Iterable[Case], providers: list[Provider],
              env: dict[str, str] | None = None) -> list[dict]:
    """Run ``cases`` (a lazy iterable, so inputs are made one case at a time) into ``<out>/<op>.csv``.

    ``SUITE_DTYPES`` (e.g. ``"fp32"`` or ``"bf16 fp16"``) keeps only the cases of those dtypes.
    """
    only = os.environ.get("SUITE_DTYPES", "").split()
    if only:
        cases = (c for c in cases if short_dtype_str(dtype_name(c.dtype)) in only)
    sink = Sink(ctx, ctx.csv_path(op))
    start = time.monotonic()
    with common.environment(**(env or {})):
        try:
            for i, case in enumerate(cases, 1):
                t0 = time.monotonic()
                if not ctx.smoke:
                    with contextlib.suppress(Exception):
                        torch._dynamo.reset()  # each case compiles its own graphs: no recompile limits, no guard chains
                run_case(ctx, case, providers, sink)
                print(f"  [{op} case {i} ({short_dtype(case.dtype)} {case.case} {case.shape}): "
                      f"{time.monotonic() - t0:.1f} s; stage {time.monotonic() - start:.0f} s]", flush=True)
        finally:
            sink.flush()
    return sink.rows


def compile_provider(ctx: Context, make_fn: Callable[[Case], Callable],
                     call: Callable[[Callable, dict], torch.Tensor]) -> Provider:
    """torch.compile (default mode, dynamic=False) of the torch function ``make_fn(case)``, compiled
    once per (case, pass): the first call (the correctness check) is the compile, not timed."""
    def build(case: Case, pass_: str):
        if ctx.smoke:
            raise Skip("smoke mode: torch.compile is not run")
        compiled = torch.compile(make_fn(case), dynamic=False)
        return lambda s: call(compiled, s)
    return Provider("torch.compile", build, note="first call compiles (first_call_s)")


def configure_dynamo() -> None:
    """Fail loudly rather than silently run eager under the torch.compile label."""
    cfg = getattr(torch, "_dynamo", None) and torch._dynamo.config
    if cfg is None:
        return
    for name, value in (("fail_on_recompile_limit_hit", True), ("suppress_errors", False)):
        if hasattr(cfg, name):
            setattr(cfg, name, value)


# ------------------------------------------------------------------------------------------------------
# standalone stage scripts
# ------------------------------------------------------------------------------------------------------
def stage_main(op: str, run: Callable[[Context], list[dict]], doc: str | None) -> int:
    """``python benchmarks/bench_<op>.py [--smoke] [--out DIR | --csv PATH]``: one stage on its own."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny shapes, no timing")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "results"), help="output folder")
    ap.add_argument("--csv", help="write this stage's CSV here instead of <out>/<op>.csv")
    args = ap.parse_args()
    out = Path(args.csv).parent if args.csv else Path(args.out)
    ctx = Context.create(out, args.smoke, float(os.environ.get("SUITE_BUDGET_S", 520)))
    ctx.csv_override = Path(args.csv) if args.csv else None
    ctx.meta = env_info(ctx)
    if op != "e2e":
        ctx.copy_gbps = copy_ceiling(ctx)
        ctx.meta["copy_gbps"] = round(ctx.copy_gbps, 1)
        print(f"copy ceiling: {ctx.copy_gbps:.0f} GB/s", flush=True)
    t0 = time.monotonic()
    rows = run(ctx)
    print(f"wrote {ctx.csv_path(op)}")
    if not args.csv:  # a folder report.py and plots.py can read
        import peers
        ctx.meta.update(stages={op: {"csv": f"{op}.csv", "rows": len(rows),
                                     "seconds": round(time.monotonic() - t0, 1)}}, peers=peers.describe_all())
        write_meta(ctx)
    return summarize(op, rows)


def summarize(op: str, rows: list[dict]) -> int:
    """Print counts per status kind; the number of mismatches of tritonpatch providers (the exit code)."""
    kinds: dict[str, int] = {}
    for r in rows:
        status = r.get("status") or ("ok" if not str(r.get("note", "")).startswith(("error", "skipped"))
                                     else str(r["note"]))
        kind = str(status).split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    bad = [r for r in rows if str(r.get("provider", "")).startswith("tritonpatch")
           and str(r.get("status", "")).startswith(("mismatch", "error"))]
    print(f"{op}: {len(rows)} rows, " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())), flush=True)
    for r in bad:
        print(f"  TRITONPATCH {r['status']}: {r['case']} {r['shape']} {r['dtype']} {r['pass']}", flush=True)
    return 1 if bad else 0
