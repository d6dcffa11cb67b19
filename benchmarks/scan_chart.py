"""Chart of ``bench_scan.py`` results: wall time and peak RSS vs tree size.

Needs matplotlib (a benchmark-only dependency, not one of du-exporter's);
uses the Agg backend, so no display is needed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl


mpl.use("Agg")

import matplotlib.pyplot as plt

from matplotlib.ticker import FuncFormatter


#: label -> [(tree entries, wall seconds, peak RSS MiB)]
Series = dict[str, list[tuple[int, float, float]]]

_STYLE = {
    "du -sB1": {"color": "black", "marker": "s", "linestyle": "--"},
    "gdu -n -p": {"color": "grey", "marker": "D", "linestyle": ":"},
}
#: du-exporter lines: colour by engine, marker by pool size.
_ENGINE_COLOURS = {"(c,": "tab:blue", "(python,": "tab:orange"}
_PROCS_MARKERS = {" 1 proc)": "o", " 2 procs)": "^", " 4 procs)": "v"}


def _style(label: str, i: int) -> dict[str, str]:
    if label in _STYLE:
        return _STYLE[label]
    colour = next(
        (c for k, c in _ENGINE_COLOURS.items() if k in label), f"C{i % 10}"
    )
    marker = next((m for k, m in _PROCS_MARKERS.items() if k in label), "P")
    return {"color": colour, "marker": marker, "linestyle": "-"}


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
    rss_ax.set_ylim(bottom=0)
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
