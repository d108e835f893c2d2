"""End-to-end stage of the benchmark suite: HF models built from configs, unpatched vs patched.

    python benchmarks/bench_e2e.py [--smoke] [--out DIR | --csv PATH]   (or: run_suite.sh)

An OPT-350m-like model (ReLU FFN, post-LayerNorm, 24 layers) and BERT-base with hidden_act="relu" (12
layers), each under eager attention (softmax routed to Triton) and SDPA (no softmax call), bf16,
batch 8 x 512 (then the OPT-350m-like model at 32 x 512): inference forward, and a training step
(forward + backward + AdamW step), median ms of CUDA-event-timed calls, unpatched and patched alternating
call by call (see ``interleaved``), and peak memory of each. The SDPA models are also
captured in CUDA graphs (attn "sdpa, CUDA graph": forward, and a training step with a capturable AdamW;
both sides captured, replays alternated), where the host's time per call drops out. Then the cost of
``patch()`` + ``unpatch()`` on the OPT-350m-like model (median of 10) and the CUDA memory allocated
while patched and after unpatching (both should be +0 bytes: patching copies no parameter).
The size policy is left as shipped (TRITONPATCH_SIZE_POLICY unset): this is what a user gets.

Rows (long format): model, attn, metric, torch, patched, vs_torch (torch ms / patched ms for times),
note (the patch report's first line). ``build`` and ``cuda_ms`` are also used by profile_*.py,
kinds_cost.py and find_syncs.py.
"""
from __future__ import annotations

import harness  # noqa: I001 (first: sets TRITON_INTERPRET for --smoke before triton is imported)

import logging
import statistics
import sys
import time

import torch

from harness import Context, Sink
from tritonpatch.ops import common

E2E_COLUMNS = ["op", "model", "attn", "dtype", "batch", "metric", "torch", "patched", "vs_torch", "note"]
CONFIGS = [("opt-350m", "eager"), ("opt-350m", "sdpa"), ("bert-base-relu", "eager"), ("bert-base-relu", "sdpa")]
#: A larger batch for the OPT-350m-like model (after the issue's 8 x 512 rows): 4x the tokens, where the
#: GPU rather than the host bounds the step, and the size policy sends the LayerNorms (32 MiB) to Triton.
LARGE = (32, 512, [("opt-350m", "eager"), ("opt-350m", "sdpa")])


def build(name: str, attn: str, layers: int | None = None, small: bool = False) -> torch.nn.Module:
    """An HF model from a config (no download): "opt-350m" (OPT-350m-like) or "bert-base-relu".
    ``small``: a few-MB version of the same architecture (smoke runs)."""
    from transformers import BertConfig, BertForMaskedLM, OPTConfig, OPTForCausalLM
    if name == "opt-350m":
        dims = (dict(hidden_size=64, ffn_dim=256, num_attention_heads=4, word_embed_proj_dim=32, vocab_size=1000)
                if small else dict(hidden_size=1024, ffn_dim=4096, num_attention_heads=16, word_embed_proj_dim=512))
        cfg = OPTConfig(num_hidden_layers=layers or (2 if small else 24), activation_function="relu",
                        do_layer_norm_before=False, dropout=0.0, attention_dropout=0.0, **dims)
        return OPTForCausalLM._from_config(cfg, attn_implementation=attn)
    dims = (dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, vocab_size=1000) if small else {})
    cfg = BertConfig(hidden_act="relu", num_hidden_layers=layers or (2 if small else 12), hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, **dims)
    return BertForMaskedLM._from_config(cfg, attn_implementation=attn)


def cuda_ms(fn, iters: int) -> float:
    """Median ms of ``iters`` calls, each timed by CUDA events (synchronising after each)."""
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def wall_ms(fn, iters: int) -> float:
    """Median wall-clock ms of ``iters`` calls (CPU runs)."""
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


#: Rounds of alternating CUDA graph replays (:func:`graphed`).
ROUNDS = 7
#: Models captured in CUDA graphs too: the SDPA ones (transformers' eager attention copies a CPU scalar
#: into its mask during the forward, which a capture refuses, patched or not).
GRAPHED_ATTN = "sdpa"


