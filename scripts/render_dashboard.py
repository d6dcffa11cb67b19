#!/usr/bin/env python3
"""Render the Grafana dashboard's data as a picture, from real services.

Grafana itself is not installed here, so this does what it would do with
``contrib/grafana/du-exporter.json``: it builds a small demo tree (two
roots, a few projects and users, some stale), starts the real exporter on
it (a scan every 1.2 s) and a real Prometheus scraping it every second on
loopback, changes the tree for about a minute (directories grow, shrink,
appear), then resolves the dashboard's variables and runs every panel's
PromQL through Prometheus' HTTP API (``query_range`` for time series and
stat panels, ``query`` for tables and bar gauges) and draws the results
with matplotlib in the dashboard's own grid, titles, units and legends.

    .venv/bin/python scripts/render_dashboard.py [--out docs/images/dashboard.png]

Needs ``prometheus`` on PATH (Debian: ``apt-get install prometheus``),
matplotlib (``pip install -e .[docs]``) and the package installed in the
running Python.  The exporter runs with ``--max-iops 250`` so that its
scans take a few hundred milliseconds and a scrape sometimes sees one
running.  Takes about 85 s; the demo tree (about 150 MiB in the temporary
directory) is removed afterwards.  Grafana's own look differs; the numbers
are what its queries return.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib as mpl

from matplotlib import font_manager, ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle


REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "contrib" / "grafana" / "du-exporter.json"
DEMO = Path(tempfile.gettempdir()) / "du-dash"
KIB = 1 << 10
MIB = 1 << 20
SCRAPE_SECONDS = 1
SCAN_MINUTES = 0.02  # a scan every 1.2 s
MAX_IOPS = 250


# --- the demo tree

def _when(year: int, month: int, day: int) -> float:
    return time.mktime((year, month, day, 10, 0, 0, 0, 0, -1))


#: (path below DEMO, size) at the start.  Two roots: projects and home.
FIRST: tuple[tuple[str, int], ...] = (
    *((f"projects/alpha/src/mod{i:02}.py", 6 * KIB + 700 * i) for i in range(40)),
    ("projects/alpha/data/run-base.bin", 16 * MIB),
    *((f"projects/beta/src/part{i:02}.c", 9 * KIB) for i in range(25)),
    ("projects/beta/data/set.bin", 14 * MIB),
    *((f"projects/gamma/cache/chunk{i:02}.bin", 768 * KIB) for i in range(16)),
    ("projects/legacy-2019/dump.tar", 11 * MIB),
    ("projects/legacy-2019/README", 3 * KIB),
    ("home/ana/photos.zip", 7 * MIB),
    ("home/ben/thesis.pdf", 5 * MIB),
    ("home/chen/notes.txt", 2 * MIB),
    ("home/dara/mail.mbox", 3 * MIB),
    ("home/old-intern/backup.tar", 4 * MIB),
)

#: Subtrees nobody touched for more than a year (the stale table).
AGES: tuple[tuple[str, float], ...] = (
    ("projects/legacy-2019", _when(2019, 11, 29)),
    ("home/old-intern", _when(2021, 8, 31)),
    ("home/ben", _when(2025, 3, 14)),
)


def changes(step: int, steps: int) -> list[tuple[str, int]]:
    """What happens to the tree at ``step`` of ``steps``: (path, size).

    A size of -1 deletes the file.  alpha and ana grow all along, beta
    gets one big import, gamma's cache is cleaned up file by file, the
    project delta appears half-way and grows, chen starts growing late.
    """
    out: list[tuple[str, int]] = [
        (f"projects/alpha/data/run-{step:03}.bin", MIB),
        (f"home/ana/camera/img-{step:03}.jpg", 256 * KIB),
    ]
    if step == round(steps * 0.35):
        out.append(("projects/beta/data/import.bin", 12 * MIB))
    first_clean = round(steps * 0.15)
    if first_clean <= step < first_clean + 16:
        out.append((f"projects/gamma/cache/chunk{step - first_clean:02}.bin", -1))
    start_delta = round(steps * 0.5)
    if step == start_delta:
        out += [(f"projects/delta/src/f{i}.rs", 5 * KIB) for i in range(12)]
        out.append(("projects/delta/data/seed.bin", 2 * MIB))
    elif step > start_delta:
        out.append((f"projects/delta/data/out-{step:03}.bin", 512 * KIB))
    if step >= round(steps * 0.6):
        out.append((f"home/chen/sim/out-{step:03}.dat", MIB))
    return out


#: Random (incompressible) bytes, written in blocks.
BLOCK = os.urandom(MIB)


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(BLOCK)
        f.write(BLOCK[: size % MIB])


def apply(base: Path, edits: Sequence[tuple[str, int]]) -> None:
    for rel, size in edits:
        if size < 0:
            (base / rel).unlink()
        else:
            write(base / rel, size)


def build_tree(base: Path) -> tuple[Path, Path]:
    apply(base, FIRST)
    for rel, when in AGES:
        top = base / rel
        for entry in [*sorted(top.rglob("*"), reverse=True), top]:
            os.utime(entry, (when, when))
    return base / "projects", base / "home"


# --- the real exporter and a real Prometheus

def _free_port(preferred: int) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            found: int = s.getsockname()[1]
            return found
    msg = "no free port"
    raise RuntimeError(msg)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DU_EXPORTER_")}
    env["HOME"] = str(home)
    env.pop("XDG_STATE_HOME", None)
    return env


class Exporter:
    """``python -m du_exporter`` on loopback, JSON log events collected."""

    def __init__(self, workdir: Path, roots: Sequence[Path]) -> None:
        workdir.mkdir(parents=True)
        self.address = f"127.0.0.1:{_free_port(9995)}"
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "du_exporter",
                "--multi-paths", ",".join(f"{r}=2" for r in roots),
                "--bind-address", self.address,
                "--db-path", str(workdir / "du-exporter.db"),
                "--scan-interval-minutes", str(SCAN_MINUTES),
                "--max-procs", "2",
                # Slow enough that a scrape sometimes sees a scan running.
                "--max-iops", str(MAX_IOPS),
                "--log-format", "json",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, cwd=workdir, env=_env(workdir),
        )
        self.events: list[dict[str, object]] = []
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None  # noqa: S101 - set by Popen
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    def wait(self, event: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if sum(e.get("event") == event for e in self.events) >= count:
                return
            time.sleep(0.05)
        msg = f"the exporter never logged {event!r} #{count}:\n{''.join(self.lines[-20:])}"
        raise RuntimeError(msg)

    def wait_rescanned(self, roots: Sequence[Path], since: int) -> None:
        """Until each root had a scan started after event ``since`` done."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            started: set[object] = set()
            done: set[object] = set()
            for e in self.events[since:]:
                if e.get("event") == "scan_started":
                    started.add(e.get("root"))
                elif e.get("event") == "scan_completed" and e.get("root") in started:
                    done.add(e.get("root"))
            if done >= {str(r) for r in roots}:
                return
            time.sleep(0.05)
        msg = f"no fresh scan of {roots}:\n{''.join(self.lines[-20:])}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Prometheus:
    """``prometheus`` on loopback scraping ``target`` every second."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        workdir.mkdir(parents=True)
        config = workdir / "prometheus.yml"
        config.write_text(
            f"global: {{scrape_interval: {SCRAPE_SECONDS}s, scrape_timeout: 1s}}\n"
            "scrape_configs:\n"
            f"  - {{job_name: du-exporter, static_configs: [{{targets: ['{target}']}}]}}\n",
            encoding="utf-8",
        )
        self.log_file = workdir / "prometheus.log"
        self.url = f"http://127.0.0.1:{_free_port(9090)}"
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                    f"--web.console.templates={workdir / 'consoles'}",
                    f"--web.console.libraries={workdir / 'console_libraries'}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=workdir, env=_env(workdir),
            )

    def version(self) -> str:
        return str(self.api("/api/v1/status/buildinfo")["version"])

    def api(self, path: str, **params: str | float) -> Any:
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - http to loopback
            body = json.loads(resp.read())
        if body["status"] != "success":
            msg = f"{path} {params}: {body}"
            raise RuntimeError(msg)
        return body["data"]

    def wait_up(self, timeout: float = 60) -> None:
        """Until the first scrape of the exporter has succeeded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError, RuntimeError):
                if any(r["value"][1] == "1" for r in self.api(
                    "/api/v1/query", query="up")["result"]):
                    return
            time.sleep(0.2)
        log = self.log_file.read_text(errors="replace")[-3000:]
        msg = f"prometheus never scraped the exporter:\n{log}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- what Grafana does with the dashboard JSON

VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape (multi-value variables)."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(), value)


@dataclass
class Variable:
    name: str
    label: str
    multi: bool
    values: list[str]
    text: str

    def interpolate(self) -> str:
        """As Grafana's Prometheus data source writes it into a query."""
        if not self.multi:
            return self.values[0].replace("\\", "\\\\").replace("'", "\\\\'")
        escaped = [_regex_escape(v) for v in self.values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


@dataclass
class Series:
    labels: dict[str, str]
    name: str
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def _legend_name(legend: str, labels: dict[str, str]) -> str:
    """``{{path}} in 7 days`` with the series' labels filled in."""
    if not legend:
        return json.dumps(labels)
    return LEGEND.sub(lambda m: labels.get(m.group(1), ""), legend)


class Grafana:
    """Variables and queries of one dashboard over one time range."""

    def __init__(self, prom: Prometheus, dashboard: dict[str, Any],
                 start: float, end: float) -> None:
        self.prom = prom
        self.step = SCRAPE_SECONDS
        # Aligned to the step, as Grafana does; the start rounded up so
        # that "offset $__range" at the end still finds the first sample.
        self.start = math.ceil(start / self.step) * self.step
        self.end = math.floor(end / self.step) * self.step
        rate = max(4 * SCRAPE_SECONDS, self.step + SCRAPE_SECONDS)
        span = self.end - self.start
        self.builtins = {
            "__interval": f"{self.step}s", "__rate_interval": f"{rate}s",
            "__range": f"{span}s", "__range_s": str(span),
        }
        self.variables: dict[str, Variable] = {}
        for spec in dashboard["templating"]["list"]:
            self.variables[spec["name"]] = self._resolve(spec)

    def _resolve(self, spec: dict[str, Any]) -> Variable:
        name, kind = spec["name"], spec["type"]
        multi = bool(spec.get("multi") or spec.get("includeAll"))
        current = spec.get("current", {}).get("value", [])
        if kind == "datasource":
            return Variable(name, spec["label"], False, ["prometheus"], "Prometheus")
        if kind == "custom":
            options = [o.strip() for o in spec["query"].split(",")]
        elif kind == "query":
            options = self._label_values(spec["definition"])
        else:
            msg = f"variable type {kind!r} of ${name}"
            raise NotImplementedError(msg)
        if spec.get("sort") == 1:
            options.sort()
        wanted = current if isinstance(current, list) else [current]
        if "$__all" in wanted:
            return Variable(name, spec["label"], multi, options, "All")
        chosen = [v for v in wanted if v in options] or options[:1]
        return Variable(name, spec["label"], multi, chosen, " + ".join(chosen))

    def _label_values(self, definition: str) -> list[str]:
        match = re.fullmatch(r"label_values\((.*), *(\w+)\)", definition)
        if not match:
            msg = f"unsupported variable query {definition!r}"
            raise NotImplementedError(msg)
        values: list[str] = self.prom.api(
            f"/api/v1/label/{match.group(2)}/values",
            **{"match[]": self.fill(match.group(1))},
            start=self.start, end=self.end,
        )
        return values

    def fill(self, expr: str) -> str:
        def one(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            if name in self.builtins:
                return self.builtins[name]
            return self.variables[name].interpolate()
        return VARIABLE.sub(one, expr)

    def text(self, title: str) -> str:
        """A panel title with the variables' display text."""
        def one(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            var = self.variables.get(name)
            return var.text if var else m.group()
        return VARIABLE.sub(one, title)

    def run(self, target: dict[str, Any], *, instant: bool) -> list[Series]:
        expr = self.fill(target["expr"])
        legend = target.get("legendFormat", "")
        if instant:
            data = self.prom.api("/api/v1/query", query=expr, time=self.end)
        else:
            data = self.prom.api(
                "/api/v1/query_range", query=expr,
                start=self.start, end=self.end, step=self.step,
            )
        out = []
        for result in data["result"]:
            labels = result["metric"]
            series = Series(labels, _legend_name(legend, labels))
            points = [result["value"]] if instant else result["values"]
            for t, v in points:
                series.times.append(float(t))
                series.values.append(float(v))
            out.append(series)
        return out


# --- units, as Grafana's value formats

def _scaled(value: float, base: int, suffixes: Sequence[str]) -> tuple[float, str]:
    if value == 0 or not math.isfinite(value):
        return value, suffixes[0]
    power = min(int(math.log(abs(value), base)), len(suffixes) - 1)
    power = max(power, 0)
    return value / base**power, suffixes[power]


def _number(value: float) -> str:
    size = abs(value)
    if size >= 100 or value == int(value):  # noqa: PLR2004 - digits shown
        return f"{value:.0f}"
    return f"{value:.1f}" if size >= 10 else f"{value:.2f}"  # noqa: PLR2004


IEC = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
SI_BYTES = ("B", "kB", "MB", "GB", "TB", "PB")
SHORT = ("", " K", " Mil", " Bil", " Tri")


def _duration(value: float) -> str:
    size = abs(value)
    if size == 0:
        return "0 s"
    for limit, div, name in ((1e-3, 1e-6, "µs"), (1, 1e-3, "ms"),
                             (60, 1, "s"), (3600, 60, "min"),
                             (86400, 3600, "hour")):
        if size < limit:
            return f"{_number(value / div)} {name}"
    return f"{_number(value / 86400)} day"


def fmt(value: float, unit: str | None) -> str:
    """``value`` in a panel's unit, humanized as Grafana shows it."""
    if unit == "bytes":
        v, s = _scaled(value, 1024, IEC)
        return f"{_number(v)} {s}"
    if unit == "decbytes":
        v, s = _scaled(value, 1000, SI_BYTES)
        return f"{_number(v)} {s}"
    if unit == "s":
        return _duration(value)
    if unit == "short":
        v, s = _scaled(value, 1000, SHORT)
        return f"{_number(v)}{s}"
    return _number(value)


class UnitLocator(ticker.Locator):
    """Round ticks in the unit the axis shows (MiB steps, not bytes)."""

    def __init__(self, unit: str | None, nbins: int) -> None:
        self.base = {"bytes": 1024, "decbytes": 1000, "short": 1000}.get(unit or "", 0)
        self.inner = ticker.MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10])

    def __call__(self) -> Sequence[float]:
        assert self.axis is not None  # noqa: S101 - set by the axis
        low, high = self.axis.get_view_interval()
        return self.tick_values(low, high)

    def tick_values(self, vmin: float, vmax: float) -> Sequence[float]:
        factor = 1.0
        if self.base:
            top = max(abs(vmin), abs(vmax))
            factor = float(self.base ** max(0, int(math.log(top, self.base)))) if top else 1.0
        return [t * factor for t in self.inner.tick_values(vmin / factor, vmax / factor)]


# --- drawing: Grafana's dark theme, its grid, its panels

CANVAS = "#111217"
PANEL = "#181b1f"
BORDER = "#2a2d33"
TEXT = "#ccccdc"
DIM = "#8e8e9e"
GRID = "#24272d"
GREEN = "#73bf69"
#: Grafana's palette-classic, the default series colours.
PALETTE = (
    "#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1",
    "#ba43a9", "#705da0", "#508642", "#cca300", "#447ebc", "#c15c17",
)
DPI = 100
PAD = 16       # canvas padding, px
HEADER = 136   # title, variables and the note above the grid, px
CELL = 30      # Grafana's grid row height, px
MARGIN = 8     # and the gap between panels, px
TITLE_H = 32   # a panel's title bar, px


def pt(px: float) -> float:
    """Font size in points for ``px`` pixels at DPI."""
    return px * 72 / DPI


@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float


class Canvas:
    """A figure with a full-size axes in pixels (y down) to draw on."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
        self._measure = FigureCanvasAgg(self.fig).get_renderer()  # type: ignore[no-untyped-call]
        self.fig.patch.set_facecolor(CANVAS)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(height, 0)
        self.ax.axis("off")

    def text(self, x: float, y: float, s: str, px: float = 13, color: str = TEXT,
             **kw: Any) -> None:
        kw.setdefault("va", "center")
        self.ax.text(x, y, s, fontsize=pt(px), color=color, **kw)

    def width_of(self, s: str, px: float = 13, weight: str = "normal") -> float:
        t = self.ax.text(0, 0, s, fontsize=pt(px), weight=weight)
        w: float = t.get_window_extent(self._measure).width
        t.remove()
        return w

    def clip(self, s: str, width: float, px: float = 13) -> str:
        if self.width_of(s, px) <= width:
            return s
        while s and self.width_of(s + "…", px) > width:
            s = s[:-1]
        return s + "…"

    def rect(self, box: Box, color: str, edge: str | None = None, radius: float = 2) -> None:
        self.ax.add_patch(FancyBboxPatch(
            (box.x, box.y), box.w, box.h,
            boxstyle=f"round,pad=0,rounding_size={radius}",
            facecolor=color, edgecolor=edge or color, linewidth=1,
        ))

    def axes(self, box: Box) -> Axes:
        return self.fig.add_axes((
            box.x / self.width, 1 - (box.y + box.h) / self.height,
            box.w / self.width, box.h / self.height,
        ))


def grid_box(pos: dict[str, int], width: int) -> Box:
    col = (width - 2 * PAD - 23 * MARGIN) / 24
    return Box(
        PAD + pos["x"] * (col + MARGIN),
        HEADER + pos["y"] * (CELL + MARGIN),
        pos["w"] * col + (pos["w"] - 1) * MARGIN,
        pos["h"] * CELL + (pos["h"] - 1) * MARGIN,
    )


def _style_axes(ax: Axes, unit: str | None, nbins: int) -> None:
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(colors=DIM, labelsize=pt(11), length=0, pad=6)
    ax.grid(color=GRID, linewidth=1)
    ax.set_axisbelow(True)
    ax.yaxis.set_major_locator(UnitLocator(unit, nbins))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt(v, unit)))


def _time_axis(ax: Axes, start: float, end: float, width: float) -> None:
    ax.set_xlim(start, end)
    fits = max(2, int(width // 110))
    every = next((s for s in (5, 10, 15, 20, 30, 60, 120, 300, 600)
                  if (end - start) / s <= fits), 3600)
    first = math.ceil(start / every) * every
    # None at the very left, where it would run into the y axis' "0".
    ticks = [t for t in range(first, math.floor(end) + 1, every)
             if t - start > 0.04 * (end - start)]
    ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(
        lambda v, _: time.strftime("%H:%M:%S", time.localtime(v))))


def _legend(canvas: Canvas, box: Box, items: Sequence[tuple[str, str]]) -> float:
    """Grafana's list legend below a graph, wrapped; returns its height."""
    rows: list[list[tuple[str, str, float]]] = [[]]
    used = 0.0
    for color, name in items:
        w = 22 + canvas.width_of(name, 12) + 16
        if rows[-1] and used + w > box.w:
            rows.append([])
            used = 0
        rows[-1].append((color, name, w))
        used += w
    height = 20 * len(rows)
    top = box.y + box.h - height
    for r, row in enumerate(rows):
        x, y = box.x, top + 10 + 20 * r
        for color, name, w in row:
            canvas.ax.plot([x, x + 14], [y, y], color=color, linewidth=3,
                           solid_capstyle="round")
            canvas.text(x + 20, y, name, 12)
            x += w
    return height


def _runs(s: Series, step: float) -> Iterator[tuple[list[float], list[float]]]:
    """The series in gap-free runs: Grafana does not join across a gap."""
    start = 0
    for i in range(1, len(s.times) + 1):
        if i == len(s.times) or s.times[i] - s.times[i - 1] > 1.5 * step:
            yield s.times[start:i], s.values[start:i]
            start = i


def draw_timeseries(canvas: Canvas, body: Box, unit: str | None,
                    series: Sequence[Series], g: Grafana) -> None:
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    legend = _legend(canvas, body, list(zip(colors, [s.name for s in series], strict=True)))
    plot = Box(body.x + 72, body.y + 6, body.w - 80, body.h - legend - 34)
    ax = canvas.axes(plot)
    _style_axes(ax, unit, max(2, int(plot.h // 45)))
    _time_axis(ax, g.start, g.end, plot.w)
    for s, color in zip(series, colors, strict=True):
        for times, values in _runs(s, g.step):
            ax.plot(times, values, color=color, linewidth=1.2,
                    marker="o" if len(times) == 1 else None, markersize=3)
    if not series:
        canvas.text(body.x + body.w / 2, body.y + body.h / 2, "No data", 16, DIM, ha="center")
        return
    values = [v for s in series for v in s.values]
    low, high = min(*values, 0), max(values)
    if low == high:
        high = low + 1
    ax.set_ylim(low, high + (high - low) * 0.04)


def draw_stat(canvas: Canvas, body: Box, unit: str | None,
              series: Sequence[Series]) -> None:
    """Last non-null value of each series, with a sparkline below it."""
    if not series:
        canvas.text(body.x + body.w / 2, body.y + body.h / 2, "No data", 16, DIM, ha="center")
        return
    cell_w = body.w / len(series)
    for i, s in enumerate(series):
        cell = Box(body.x + i * cell_w, body.y, cell_w - (8 if i < len(series) - 1 else 0), body.h)
        ax = canvas.axes(Box(cell.x, cell.y + cell.h * 0.45, cell.w, cell.h * 0.55))
        ax.axis("off")
        ax.fill_between(s.times, s.values, min(s.values), color=GREEN, alpha=0.18, linewidth=0)
        ax.plot(s.times, s.values, color=GREEN, linewidth=1)
        ax.set_xlim(min(s.times), max(s.times))
        lo, hi = min(s.values), max(s.values)
        if lo == hi:  # a flat line, drawn low in the cell
            lo, hi = lo - 0.5, hi + 0.5
        ax.set_ylim(lo, hi + (hi - lo) * 1.2)
        value = fmt(s.values[-1], None if unit == "none" else unit)
        center = cell.x + cell.w / 2
        if len(series) > 1:
            canvas.text(center, cell.y + 12, canvas.clip(s.name, cell.w - 8, 13), 13, TEXT, ha="center")
        size = min(40, cell.h * 0.45, 1.7 * cell.w / max(4, len(value)))
        canvas.text(center, cell.y + cell.h * (0.52 if len(series) > 1 else 0.42), value,
                    size, GREEN, ha="center", weight="bold")


GAUGE = LinearSegmentedColormap.from_list("gauge", ["#34562f", GREEN])


def draw_bargauge(canvas: Canvas, body: Box, unit: str | None,
                  series: Sequence[Series]) -> None:
    """Horizontal gradient bars, largest first, names left, values right."""
    rows = sorted(series, key=lambda s: -s.values[-1])
    if not rows:
        return
    top = max(s.values[-1] for s in rows) or 1.0
    names = min(body.w * 0.42, max(canvas.width_of(s.name, 13) for s in rows) + 12)
    values = max(canvas.width_of(fmt(s.values[-1], unit), 14, "bold") for s in rows) + 12
    pitch = body.h / len(rows)
    bar_h = min(26.0, pitch - 6)
    for i, s in enumerate(rows):
        y = body.y + pitch * i + (pitch - bar_h) / 2
        x0, width = body.x + names, body.w - names - values
        canvas.text(body.x, y + bar_h / 2, canvas.clip(s.name, names - 12, 13), 13)
        canvas.ax.add_patch(Rectangle((x0, y), width, bar_h, facecolor="#22252b", linewidth=0))
        filled = width * max(s.values[-1], 0) / top
        canvas.ax.imshow([[j / 255 for j in range(256)]], cmap=GAUGE, aspect="auto",
                         extent=(x0, x0 + filled, y + bar_h, y), interpolation="bilinear",
                         zorder=2)
        canvas.text(body.x + body.w, y + bar_h / 2, fmt(s.values[-1], unit), 14,
                    GREEN, ha="right", weight="bold")
    canvas.ax.set_xlim(0, canvas.width)
    canvas.ax.set_ylim(canvas.height, 0)


def draw_table(canvas: Canvas, body: Box, panel: dict[str, Any], unit: str | None,
               series: Sequence[Series]) -> None:
    """Labels as columns, the value renamed and sorted, as the panel says."""
    organize: dict[str, Any] = {}
    for t in panel.get("transformations", []):
        if t["id"] == "organize":
            organize = t["options"]
    hidden = {k for k, v in organize.get("excludeByName", {}).items() if v}
    value_name = organize.get("renameByName", {}).get("Value", "Value")
    labels = sorted({k for s in series for k in s.labels} - hidden)
    rows = [[s.labels.get(k, "") for k in labels] + [s.values[-1]] for s in series]
    for sort in reversed(panel.get("options", {}).get("sortBy", [])):
        if sort["displayName"] == value_name:
            rows.sort(key=lambda r: float(r[-1]), reverse=sort.get("desc", False))
    columns = [*labels, value_name]
    cells = [[*map(str, r[:-1]), fmt(float(r[-1]), unit)] for r in rows]
    widths = [max([canvas.width_of(c, 13) for c in col] + [canvas.width_of(h, 13)]) + 24
              for h, col in zip(columns, zip(*cells, strict=True) if cells
                                else [[] for _ in columns], strict=True)]
    # The path column takes what is left.
    if "path" in columns:
        i = columns.index("path")
        widths[i] = max(80, body.w - sum(widths) + widths[i])
    row_h = min(34.0, body.h / (len(cells) + 1))
    x_at = [body.x + sum(widths[:i]) for i in range(len(columns))]
    canvas.ax.plot([body.x, body.x + body.w], [body.y + row_h] * 2, color=BORDER, linewidth=1)
    for i, name in enumerate(columns):
        right = i == len(columns) - 1
        x = x_at[i] + widths[i] - 8 if right else x_at[i] + 8
        canvas.text(x, body.y + row_h / 2, name, 13, "#6e9fff", weight="bold",
                    ha="right" if right else "left")
    for r, row in enumerate(cells):
        y = body.y + row_h * (r + 1.5)
        canvas.ax.plot([body.x, body.x + body.w], [y + row_h / 2] * 2, color=GRID, linewidth=1)
        for i, cell in enumerate(row):
            right = i == len(columns) - 1
            x = x_at[i] + widths[i] - 8 if right else x_at[i] + 8
            canvas.text(x, y, canvas.clip(cell, widths[i] - 16, 13), 13,
                        ha="right" if right else "left")
    if not cells:
        canvas.text(body.x + body.w / 2, body.y + body.h / 2, "No data", 16, DIM, ha="center")


def draw_header(canvas: Canvas, dashboard: dict[str, Any], g: Grafana, note: str) -> None:
    canvas.text(PAD, 24, "▦", 18, DIM)
    canvas.text(PAD + 26, 24, f"Dashboards  /  {dashboard['title']}", 17, TEXT)
    clock = (f"{time.strftime('%H:%M:%S', time.localtime(g.start))} to "
             f"{time.strftime('%H:%M:%S', time.localtime(g.end))}")
    canvas.text(canvas.width - PAD, 24, f"◷  {clock}   ⟳", 13, TEXT, ha="right")
    x: float = PAD
    for var in g.variables.values():
        label_w = canvas.width_of(var.label, 13) + 20
        value_w = canvas.width_of(var.text, 13) + 34
        canvas.rect(Box(x, 50, label_w, 30), "#22252b", BORDER)
        canvas.text(x + 10, 65, var.label, 13, TEXT)
        canvas.rect(Box(x + label_w, 50, value_w, 30), CANVAS, BORDER)
        canvas.text(x + label_w + 10, 65, var.text, 13, TEXT)
        canvas.text(x + label_w + value_w - 10, 65, "⌄", 13, DIM, ha="right", va="bottom")
        x += label_w + value_w + 8
    lines = [""]
    for word in note.split():
        line = f"{lines[-1]} {word}".strip()
        if canvas.width_of(line, 12) > canvas.width - 2 * PAD:
            lines.append(word)
        else:
            lines[-1] = line
    for i, line in enumerate(lines[:2]):
        canvas.text(PAD, 98 + 17 * i, line, 12, DIM)


def render(dashboard: dict[str, Any], g: Grafana, out: Path, width: int, note: str) -> None:
    panels = dashboard["panels"]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    height = HEADER + bottom * (CELL + MARGIN) + PAD
    canvas = Canvas(width, height)
    draw_header(canvas, dashboard, g, note)
    draw: dict[str, Callable[[Box, dict[str, Any], str | None, list[Series]], None]] = {
        "timeseries": lambda b, _p, u, s: draw_timeseries(canvas, b, u, s, g),
        "stat": lambda b, _p, u, s: draw_stat(canvas, b, u, s),
        "bargauge": lambda b, _p, u, s: draw_bargauge(canvas, b, u, s),
        "table": lambda b, p, u, s: draw_table(canvas, b, p, u, s),
    }
    for panel in panels:
        box = grid_box(panel["gridPos"], width)
        title = g.text(panel.get("title", ""))
        if panel["type"] == "row":
            canvas.text(box.x, box.y + box.h / 2 + 2, f"⌄  {title}", 15, TEXT, weight="bold")
            continue
        canvas.rect(box, PANEL, BORDER)
        canvas.text(box.x + 12, box.y + TITLE_H / 2 + 1,
                    canvas.clip(title, box.w - 24, 14), 14, TEXT, weight="bold")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        instant = panel["type"] in {"table", "bargauge"}
        series = [s for t in panel["targets"] for s in g.run(t, instant=instant)]
        body = Box(box.x + 12, box.y + TITLE_H + 4, box.w - 24, box.h - TITLE_H - 12)
        draw[panel["type"]](body, panel, unit, series)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.fig.savefig(out, dpi=DPI, facecolor=CANVAS)


def _fonts() -> None:
    """Liberation Sans (Arial's metrics, close to Grafana's Inter) if present."""
    for path in sorted(Path("/usr/share/fonts").glob("**/LiberationSans-*.ttf")):
        font_manager.fontManager.addfont(str(path))
    mpl.rcParams["font.family"] = ["Liberation Sans", "DejaVu Sans"]
    mpl.rcParams["text.parse_math"] = False


# --- the run

@contextlib.contextmanager
def services(base: Path, roots: Sequence[Path], binary: str) -> Iterator[tuple[Exporter, Prometheus]]:
    """The exporter and Prometheus; both always stopped."""
    exporter: Exporter | None = None
    prom: Prometheus | None = None
    try:
        exporter = Exporter(base / "exporter", roots)
        exporter.wait("listening")
        prom = Prometheus(binary, base / "prometheus", exporter.address)
        yield exporter, prom
    finally:
        if prom is not None:
            prom.stop()
        if exporter is not None:
            exporter.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "dashboard.png")
    parser.add_argument("--seconds", type=float, default=70,
                        help="how long the tree changes under scans [%(default)s]")
    parser.add_argument("--width", type=int, default=1600, help="pixels [%(default)s]")
    args = parser.parse_args()
    binary = shutil.which("prometheus")
    if binary is None:
        sys.exit("prometheus not found (Debian: apt-get install prometheus)")
    _fonts()
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    began = time.monotonic()
    shutil.rmtree(DEMO, ignore_errors=True)
    try:
        run(args, dashboard, binary)
    finally:
        shutil.rmtree(DEMO, ignore_errors=True)
    sys.stdout.write(f"wrote {args.out} ({args.out.stat().st_size:,} bytes) "
                     f"in {time.monotonic() - began:.0f} s\n")


def run(args: argparse.Namespace, dashboard: dict[str, Any], binary: str) -> None:
    """Demo tree, services, changes, queries, picture."""
    roots = build_tree(DEMO)
    with services(DEMO, roots, binary) as (exporter, prom):
        prom.wait_up()
        start = time.time()
        sys.stdout.write(f"scraped; changing the tree for {args.seconds:.0f} s\n")
        steps = max(4, round(args.seconds / 2.5))
        for step in range(steps):
            time.sleep(max(0.0, start + args.seconds * step / steps - time.time()))
            apply(DEMO, changes(step, steps))
        exporter.wait_rescanned(roots, len(exporter.events))  # the last change is in
        time.sleep(max(0.0, start + args.seconds - time.time()))
        time.sleep(2 * SCRAPE_SECONDS + 0.5)  # ...and scraped
        g = Grafana(prom, dashboard, start, time.time())
        note = (
            f"Drawn by scripts/render_dashboard.py from {DASHBOARD.relative_to(REPO)}: "
            f"every panel's queries, run on Prometheus {prom.version()} scraping "
            f"du-exporter every {SCRAPE_SECONDS} s while a demo tree changed for "
            f"{args.seconds:.0f} s (a scan every {SCAN_MINUTES * 60:.1f} s). "
            "Rates and forecasts extrapolate those seconds; Grafana's own look differs."
        )
        render(dashboard, g, args.out, args.width, note)


if __name__ == "__main__":
    main()
