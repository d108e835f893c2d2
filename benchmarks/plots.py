"""PNG plots of benchmark-suite results (matplotlib, Agg; runs anywhere, no GPU).

    python benchmarks/plots.py DIR [DIR ...] [--out PLOTS_DIR]     # default: <first DIR>/plots

One PNG per op (layer_norm.png, softmax.png, linear_relu.png): a grid of dtype (rows) x pass (columns),
each panel GB/s (TFLOP/s for Linear+ReLU) per case, sizes in the suite's order, one line per provider;
GB/s panels draw the run's copy ceiling as a dashed line. Only rows whose status is "ok" are drawn (a
"wrong" provider leaves a gap). Plus e2e.png: forward and train-step ms, torch vs patched, per model.
Several DIRs merge as in report.py (each stage from the last DIR that has it).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from report import DT, OP_TITLE, load, num  # noqa: E402 (benchmarks/ is on sys.path)

STYLE = {"torch": ("black", "o"), "torch.compile": ("tab:gray", "s"), "liger": ("tab:green", "^"),
         "triformer": ("tab:purple", "v"), "tritonpatch": ("tab:red", "D"), "tritonpatch-cublaslt": ("tab:red", "D"),
         "tritonpatch-triton": ("tab:orange", "P"), "F.linear (no ReLU)": ("tab:blue", "x")}


def groups(kinds: list[str]) -> list[list[int]]:
    """Indices of consecutive points of the same kind of case."""
    out: list[list[int]] = []
    for i, kind in enumerate(kinds):
        if out and kinds[out[-1][-1]] == kind:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def label(op: str, r: dict) -> str:
    lab = r["shape"] if op == "layer_norm" else f"{r['case']} {r['shape']}"
    if r["out_dtype"] != r["dtype"]:
        lab += f" ->{DT.get(r['out_dtype'], r['out_dtype'])}"
    return lab


def op_figure(op: str, rows: list[dict], path: Path) -> None:
    key, unit = ("tflops", "TFLOP/s") if op == "linear_relu" else ("gbps", "GB/s")
    dtypes = [d for d in ("float32", "bfloat16", "float16") if any(r["dtype"] == d for r in rows)]
    passes = [p for p in ("fwd", "fwd+bwd") if any(r["pass"] == p for r in rows)]
    providers: list[str] = []
    for r in rows:
        if r["provider"] not in providers and any(x["provider"] == r["provider"] and x["status"] == "ok" for x in rows):
            providers.append(r["provider"])
    fig, axes = plt.subplots(len(dtypes), len(passes), figsize=(7.5 * len(passes), 3.6 * len(dtypes)),
                             squeeze=False)
    for i, dt in enumerate(dtypes):
        for j, pass_ in enumerate(passes):
            ax = axes[i][j]
            sel = [r for r in rows if r["dtype"] == dt and r["pass"] == pass_]
            labels: list[str] = []
            kinds: list[str] = []
            for r in sel:
                if label(op, r) not in labels:
                    labels.append(label(op, r))
                    kinds.append(r["case"])
            for p in providers:
                ys = [math.nan] * len(labels)
                for r in sel:
                    if r["provider"] == p and r["status"] == "ok":
                        ys[labels.index(label(op, r))] = num(r[key])
                if all(math.isnan(y) for y in ys):
                    continue
                color, marker = STYLE.get(p, (None, "."))
                for g, idx in enumerate(groups(kinds)):  # one line per kind of case, not joined across kinds
                    ax.plot(idx, [ys[i] for i in idx], marker=marker, color=color, label=p if g == 0 else None,
                            linestyle=":" if p.startswith("F.linear") else "-", linewidth=1.2, markersize=4)
            ceiling = max((num(r.get("copy_gbps")) for r in sel), default=math.nan)
            if key == "gbps" and math.isfinite(ceiling) and ceiling > 0:
                ax.axhline(ceiling, color="k", linestyle="--", linewidth=0.8, label=f"copy {ceiling:.0f} GB/s")
            ax.set_title(f"{OP_TITLE[op]} {DT.get(dt, dt)} {pass_}", fontsize=10)
            ax.set_ylabel(unit)
            ax.set_ylim(bottom=0)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
            ax.grid(alpha=0.3)
    legend: dict[str, object] = {}  # one legend for the figure: a provider may be missing from any panel
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name.split(" ")[0] if name.startswith("copy") else name, handle)
    fig.legend(list(legend.values()), [("copy ceiling" if k == "copy" else k) for k in legend],
               loc="upper center", ncol=min(8, len(legend)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def e2e_figure(rows: list[dict], path: Path) -> None:
    metrics = ["forward ms", "train step ms"]
    configs: list[tuple[str, str]] = []
    for r in rows:
        if r["metric"] in metrics and (r["model"], r["attn"]) not in configs:
            configs.append((r["model"], r["attn"]))
    if not configs:
        return
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        xs = range(len(configs))
        for k, (who, color) in enumerate((("torch", "black"), ("patched", "tab:red"))):
            vals = [num(next((r[who] for r in rows if (r["model"], r["attn"]) == c and r["metric"] == metric), ""))
                    for c in configs]
            ax.bar([x + (k - 0.5) * 0.38 for x in xs], vals, width=0.38, color=color, label=who)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{m}\n{a}" for m, a in configs], fontsize=8)
        ax.set_title(f"end to end: {metric}", fontsize=10)
        ax.set_ylabel("ms")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="folder for the PNGs (default: <first DIR>/plots)")
    args = ap.parse_args()
    _, rows, _ = load(args.dirs)
    if not rows:
        print("no results found", file=sys.stderr)
        return 1
    out = args.out or args.dirs[0] / "plots"
    out.mkdir(parents=True, exist_ok=True)
    for op in ("layer_norm", "softmax", "linear_relu"):
        if op in rows:
            op_figure(op, rows[op], out / f"{op}.png")
    if "e2e" in rows:
        e2e_figure(rows["e2e"], out / "e2e.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