def interleaved(ctx: Context, model: torch.nn.Module, ids: torch.Tensor, iters: int) -> tuple[dict, dict]:
    """(torch, patched) results: ``fwd_ms`` / ``step_ms`` (medians), ``peak`` MiB per phase (max over
    calls) and ``report`` (the patch report's first line).

    The two sides alternate call by call, in the order A B B A A B ..., with the patch applied and
    removed between them (one AdamW for both, built before any patch): a host whose speed drifts (torch's
    own forward of the same model has moved 2x between runs and 1.7x between rounds of one run on the
    lent H200's host) then moves both sides alike. After each toggle one forward and one training step
    run untimed (a patch fills per-call-site caches on its first calls; a user patches once), then one of
    each is timed (CUDA events, synchronised).
    """
    import tritonpatch
    cuda = ctx.device == "cuda"
    timer = cuda_ms if cuda else wall_ms
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True)

    def fwd() -> None:
        with torch.no_grad():
            model(input_ids=ids)

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sides = {patched: {"fwd_ms": [], "step_ms": [], "peak": {}, "report": ""} for patched in (False, True)}
    warm = 1 if ctx.smoke else 3
    for i in range(-1, iters):  # -1: the warm-up pass of each side (compiles, autotunes, allocator pools)
        for patched in ((False, True) if i % 2 else (True, False)):
            side = sides[patched]
            handle = tritonpatch.patch(model) if patched else None
            try:
                for _ in range(warm if i < 0 else 1):
                    fwd()
                    step()
                if i < 0:
                    continue
                for key, phase, fn in (("fwd_ms", "fwd", fwd), ("step_ms", "step", step)):
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    side[key].append(timer(fn, 1))
                    if cuda:
                        side["peak"][phase] = max(side["peak"].get(phase, 0.0),
                                                  torch.cuda.max_memory_allocated() / 2**20)
                if handle:
                    side["report"] = str(handle).splitlines()[0]
            finally:
                if handle:
                    handle.unpatch()
    return tuple({**side, "fwd_ms": statistics.median(side["fwd_ms"]),  # type: ignore[return-value]
                  "step_ms": statistics.median(side["step_ms"])} for side in (sides[False], sides[True]))


def graphs_of(model: torch.nn.Module, ids: torch.Tensor, opt: torch.optim.Optimizer, patched: bool
              ) -> tuple[dict[str, "torch.cuda.CUDAGraph"], str]:
    """CUDA graphs of one inference forward and one training step (set grads to None, forward, backward,
    ``opt.step()``: ``opt`` is capturable), each warmed up twice on a side stream and then captured, with
    the model patched (``patched``) or not; and the patch report's first line (its counts cover the
    warm-up, under the size policy, and the capture, where every supported call takes Triton)."""
    import tritonpatch
    from timing import graph_of, warm_up

    def fwd() -> None:
        with torch.no_grad():
            model(input_ids=ids)

    def step() -> None:
        opt.zero_grad(set_to_none=True)  # backward then allocates the grads in the graph's own pool
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    handle = tritonpatch.patch(model) if patched else None
    graphs = {}
    try:
        for key, fn, train in (("fwd_ms", fwd, False), ("step_ms", step, True)):
            model.train(train)
            warm_up(fn, 2)
            graphs[key] = graph_of(fn)
        report = str(handle).splitlines()[0] if handle else ""
    finally:
        if handle:
            handle.unpatch()
        model.train()
    return graphs, report


def graphed(model: torch.nn.Module, ids: torch.Tensor, replays: int) -> tuple[dict, dict]:
    """(torch, patched) ms per replay of :func:`graphs_of`'s graphs: all four captured first (one
    capturable AdamW shared, as a training loop would), then replayed in alternating rounds (torch
    forward, patched forward, torch step, patched step), each the median over ``ROUNDS`` rounds of
    ``replays`` replays. A replay costs the host nothing: this is the GPU's time for the model."""
    from timing import replay_ms
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True, capturable=True)
    sides = {patched: graphs_of(model, ids, opt, patched) for patched in (False, True)}
    times: dict[tuple[bool, str], list[float]] = {}
    for _ in range(ROUNDS):
        for key in ("fwd_ms", "step_ms"):
            for patched in (False, True):
                times.setdefault((patched, key), []).append(replay_ms(sides[patched][0][key], replays))
    out = tuple({key: statistics.median(times[(patched, key)]) for key in ("fwd_ms", "step_ms")}
                | {"peak": {}, "report": sides[patched][1]} for patched in (False, True))
    return out  # type: ignore[return-value]


