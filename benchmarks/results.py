"""Figures out of samples (percentiles), the JSON every benchmark saves, and plain-text tables."""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = ROOT / ".bench"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation, as numpy's default; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """count, min, mean, p50, p95, p99, max of `values` times `scale` (e.g. 1000 for s -> ms)."""

    def fmt(value: float | None) -> float | None:
        return None if value is None else round(value * scale, digits)

    return {
        "count": len(values),
        "min": fmt(min(values)) if values else None,
        "mean": fmt(sum(values) / len(values)) if values else None,
        "p50": fmt(percentile(values, 50)),
        "p95": fmt(percentile(values, 95)),
        "p99": fmt(percentile(values, 99)),
        "max": fmt(max(values)) if values else None,
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if not commit:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """Where the figures came from: machine, load, commit. Figures are only comparable alike."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "commit": git_commit(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save_json(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Write `<out_dir>/<name>-<timestamp>.json` (default out_dir: .bench/); return its path."""
    directory = out_dir or DEFAULT_OUT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = directory / f"{name}-{stamp}.json"
    suffix = 1
    while path.exists():
        suffix += 1
        path = directory / f"{name}-{stamp}-{suffix}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"saved {path}", flush=True)
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table; None prints as '-'."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text_rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in text_rows]
    return "\n".join(lines)
