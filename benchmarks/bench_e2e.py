"""End-to-end: HF models built from configs, unpatched vs patched, on a GPU.

    python benchmarks/bench_e2e.py [--csv PATH] [--quick]

For an OPT-350m-like model (ReLU FFN, LayerNorm, 24 layers) and BERT-base with hidden_act="relu", each
under eager attention and SDPA, bf16, batch 8 x 512: inference forward and a training step
(forward + backward + AdamW), median ms of CUDA-event-timed runs, peak memory, and the cost of
patch()+unpatch() itself (and that it allocates no CUDA memory).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import tritonpatch
from results_io import write_csv  # noqa: E402 (benchmarks/ is on sys.path)


def build(name: str, attn: str, layers: int | None = None) -> torch.nn.Module:
    from transformers import BertConfig, BertForMaskedLM, OPTConfig, OPTForCausalLM
    if name == "opt-350m":
        cfg = OPTConfig(hidden_size=1024, ffn_dim=4096, num_hidden_layers=layers or 24, num_attention_heads=16,
                        word_embed_proj_dim=512, activation_function="relu", do_layer_norm_before=False,
                        dropout=0.0, attention_dropout=0.0)
        return OPTForCausalLM._from_config(cfg, attn_implementation=attn)
    cfg = BertConfig(hidden_act="relu", num_hidden_layers=layers or 12, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return BertForMaskedLM._from_config(cfg, attn_implementation=attn)


def cuda_ms(fn, iters: int) -> float:
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(model, ids, patched: bool, iters: int) -> dict:
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
        for _ in range(3):
            fwd()
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fwd_ms = cuda_ms(fwd, iters)
        fwd_peak = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        step_ms = cuda_ms(step, iters)
        step_peak = torch.cuda.max_memory_allocated() / 2**20
        report = str(handle) if handle else ""
    finally:
        if handle:
            handle.unpatch()
    del opt
    return {"fwd_ms": fwd_ms, "step_ms": step_ms, "fwd_peak_mib": fwd_peak, "step_peak_mib": step_peak,
            "report": report}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    iters = 5 if args.quick else 20
    rows = []
    torch.manual_seed(0)
    for name in ("opt-350m", "bert-base-relu"):
        for attn in ("eager", "sdpa"):
            model = build(name, attn).to("cuda", torch.bfloat16).train()
            vocab = model.config.vocab_size
            ids = torch.randint(0, vocab, (8, 512), device="cuda")
            base = measure(model, ids, False, iters)
            pat = measure(model, ids, True, iters)
            row = {"model": name, "attn": attn,
                   "fwd_ms_torch": base["fwd_ms"], "fwd_ms_patched": pat["fwd_ms"],
                   "fwd_speedup": base["fwd_ms"] / pat["fwd_ms"],
                   "step_ms_torch": base["step_ms"], "step_ms_patched": pat["step_ms"],
                   "step_speedup": base["step_ms"] / pat["step_ms"],
                   "step_peak_mib_torch": base["step_peak_mib"], "step_peak_mib_patched": pat["step_peak_mib"]}
            rows.append(row)
            print(pat["report"].splitlines()[0] if pat["report"] else "")
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            del model
            torch.cuda.empty_cache()
    # patch + unpatch cost on the 350M-parameter model, and zero parameter copies
    model = build("opt-350m", "eager").to("cuda", torch.bfloat16)
    torch.cuda.synchronize()
    mem0 = torch.cuda.memory_allocated()
    t = []
    for _ in range(10):
        t0 = time.perf_counter()
        p = tritonpatch.patch(model)
        mem1 = torch.cuda.memory_allocated()
        p.unpatch()
        t.append((time.perf_counter() - t0) * 1e3)
    print(f"patch+unpatch of OPT-350m-like: median {statistics.median(t):.2f} ms; "
          f"CUDA memory change while patched: {mem1 - mem0} bytes")
    print("\n| model | attention | fwd ms torch | fwd ms patched | fwd x | step ms torch | step ms patched | step x | peak MiB torch | peak MiB patched |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['attn']} | {r['fwd_ms_torch']:.2f} | {r['fwd_ms_patched']:.2f} | {r['fwd_speedup']:.2f} | "
              f"{r['step_ms_torch']:.2f} | {r['step_ms_patched']:.2f} | {r['step_speedup']:.2f} | "
              f"{r['step_peak_mib_torch']:.0f} | {r['step_peak_mib_patched']:.0f} |")
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