def patch_cost(ctx: Context, dtype: torch.dtype) -> list[dict]:
    """patch()+unpatch() time on the OPT-350m-like model, and CUDA memory allocated by patching."""
    import tritonpatch
    model = build("opt-350m", "eager", small=ctx.smoke).to(ctx.device, dtype)
    ctx.sync()
    cuda = ctx.device == "cuda"
    mem0 = torch.cuda.memory_allocated() if cuda else 0
    times, during = [], []
    for _ in range(10):
        t0 = time.perf_counter()
        p = tritonpatch.patch(model)
        during.append((torch.cuda.memory_allocated() if cuda else 0) - mem0)
        p.unpatch()
        times.append((time.perf_counter() - t0) * 1e3)
    after = (torch.cuda.memory_allocated() if cuda else 0) - mem0
    del model
    ctx.free()
    base = dict(op="e2e", model="opt-350m", attn="eager", dtype=harness.dtype_name(dtype), batch="")
    mem_note = "" if cuda else "CPU run: no CUDA memory to count"
    return [dict(base, metric="patch+unpatch ms (median of 10)", patched=f"{statistics.median(times):.2f}"),
            dict(base, metric="CUDA bytes allocated while patched (max over 10)", patched=str(max(during)),
                 note=mem_note),
            dict(base, metric="CUDA bytes allocated after unpatch", patched=str(after), note=mem_note)]


@common.environment(TRITONPATCH_SIZE_POLICY=None)  # the size policy as shipped: its variable unset for the stage
def run(ctx: Context) -> list[dict]:
    logging.getLogger("tritonpatch").setLevel(logging.ERROR)  # per-layer fallback notes: in the report line
    sink = Sink(ctx, ctx.csv_path("e2e"), E2E_COLUMNS,
                show=lambda r: "  e2e  " + " | ".join(f"{c} {r[c]}" for c in E2E_COLUMNS[1:] if r[c] != ""))
    dtype = torch.float32 if ctx.smoke else torch.bfloat16
    runs = [(2, 16, CONFIGS)] if ctx.smoke else [(8, 512, CONFIGS), LARGE]
    iters = 2 if ctx.smoke else 20
    try:
        torch.manual_seed(0)
        for batch, seq, name, attn in ((b, s, n, a) for b, s, configs in runs for n, a in configs):
            base = dict(op="e2e", model=name, attn=attn, dtype=harness.dtype_name(dtype), batch=f"{batch}x{seq}")
            if ctx.over_budget():
                sink.add(dict(base, metric="all", note="skipped: time budget (SUITE_BUDGET_S) spent"))
                continue
            modes = [("", interleaved)]
            if attn == GRAPHED_ATTN and ctx.device == "cuda":
                modes.append((", CUDA graph", lambda ctx, model, ids, iters: graphed(model, ids, max(2, iters // 4))))
            try:
                model = build(name, attn, small=ctx.smoke).to(ctx.device, dtype).train()
                ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=ctx.device)
            except Exception as e:  # noqa: BLE001
                sink.add(dict(base, metric="all", note=f"error: {harness.short_error(e)}"))
                ctx.free()
                continue
            for suffix, timed in modes:
                row = dict(base, attn=attn + suffix)
                try:
                    ref, pat = timed(ctx, model, ids, iters)
                except Exception as e:  # noqa: BLE001
                    sink.add(dict(row, metric="all", note=f"error: {harness.short_error(e)}"))
                    ctx.free()
                    continue
                for metric, key in (("forward ms", "fwd_ms"), ("train step ms", "step_ms")):
                    sink.add(dict(row, metric=metric, torch=f"{ref[key]:.3f}", patched=f"{pat[key]:.3f}",
                                  vs_torch=f"{ref[key] / pat[key]:.3f}", note=pat["report"]))
                for phase in ("fwd", "step"):
                    if phase in ref["peak"]:
                        sink.add(dict(row, metric=f"{'forward' if phase == 'fwd' else 'train step'} peak MiB",
                                      torch=f"{ref['peak'][phase]:.0f}", patched=f"{pat['peak'][phase]:.0f}"))
                ctx.free()
                sink.flush()
            del model, ids
            ctx.free()
        if not ctx.over_budget():
            for row in patch_cost(ctx, dtype):
                sink.add(row)
    finally:
        sink.flush()
    return sink.rows


if __name__ == "__main__":
    sys.exit(harness.stage_main("e2e", run, __doc__))
