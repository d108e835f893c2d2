"""Shared by the benchmark scripts: write and read result rows (dicts with the same keys) as CSV."""
from __future__ import annotations

import csv
from pathlib import Path


def write_csv(rows: list[dict], path: str | Path, quiet: bool = False) -> None:
    """Write ``rows`` to ``path`` (header from the first row's keys), creating the folder; prints where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if not quiet:
        print(f"wrote {path}", flush=True)


def read_csv(path: str | Path) -> list[dict]:
    """Rows of a CSV written by :func:`write_csv`, as dicts of strings (empty list for an empty file)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
