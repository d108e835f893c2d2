"""End-to-end stage of the benchmark suite: HF models built from configs, unpatched vs patched.

    python benchmarks/bench_e2e.py [--smoke] [--out DIR | --csv PATH]   (or: run_suite.sh)

An OPT-350m-like model (ReLU FFN, post-LayerNorm, 24 layers) and BERT-base with hidden_act="relu" (12
layers), each under eager attention (softmax routed to Triton) and SDPA (no softmax call), bf16,
batch 8 x 512 (then the OPT-350m-like model at 32 x 512): inference forward, and a training step (forward + backward + AdamW step), median ms of
CUDA-event-timed calls after 3 warm-up rounds, and peak memory of each. Then the cost of
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


def measure(ctx: Context, model: torch.nn.Module, ids: torch.Tensor, patched: bool, iters: int) -> dict:
    import tritonpatch
    cuda = ctx.device == "cuda"
    timer = cuda_ms if cuda else wall_ms
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True)
    handle = tritonpatch.patch(model) if patched else None
    try:
        def fwd():
            with torch.no_grad():
                model(input_ids=ids)

        def step():
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(1 if ctx.smoke else 3):
            fwd()
            step()
        ctx.sync()
        peak = {}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        fwd_ms = timer(fwd, iters)
        if cuda:
            peak["fwd"] = torch.cuda.max_memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        step_ms = timer(step, iters)
        if cuda:
            peak["step"] = torch.cuda.max_memory_allocated() / 2**20
        report = str(handle).splitlines()[0] if handle else ""
    finally:
        if handle:
            handle.unpatch()
    return {"fwd_ms": fwd_ms, "step_ms": step_ms, "peak": peak, "report": report}


#: torch and patched are measured in alternating rounds (A B A B ...), each round's median kept, and the
#: median over rounds reported: a slow drift of the host (seen as +-30% between back-to-back blocks on
#: the H100 host) then hits both sides alike.
ROUNDS = 5


def interleaved(ctx: Context, model, ids, iters: int) -> tuple[dict, dict]:
    """(torch, patched) results of :func:`measure`, each the median over ``ROUNDS`` alternating rounds."""
    rounds = 1 if ctx.smoke else ROUNDS
    per = max(2, iters // rounds)
    got: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(rounds):
        for patched in (False, True):
            got[patched].append(measure(ctx, model, ids, patched, per))

    def merged(runs: list[dict]) -> dict:
        out = dict(runs[-1])
        for key in ("fwd_ms", "step_ms"):
            out[key] = statistics.median(r[key] for r in runs)
        out["peak"] = {k: max(r["peak"].get(k, 0.0) for r in runs) for k in runs[-1]["peak"]}
        return out
    return merged(got[False]), merged(got[True])


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
            try:
                model = build(name, attn, small=ctx.smoke).to(ctx.device, dtype).train()
                ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=ctx.device)
                ref, pat = interleaved(ctx, model, ids, iters)
            except Exception as e:  # noqa: BLE001
                sink.add(dict(base, metric="all", note=f"error: {harness.short_error(e)}"))
                ctx.free()
                continue
            for metric, key in (("forward ms", "fwd_ms"), ("train step ms", "step_ms")):
                sink.add(dict(base, metric=metric, torch=f"{ref[key]:.3f}", patched=f"{pat[key]:.3f}",
                              vs_torch=f"{ref[key] / pat[key]:.3f}", note=pat["report"]))
            for phase in ("fwd", "step"):
                if phase in ref["peak"]:
                    sink.add(dict(base, metric=f"{'forward' if phase == 'fwd' else 'train step'} peak MiB",
                                  torch=f"{ref['peak'][phase]:.0f}", patched=f"{pat['peak'][phase]:.0f}"))
            del model, ids
            ctx.free()
            sink.flush()
        if not ctx.over_budget():
            for row in patch_cost(ctx, dtype):
                sink.add(row)
    finally:
        sink.flush()
    return sink.rows


if __name__ == "__main__":
    sys.exit(harness.stage_main("e2e", run, __doc__))
