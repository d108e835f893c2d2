"""Markdown tables from benchmark-suite results, written into BENCHMARKS.md and README.md.

    python benchmarks/report.py DIR [DIR ...]          # DIR: a run's output (meta.json + <stage>.csv)
    python benchmarks/report.py DIR ... --print        # print the markdown, change no file

Several DIRs merge (a suite split over two device calls by STAGES): each stage is taken from the last
DIR that has its CSV. BENCHMARKS.md gets the full tables between ``<!-- suite:start -->`` and
``<!-- suite:end -->``; README.md a short excerpt between ``<!-- suite-excerpt:start -->`` and
``<!-- suite-excerpt:end -->``; and, when a DIR holds ``bench_gpu_time.csv``, BENCHMARKS.md the GPU-time
table between ``<!-- gpu-time:start -->`` and ``<!-- gpu-time:end -->``. Text outside the markers is left alone. Everything written comes from
the CSVs and meta.json: a run's numbers, device, versions, date and copy ceiling.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from results_io import read_csv

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("layer_norm", "softmax", "linear_relu", "e2e")
MARKERS = {"BENCHMARKS.md": ("<!-- suite:start -->", "<!-- suite:end -->"),
           "gpu-time": ("<!-- gpu-time:start -->", "<!-- gpu-time:end -->"),
           "README.md": ("<!-- suite-excerpt:start -->", "<!-- suite-excerpt:end -->")}
OP_TITLE = {"layer_norm": "LayerNorm", "softmax": "Softmax", "linear_relu": "Linear+ReLU"}
DT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
PASS_TITLE = {"fwd": "forward", "fwd+bwd": "forward + backward"}


# ------------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------------
def load(dirs: list[Path]) -> tuple[list[dict], dict[str, list[dict]], dict[str, Path]]:
    """(meta of each DIR with a suite stage's CSV, rows per stage, DIR each stage came from). A DIR with
    only bench_gpu_time.csv is read by :func:`gpu_time_section` alone."""
    metas, rows, source = [], {}, {}
    for d in dirs:
        found = {stage: read_csv(d / f"{stage}.csv") for stage in STAGES}
        found = {stage: r for stage, r in found.items() if r}
        if not found:
            continue
        meta_path = d / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        meta["_dir"] = d
        metas.append(meta)
        for stage, r in found.items():
            rows[stage], source[stage] = r, d
    return metas, rows, source


def num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


# ------------------------------------------------------------------------------------------------------
# op tables
# ------------------------------------------------------------------------------------------------------
def status_word(status: str) -> str:
    kind = status.split(":")[0]
    return {"mismatch": "wrong", "error": "error", "unsupported": "—", "unavailable": "n/a",
            "skipped": "skip"}.get(kind, kind)


def providers_of(rows: list[dict]) -> list[str]:
    """Providers in CSV order, without those that could not run a single case (listed under Flags)."""
    order: list[str] = []
    for r in rows:
        if r["provider"] not in order:
            order.append(r["provider"])
    return [p for p in order if any(r["provider"] == p and r["status"].split(":")[0] in ("ok", "mismatch", "error",
                                                                                          "skipped") for r in rows)]


def metric(op: str) -> tuple[str, str]:
    return ("tflops", "TFLOP/s") if op == "linear_relu" else ("gbps", "GB/s")


def op_tables(op: str, rows: list[dict]) -> list[str]:
    key, unit = metric(op)
    provs = providers_of(rows)
    out = []
    for pass_ in ("fwd", "fwd+bwd"):
        sel = [r for r in rows if r["pass"] == pass_]
        if not sel:
            continue
        cases: dict[tuple, dict[str, dict]] = {}
        for r in sel:
            cases.setdefault((r["dtype"], r["out_dtype"], r["case"], r["shape"]), {})[r["provider"]] = r
        out.append(f"\n### {OP_TITLE[op]}, {PASS_TITLE[pass_]}: {unit}, and speed vs torch eager\n")
        out.append("| dtype | case | shape | " + " | ".join(
            "torch eager (ms)" if p == "torch" else p for p in provs) + " |")
        out.append("|---|---|---|" + "---|" * len(provs))
        for (dt, odt, case, shape), by in cases.items():
            dts = DT.get(dt, dt) + (f" -> {DT.get(odt, odt)}" if odt != dt else "")
            best = max((num(r[key]) for r in by.values() if r["status"] == "ok" and r["provider"] != "F.linear (no ReLU)"),
                       default=float("nan"))
            cells = []
            for p in provs:
                r = by.get(p)
                if r is None:
                    cells.append("")
                elif r["status"] != "ok":
                    cells.append(status_word(r["status"]))
                else:
                    v = num(r[key])
                    txt = f"{v:.0f}" if key == "gbps" else f"{v:.1f}"
                    if num(r[key]) == best:
                        txt = f"**{txt}**"
                    if p == "torch":
                        txt += f" ({num(r['ms']):.4f})"
                    else:
                        txt += f" · {num(r['vs_eager']):.2f}x"
                    if r.get("timing", "").startswith("1 call"):
                        txt += " (1 call)"
                    cells.append(txt)
            out.append(f"| {dts} | {case} | {shape} | " + " | ".join(cells) + " |")
    return out


def flags(rows_by_stage: dict[str, list[dict]]) -> list[str]:
    """Every non-ok status, grouped by (stage, provider, status) with a count."""
    groups: dict[tuple, list[str]] = {}
    for stage, rows in rows_by_stage.items():
        if stage == "e2e":
            for r in rows:
                if str(r.get("note", "")).startswith(("error", "skipped")):
                    groups.setdefault((stage, f"{r['model']} {r['attn']}", r["note"]), []).append("")
            continue
        for r in rows:
            what = f"{DT.get(r['dtype'], r['dtype'])} {r['case']} {r['shape']} {r['pass']}"
            if r["status"] != "ok":
                groups.setdefault((stage, r["provider"], r["status"]), []).append(what)
            elif r.get("bitwise_repeat") == "False":
                groups.setdefault((stage, r["provider"], "timed, but two identical calls gave different bits"),
                                  []).append(what)
    merged: dict[tuple, list[tuple[str, str]]] = {}
    for (stage, prov, status), whats in groups.items():  # one line per kind of mismatch, not per number
        key = (stage, prov, re.sub(r"rel err \S+ > bar \S+", "rel err above its bar", status))
        merged.setdefault(key, []).extend((w, status) for w in whats)
    out = []
    for (stage, prov, status), items in merged.items():
        n = len(items)
        what, original = items[0]
        example = f" (e.g. {what}" + (f": {original.split(': ', 1)[1]}" if original != status else "") + ")" \
            if what else ""
        out.append(f"- {OP_TITLE.get(stage, stage)} · {prov}: {status} — {n} row{'s' if n > 1 else ''}{example}")
    return out


# ------------------------------------------------------------------------------------------------------
# end to end
# ------------------------------------------------------------------------------------------------------
def e2e_table(rows: list[dict]) -> list[str]:
    by: dict[tuple, dict[str, dict]] = {}
    extra = []
    for r in rows:
        if r["metric"].startswith(("patch+unpatch", "CUDA bytes")):
            extra.append(r)
        elif r["metric"] != "all":
            by.setdefault((r["model"], r["attn"], r["dtype"], r["batch"]), {})[r["metric"]] = r
    out = ["\n### End to end: models built from configs, unpatched vs patched\n",
           "| model | attention | dtype, batch | forward ms torch / patched | forward x | train step ms torch / patched "
           "| train step x | train step peak MiB torch / patched |",
           "|---|---|---|---|---|---|---|---|"]
    for (model, attn, dt, batch), m in by.items():
        def pair(name: str, digits: int = 2) -> tuple[str, str]:
            r = m.get(name)
            if not r:
                return "", ""
            ratio = f"{num(r['vs_torch']):.2f}" if r.get("vs_torch") else ""
            return f"{num(r['torch']):.{digits}f} / {num(r['patched']):.{digits}f}", ratio
        f, fx = pair("forward ms")
        s, sx = pair("train step ms")
        pk, _ = pair("train step peak MiB", 0)
        out.append(f"| {model} | {attn} | {DT.get(dt, dt)}, {batch} | {f} | {fx} | {s} | {sx} | {pk} |")
    reports = {(r["model"], r["attn"], r["batch"]): r["note"] for r in rows
               if r["metric"] == "forward ms" and r.get("note")}
    if reports:
        out.append("")
        out += [f"- {model}, {attn}, {batch}: {note}" for (model, attn, batch), note in reports.items()]
    if extra:
        out.append("")
        out += [f"- {r['model']} ({r['attn']}): {r['metric']}: {r['patched']}" + (f" ({r['note']})" if r.get("note") else "")
                for r in extra]
    return out


# ------------------------------------------------------------------------------------------------------
# documents
# ------------------------------------------------------------------------------------------------------
def header(metas: list[dict], source: dict[str, Path]) -> list[str]:
    m = next((x for x in reversed(metas) if x.get("device")), {})
    out = []
    smoke = any(x.get("smoke") for x in metas)
    if smoke:
        out.append("**SMOKE RUN (CPU, Triton interpreter): these numbers mean nothing.**\n")
    peers = {}
    for x in metas:
        peers.update(x.get("peers", {}))
    vers = ", ".join(f"{k} {m[k]}" for k in ("torch", "triton", "transformers", "python") if m.get(k))
    driver = f" (driver {m['driver']})" if m.get("driver") else ""
    out.append(f"**{m.get('device', '?')}**{driver}, {vers}; run {', '.join(sorted({x.get('date_utc', '?') for x in metas}))}.")
    ceilings = [f"**{x['copy_gbps']:.0f} GB/s** ({', '.join(s for s in x.get('stages', {}) if s != 'e2e')} run)"
                for x in metas if isinstance(x.get("copy_gbps"), (int, float))]
    if ceilings:
        out.append("Copy ceiling measured in the same run (1 GiB device-to-device copy, bytes read + written): "
                   + "; ".join(ceilings) + ".")
    if peers:
        out.append("Peers: " + "; ".join(f"{k} {v}" for k, v in peers.items()) + ".")
    db = m.get("do_bench", {})
    out.append(
        f"Method: medians of `triton.testing.do_bench` (warmup {db.get('warmup_ms', '?'):g} ms, rep "
        f"{db.get('rep_ms', '?'):g} ms) over rotating input sets of together at least 2x L2 "
        f"({m.get('l2_mib', '?')} MiB), so inputs come from HBM; each provider is first checked against a float64 "
        f"reference (output and every gradient within 2x torch eager's own error plus a per-dtype floor: bf16 2^-8, fp16 2^-11, fp32 1e-5; "
        f"\"wrong\" rows are not timed); ops called directly with `TRITONPATCH_SIZE_POLICY=0`; "
        f"`allow_tf32` {'on' if m.get('allow_tf32_matmul') else 'off'} (fp32 GEMMs exact). "
        f"GB/s counts the bytes that must move (see each `benchmarks/bench_*.py` docstring), TFLOP/s 2MNK "
        f"forward, 6MNK forward + backward. Cells: GB/s (or TFLOP/s) · speed vs torch eager; eager's cell "
        f"gives its ms; best in **bold**; \"—\" cannot express the case, \"n/a\" not importable, "
        f"\"(1 call)\" timed once (over {db.get('slow_ms', 200):g} ms). Data: "
        + ", ".join(sorted({f"`{rel(p)}/`" for p in source.values()})) + ".")
    return out


def benchmarks_section(metas: list[dict], rows: dict[str, list[dict]], source: dict[str, Path]) -> str:
    out = ["<!-- Generated by benchmarks/report.py from the suite's CSVs: rerun it, do not edit by hand. -->",
           "## Suite results (`bash benchmarks/run_suite.sh`)", ""]
    out += header(metas, source)
    for op in ("layer_norm", "softmax", "linear_relu"):
        if op in rows:
            out += op_tables(op, rows[op])
    if "e2e" in rows:
        out += e2e_table(rows["e2e"])
    fl = flags(rows)
    if fl:
        out += ["\n### Rows without a timing (and non-deterministic ones), and why\n"] + fl
    return "\n".join(out)


def pick(rows: list[dict], **want) -> dict | None:
    for r in rows:
        if all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def excerpt(metas: list[dict], rows: dict[str, list[dict]]) -> str:
    m = next((x for x in reversed(metas) if x.get("device")), {})
    date = sorted({x.get("date_utc", "?")[:10] for x in metas})[-1]
    out = [f"Suite run on {m.get('device', '?')}, {date} (bf16, median ms; x = speed vs torch eager; "
           "full tables in BENCHMARKS.md):", "",
           "| op | shape | pass | torch eager | torch.compile | best peer | tritonpatch |", "|---|---|---|---|---|---|---|"]
    picks = [("layer_norm", "rows", "32768x768", "bfloat16", "bfloat16", "tritonpatch"),
             ("softmax", "attn->fp32", "128x512x512", "bfloat16", "float32", "tritonpatch"),
             ("linear_relu", "ffn", "8192x768->3072", "bfloat16", "bfloat16", "tritonpatch-cublaslt")]
    for op, case, shape, dt, odt, ours in picks:
        for pass_ in ("fwd", "fwd+bwd"):
            sel = [r for r in rows.get(op, []) if r["case"] == case and r["shape"] == shape and r["dtype"] == dt
                   and r["out_dtype"] == odt and r["pass"] == pass_]
            eager = pick(sel, provider="torch", status="ok")
            if not eager:
                continue

            def cell(r):
                return f"{num(r['ms']):.4f} ms ({num(r['vs_eager']):.2f}x)" if r and r["status"] == "ok" else \
                    (status_word(r["status"]) if r else "")
            peers = [r for r in sel if r["provider"] in ("liger", "triformer") and r["status"] == "ok"]
            best = min(peers, key=lambda r: num(r["ms"]), default=None)
            label = OP_TITLE[op] + (" (`dtype=float32`)" if case == "attn->fp32" else "")
            out.append(f"| {label} | {shape} | {PASS_TITLE[pass_]} | {num(eager['ms']):.4f} ms | "
                       f"{cell(pick(sel, provider='torch.compile'))} | "
                       f"{(best['provider'] + ' ' + cell(best)) if best else 'none ran'} | "
                       f"{cell(pick(sel, provider=ours))} |")
    for r in rows.get("e2e", []):
        if r["model"] == "opt-350m" and r["metric"] in ("forward ms", "train step ms"):
            attn, graph = r["attn"].split(", ", 1) if ", " in r["attn"] else (r["attn"], "")
            out.append(f"| OPT-350m-like, {attn} attention{', ' + graph if graph else ''} | batch {r['batch']} | "
                       f"{r['metric'][:-3].strip()} | "
                       f"{num(r['torch']):.2f} ms | | | {num(r['patched']):.2f} ms ({num(r['vs_torch']):.2f}x) |")
    return "\n".join(out)


def gpu_time_section(dirs: list[Path]) -> str | None:
    """The GPU-time table (benchmarks/bench_gpu_time.py's CSV, from the last DIR that has one), or None."""
    found = [d / "bench_gpu_time.csv" for d in dirs if (d / "bench_gpu_time.csv").exists()]
    if not found:
        return None
    rows = read_csv(found[-1])
    meta_path = found[-1].parent / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    out = ["<!-- Generated by benchmarks/report.py from bench_gpu_time.csv: rerun it, do not edit by hand. -->",
           f"`python benchmarks/bench_gpu_time.py` on {meta.get('device', 'the GPU')}, {meta.get('date_utc', '')} "
           f"(torch {meta.get('torch', '?')}, triton {meta.get('triton', '?')}); copy ceiling "
           f"{rows[0]['copy_gbs']} GB/s. Each provider's calls replayed from a CUDA graph over rotating inputs "
           "(> 2x L2): GPU time only, no host overhead. x = torch ms / tritonpatch ms.", "",
           "| op | shape | dtype | pass | torch eager ms | tritonpatch ms | x | tritonpatch rate | % of copy |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {OP_TITLE.get(r['op'], r['op'])} | {r['shape']} | {DT.get(r['dtype'], r['dtype'])} | "
                   f"{PASS_TITLE.get(r['pass'], r['pass'])} | {num(r['torch_ms']):.4f} | {num(r['tritonpatch_ms']):.4f} | "
                   f"{num(r['vs_torch']):.2f}x | {num(r['rate']):.0f} {r['unit']} | {r['pct_copy'] or ''} |")
    return "\n".join(out)


def replace_between(path: Path, body: str, markers: str | None = None) -> bool:
    start, end = MARKERS[markers or path.name]
    text = path.read_text()
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        print(f"{path}: markers {start} ... {end} not found; not changed", file=sys.stderr)
        return False
    new = text[:i + len(start)] + "\n" + body.strip() + "\n" + text[j:]
    if new != text:
        path.write_text(new)
        print(f"updated {rel(path)}")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--print", action="store_true", help="print the markdown instead of writing the files")
    ap.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args()
    metas, rows, source = load(args.dirs)
    if not rows:
        print("no results found in " + ", ".join(map(str, args.dirs)), file=sys.stderr)
        return 1
    full, short = benchmarks_section(metas, rows, source), excerpt(metas, rows)
    if args.print:
        print(full + "\n\n---- README excerpt ----\n" + short)
        return 0
    ok = replace_between(args.benchmarks, full) & replace_between(args.readme, short)
    gpu_time = gpu_time_section(args.dirs)
    if gpu_time is not None:
        ok &= replace_between(args.benchmarks, gpu_time, "gpu-time")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
