"""Chart of ``bench_scan.py`` results: wall time and peak RSS vs tree size.

Needs matplotlib (a benchmark-only dependency, not one of du-exporter's);
uses the Agg backend, so no display is needed. ``bench_scan.py --chart
OUT.png`` also writes the numbers to ``OUT.json``; redraw from them with
``python benchmarks/scan_chart.py OUT.json OUT.png``.
"""

from __future__ import annotations

import json
import sys

from pathlib import Path

import matplotlib as mpl


mpl.use("Agg")

import matplotlib.pyplot as plt

from matplotlib.ticker import FuncFormatter


#: label -> [(tree entries, wall seconds, peak RSS MiB)]
Series = dict[str, list[tuple[int, float, float]]]

_STYLE = {
    "du -sB1": {"color": "black", "marker": "s", "linestyle": "-"},
    "gdu -n -p": {"color": "grey", "marker": "D", "linestyle": ":"},
}
#: du-exporter lines: colour and line style by engine, marker by pool
#: size (the engines' memory lines coincide; dashes keep both visible).
_ENGINE_COLOURS = {"(c,": "tab:blue", "(python,": "tab:orange"}
_ENGINE_LINES = {"(c,": "-", "(python,": "--"}
_PROCS_MARKERS = {" 1 proc)": "o", " 2 procs)": "^", " 4 procs)": "v"}


def _style(label: str, i: int) -> dict[str, str]:
    if label in _STYLE:
        return _STYLE[label]
    colour = next(
        (c for k, c in _ENGINE_COLOURS.items() if k in label), f"C{i % 10}"
    )
    marker = next((m for k, m in _PROCS_MARKERS.items() if k in label), "P")
    line = next((ls for k, ls in _ENGINE_LINES.items() if k in label), "-")
    return {"color": colour, "marker": marker, "linestyle": line}


def _entries(x: float, _pos: int) -> str:
    if x >= 1_000_000:
        return f"{x / 1_000_000:g}M"
    if x >= 1_000:
        return f"{x / 1_000:g}k"
    return f"{x:g}"


def draw(path: Path, series: Series, title: str) -> None:
    """Two panels side by side: wall time (log) and peak RSS (linear)."""
    fig, (wall_ax, rss_ax) = plt.subplots(1, 2, figsize=(11, 5.2))
    sizes = sorted({n for points in series.values() for n, _, _ in points})
    for i, (label, unsorted) in enumerate(series.items()):
        points = sorted(unsorted)
        xs = [n for n, _, _ in points]
        style = _style(label, i)
        wall_ax.plot(xs, [w for _, w, _ in points], label=label, **style)
        rss_ax.plot(xs, [r for _, _, r in points], label=label, **style)
    for ax in (wall_ax, rss_ax):
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.xaxis.set_major_formatter(FuncFormatter(_entries))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda _x, _p: ""))
        ax.set_xlabel("tree entries")
        ax.grid(visible=True, which="major", alpha=0.3)
    wall_ax.set_yscale("log")
    wall_ax.set_ylabel("wall time, s (log scale)")
    wall_ax.set_title("Wall time (lower is better)")
    rss_ax.set_ylabel("peak RSS, MiB (sum over all processes)")
    rss_ax.set_title("Peak memory")
    top = max((r for p in series.values() for _, _, r in p), default=64)
    rss_ax.set_ylim(bottom=0, top=max(top, 64) * 1.15)
    rss_ax.axhline(64, color="red", linewidth=0.8, linestyle=":")
    rss_ax.annotate(
        "64 MiB target",
        xy=(0.02, 64),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        color="red",
        fontsize=8,
    )
    handles, labels = wall_ax.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(len(labels), 3),
        frameon=False,
    )
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(path: Path, series: Series, title: str) -> None:
    """The chart's numbers as JSON, to redraw it without rerunning."""
    data = {"title": title, "series": series}
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def load(path: Path) -> tuple[Series, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    series = {
        str(label): [(int(n), float(w), float(r)) for n, w, r in points]
        for label, points in data["series"].items()
    }
    return series, str(data["title"])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: scan_chart.py DATA.json OUT.png", file=sys.stderr)
        return 2
    series, title = load(Path(argv[0]))
    draw(Path(argv[1]), series, title)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
