"""The benchmark suite in one command: op stages (LayerNorm, softmax, Linear+ReLU) against torch eager,
torch.compile, Liger-Kernel and triformer, then the end-to-end stage.

    bash benchmarks/run_suite.sh                        # on a GPU: installs the peer wheels, runs this
    python benchmarks/run_suite.py [--stages "layer_norm softmax linear_relu e2e"] [--out DIR] [--smoke]

Writes into --out (default $OUT, else benchmarks/results/): meta.json (device, versions, date, copy
ceiling, peers, seconds per stage) and one CSV per stage (layer_norm.csv, softmax.csv, linear_relu.csv,
e2e.csv), each rewritten after every case; run_suite.sh adds suite.log. Then, on any machine:
``python benchmarks/plots.py DIR...`` (PNGs) and ``python benchmarks/report.py DIR...`` (BENCHMARKS.md
and README.md tables). A stage is skipped row by row once ``--budget-s`` (default $SUITE_BUDGET_S,
else 520) seconds have passed, so a device call's time limit never loses what was measured.
Exit status: 1 if a tritonpatch provider had a mismatch or an error, else 0.

Every stage together takes longer than one 10-minute device call (estimate: layer_norm and
linear_relu ~3 min each, softmax ~4 min, e2e ~1.5 min; each case logs its seconds): run it as two
calls, ``STAGES="layer_norm linear_relu"`` then ``STAGES="softmax e2e"``, each into its own folder,
and give both folders to plots.py and report.py.
"""
from __future__ import annotations

import harness  # noqa: I001 (first: sets TRITON_INTERPRET for --smoke before triton is imported)

import argparse
import importlib
import os
import sys
import time
import traceback

import peers

STAGES = {"layer_norm": "bench_layer_norm", "softmax": "bench_softmax", "linear_relu": "bench_linear_relu",
          "e2e": "bench_e2e"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default=os.environ.get("STAGES") or " ".join(STAGES),
                    help="space-separated, from: " + " ".join(STAGES))
    ap.add_argument("--out", default=os.environ.get("OUT") or str(harness.HERE / "results"))
    ap.add_argument("--smoke", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny shapes, no real timing")
    ap.add_argument("--budget-s", type=float, default=float(os.environ.get("SUITE_BUDGET_S", 520)))
    args = ap.parse_args()
    stages = args.stages.replace(",", " ").split()
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; known: {list(STAGES)}")

    start = time.monotonic()
    ctx = harness.Context.create(args.out, args.smoke, args.budget_s)
    ctx.meta = harness.env_info(ctx)
    ctx.meta.update(stages_requested=stages, budget_s=args.budget_s, stages={},
                    peers_dir=str(peers.SITE))
    print(" | ".join(f"{k} {ctx.meta[k]}" for k in ("device", "torch", "triton", "transformers", "date_utc")),
          flush=True)
    if any(s != "e2e" for s in stages):
        ctx.copy_gbps = harness.copy_ceiling(ctx)
        ctx.meta["copy_gbps"] = round(ctx.copy_gbps, 1)
        print(f"copy ceiling: {ctx.copy_gbps:.0f} GB/s (1 GiB device-to-device copy, read + write)", flush=True)
    harness.write_meta(ctx)

    status = 0
    for stage in stages:
        t0 = time.monotonic()
        print(f"\n== {stage} (t = {t0 - start:.0f} s)", flush=True)
        entry: dict = {"csv": f"{stage}.csv"}
        try:
            mod = importlib.import_module(STAGES[stage])
            rows = mod.run(ctx)
            status |= harness.summarize(stage, rows)
            entry["rows"] = len(rows)
        except Exception as e:  # noqa: BLE001 (one stage's crash must not lose the others)
            traceback.print_exc()
            entry["error"] = harness.short_error(e)
            status = 1
        entry["seconds"] = round(time.monotonic() - t0, 1)
        ctx.meta["stages"][stage] = entry
        ctx.meta["peers"] = peers.describe_all()
        ctx.meta["elapsed_s"] = round(time.monotonic() - start, 1)
        harness.write_meta(ctx)
        print(f"== {stage} done in {entry['seconds']:.0f} s", flush=True)
    print(f"\nsuite done in {time.monotonic() - start:.0f} s; results in {ctx.out_dir}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
