"""Chart of ``bench_many.py --chart``: daemon memory vs exported directories.

Left: the highest summed RSS of the daemon and its workers against the
target (64 MiB + 0.5 KiB per exported directory), with the parent's and
the largest worker's own peaks.  Right: bytes per exported directory of
each part.  Needs matplotlib (benchmark-only).  Redraw from the numbers:
``python benchmarks/many_chart.py FILE.json FILE.png``.
"""

from __future__ import annotations

import json
import math
import sys

from pathlib import Path
from typing import Any

import matplotlib as mpl


mpl.use("Agg")

import matplotlib.pyplot as plt

from matplotlib.ticker import FuncFormatter, NullFormatter


MIB = 1024 * 1024


def _count(x: float, _pos: int) -> str:
    if x >= 1_000_000:
        return f"{x / 1_000_000:g}M"
    if x >= 1_000:
        return f"{x / 1_000:g}k"
    return f"{x:g}"


def draw(path: Path, data: dict[str, Any]) -> None:
    points = data["points"]
    base = data.get("baseline")
    xs = [p["exported"] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))

    lo, hi = min(xs) / 1.5, max(xs) * 1.5
    grid = [lo * (hi / lo) ** (i / 50) for i in range(51)]
    left.plot(grid, [(64 * MIB + 512 * x) / MIB for x in grid], color="tab:red",
              linestyle="--", label="target: 64 MiB + 0.5 KiB/dir")
    left.plot(xs, [p["peak_rss"] / MIB for p in points], color="black",
              marker="o", label="peak RSS, daemon + workers")
    left.plot(xs, [p["parent_hwm"] / MIB for p in points], color="tab:blue",
              marker="^", label="parent (VmHWM)")
    left.plot(xs, [p["worker_hwm"] / MIB for p in points], color="tab:green",
              marker="v", label="largest worker (VmHWM)")
    if base:
        left.axhline(base["peak_rss"] / MIB, color="grey", linestyle=":",
                     label="baseline (2 dirs)")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_yticks([16, 32, 64, 128, 256, 512])
    left.set_xlabel("exported directories")
    left.set_ylabel("MiB (RSS)")
    left.set_title("Daemon peak memory (first scan, rescans, 50 gzip scrapers)")
    left.xaxis.set_major_formatter(FuncFormatter(_count))
    left.xaxis.set_minor_formatter(NullFormatter())
    left.yaxis.set_major_formatter(FuncFormatter(lambda y, _p: f"{y:g}"))
    left.yaxis.set_minor_formatter(NullFormatter())
    left.legend(fontsize="small")
    left.grid(True, which="both", alpha=0.3)

    parts = [
        ("store (SQLite file, on disk)", "db_bytes", "tab:brown"),
        ("cached exposition (gzip, resident)", "gzip_bytes", "tab:purple"),
        ("render Python objects (tracemalloc peak)", "render_peak", "tab:orange"),
        ("parent RSS above baseline", "parent_growth", "tab:blue"),
    ]
    width = 0.8 / len(parts)
    for i, (label, key, colour) in enumerate(parts):
        vals = [p[key] / p["exported"] for p in points]
        pos = [j + (i - (len(parts) - 1) / 2) * width for j in range(len(xs))]
        right.bar(pos, [0 if math.isnan(v) else v for v in vals], width,
                  color=colour, label=label)
    right.axhline(512, color="tab:red", linestyle="--",
                  label="target slope: 512 B/dir")
    right.set_xticks(range(len(xs)), [f"{x:,}" for x in xs])
    right.set_xlabel("exported directories")
    right.set_ylabel("bytes per exported directory")
    right.set_title("Bytes per exported directory, by part")
    right.legend(fontsize="small")
    right.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: many_chart.py FILE.json FILE.png\n")
        return 2
    draw(Path(argv[1]), json.loads(Path(argv[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
