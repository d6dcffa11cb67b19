"""Many exported directories: every directory of a tree is a row.

For each ``--dirs D`` a tree of D directories with one (empty) file each
is built with ``maketree.py --shape dirs --depth 4`` (cached under
``--workdir``), exported at ``dir-level: 4`` (D + 1 exported
directories).  Per tree:

* **mode file**: GNU ``du -B1 --max-depth=4 ROOT > /dev/null`` and the
  whole ``du-exporter --mode file`` command, alternated ``--repeat``
  times (medians; ratio in the same run), their CPU (user + system,
  children included: wall time moves with other load on a shared
  machine, CPU much less), plus the split of the
  exporter's time: scan (walk and store, the exporter's own
  ``scan_duration_seconds``) and render (the textfile's directory
  families written from the store, timed in a separate process on the
  same database).  Runs cache byte code (``exporter_env``), as an
  installed package has its ``.pyc`` files;
* **daemon**: the exporter in mode ``http``, rescanning back to back;
  the highest summed RSS of it and its children (20 ms samples) through
  the first scan, unloaded rescans, and rescans under ``--scrapers``
  open-loop scrapers that each ask for gzip ``/metrics`` once per second
  (Prometheus' headers; latency from the scheduled send to the last
  byte, so a late start counts).  Rescan slowdown = median rescan under
  load / median unloaded rescan.  Bytes per exported directory: the
  database file, the cached gzip bodies.

Markdown to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from pathlib import Path
from typing import IO

from bench_scan import MIB, TreeSampler, exporter_env, log, markdown_table
from maketree import build_tree


ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
LEVEL = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(workdir: Path, dirs: int) -> Path:
    """D directories of one empty file each (cached under ``workdir``)."""
    dest = workdir / f"dirs-{dirs}"
    build_tree(dest, 2 * dirs, depth=LEVEL, shape="dirs", empty_files=True,
               progress=True)
    return dest


def _timed(cmd: list[str], cpu: list[float], **kw: object) -> float:
    """Wall seconds of ``cmd``; its CPU seconds (user + system, its
    children included) are appended to ``cpu``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def file_mode(python: str, root: Path, run: Path, repeat: int) -> dict[str, float]:
    du_s: list[float] = []
    ex_s: list[float] = []
    du_cpu: list[float] = []
    ex_cpu: list[float] = []
    scan_s: list[float] = []
    for _ in range(repeat):
        du_s.append(_timed(["du", "-B1", f"--max-depth={LEVEL}", str(root)],
                           du_cpu, stdout=subprocess.DEVNULL))
        for f in run.parent.glob(run.name + "*"):
            f.unlink()
        prom = run.with_suffix(".prom")
        ex_s.append(_timed(
            [python, "-m", "du_exporter", "--mode", "file",
             "--analyzed-path", str(root), "--dir-level", str(LEVEL),
             "--db-path", str(run), "--output-file", str(prom),
             "--log-level", "warning"],
            ex_cpu, env=exporter_env(run.parent),
        ))
        m = re.search(rb"^du_exporter_scan_duration_seconds\{[^}]*\} (\S+)$",
                      prom.read_bytes(), re.MULTILINE)
        scan_s.append(float(m.group(1)) if m else float("nan"))
    render = _render_seconds(python, root, run)
    return {
        "du": statistics.median(du_s),
        "exporter": statistics.median(ex_s),
        "du_cpu": statistics.median(du_cpu),
        "exporter_cpu": statistics.median(ex_cpu),
        "scan": statistics.median(scan_s),
        "render": render[0],
        "gzip_bytes": render[1],
        "db_bytes": run.stat().st_size,
    }


_RENDER = """
import sys, time, tracemalloc
from pathlib import Path
from du_exporter import config
from du_exporter.store.reader import Reader
from du_exporter.expose.render import gunzip, render_gzip
cfg = config.build({}, {}, {"db-path": sys.argv[1], "analyzed-path": sys.argv[2],
                            "dir-level": int(sys.argv[3])}, {"HOME": "/tmp"})
try:
    from du_exporter.expose.render import write_text
except ImportError:  # an older du-exporter (--python): gzip, then gunzip
    def write_text(reader, cfg, f, spill):
        f.writelines(gunzip(render_gzip(reader, cfg).text))
out = Path(sys.argv[1] + ".render")
with out.open("wb") as f:
    t = time.perf_counter(); write_text(Reader(cfg.db_path), cfg, f, out.parent)
    took = time.perf_counter() - t
out.unlink()
tracemalloc.start(); g = render_gzip(Reader(cfg.db_path), cfg)
held = getattr(g, "resident", None)  # members shared by both formats
if held is None:  # an older du-exporter (--python): two joined bodies
    held = len(g.text) + len(g.openmetrics)
print(took, held, tracemalloc.get_traced_memory()[1])
"""


def _render_seconds(python: str, root: Path, db: Path) -> tuple[float, int, int]:
    """Render time, both gzip bodies' bytes, tracemalloc peak of a render."""
    out = subprocess.run(
        [python, "-c", _RENDER, str(db), str(root), str(LEVEL)],
        check=True, capture_output=True, text=True, env=exporter_env(db.parent),
    ).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def _scraper(port: int, start: float, seconds: float, offset: float,
             out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    lat: list[float] = []
    errors = 0
    k = 0
    req = (
        f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: {ACCEPT}\r\n"
        "Accept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    ).encode()
    while True:
        due = start + offset + k
        if due > start + seconds:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(req)
                got = 0
                while chunk := s.recv(1 << 20):
                    got += len(chunk)
            lat.append(time.monotonic() - due)
        except OSError:
            errors += 1
        k += 1
    out.put((lat, errors))


def _client_proc(port: int, start: float, seconds: float, offsets: list[float],
                 out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    threads = [
        threading.Thread(target=_scraper, args=(port, start, seconds, o, out))
        for o in offsets
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class _Completions:
    """Scans the daemon logged as completed (its JSON log on stderr):
    (monotonic time, seconds).  Read from the log, not from /metrics,
    whose text is hundreds of MiB at a million directories."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.done: list[tuple[float, float]] = []
        self._thread = threading.Thread(target=self._read, args=(stream,),
                                        daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                sys.stderr.buffer.write(line)
                continue
            if event.get("event") == "scan_completed":
                self.done.append((time.monotonic(), float(event["seconds"])))
            elif event.get("level") not in ("info", "debug"):
                sys.stderr.buffer.write(line)


def _watch_rescans(scans: _Completions, since: float, until: float) -> list[float]:
    """Rescans that started after ``since`` and ended before ``until``."""
    time.sleep(max(0.0, until - time.monotonic()))
    return [s for t, s in scans.done if t - s >= since and t <= until]


def daemon(python: str, root: Path, run: Path, scrapers: int, seconds: float,
           procs: int) -> dict[str, float]:
    """Peaks, rescan times and scrape latencies of one daemon run."""
    for f in run.parent.glob(run.name + "*"):
        f.unlink()
    port = _free_port()
    proc = subprocess.Popen(
        [python, "-m", "du_exporter", "--analyzed-path", str(root),
         "--dir-level", str(LEVEL), "--db-path", str(run),
         "--bind-address", f"127.0.0.1:{port}", "--scan-interval-minutes",
         "0.001", "--log-level", "info", "--log-format", "json"],
        env=exporter_env(run.parent), stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    scans = _Completions(proc.stderr)
    first = time.monotonic()
    sampler = TreeSampler(proc.pid)
    sampler.start()
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5):
                    break
            except OSError:
                time.sleep(0.2)
        first = time.monotonic() - first
        now = time.monotonic()
        idle = _watch_rescans(scans, now, now + seconds)
        log(f"unloaded rescans: {len(idle)}, median {statistics.median(idle) if idle else 0:.3f} s")
        out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        start = time.monotonic() + 1
        offsets = [i / scrapers for i in range(scrapers)]
        clients = [
            multiprocessing.Process(
                target=_client_proc,
                args=(port, start, seconds, offsets[i::procs], out),
            )
            for i in range(procs)
        ]
        for c in clients:
            c.start()
        loaded = _watch_rescans(scans, start, start + seconds)
        results = [out.get() for _ in range(scrapers)]
        for c in clients:
            c.join()
        log(f"loaded rescans: {len(loaded)}, median {statistics.median(loaded) if loaded else 0:.3f} s")
    finally:
        proc.terminate()
        proc.wait()
        sampler.stop()
    lat = sorted(x for r, _ in results for x in r)
    return {
        "peak_rss": sampler.peak_rss,
        "parent_hwm": sampler.hwm.get(proc.pid, 0),
        "worker_hwm": max(
            (sampler.hwm.get(w, 0) for w in sampler.workers), default=0
        ),
        "first_scan": first,
        "db_bytes": run.stat().st_size,
        "idle": statistics.median(idle) if idle else float("nan"),
        "loaded": statistics.median(loaded) if loaded else float("nan"),
        "requests": len(lat),
        "errors": sum(e for _, e in results),
        "p50": lat[len(lat) // 2] * 1000 if lat else float("nan"),
        "p99": lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan"),
    }


def _mib(n: float) -> str:
    return f"{n / MIB:.1f}"


def _per_dir(n: float, exported: int) -> str:
    return f"{n / exported:.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dirs", type=int, action="append",
                   help="directories of a tree (repeat); default 10k, 100k, 1M")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/du-many"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--scrapers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30,
                   help="each daemon phase (unloaded, loaded) lasts this long, "
                        "at least 3 rescans")
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--no-file-mode", action="store_true")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the daemon on a 2-directory tree")
    p.add_argument("--chart", type=Path, help="PNG; the numbers go to .json")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--no-daemon", action="store_true",
                   help="only the mode-file table")
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    run = args.workdir / "run.db"
    base: dict[str, float] | None = None
    if not (args.no_baseline or args.no_daemon):
        log("baseline: 2 exported directories")
        base = daemon(args.python, tree(args.workdir, 1), run, args.scrapers,
                      min(args.seconds, 10), args.client_procs)
    file_rows: list[list[str]] = []
    daemon_rows: list[list[str]] = []
    part_rows: list[list[str]] = []
    points: list[dict[str, float]] = []
    if base is not None:
        daemon_rows.append(["2 (baseline)", _mib(base["peak_rss"]),
                            _mib(64 * MIB + 1024), "", "", "", "", "", "",
                            "", ""])
    for dirs in args.dirs or [10_000, 100_000, 1_000_000]:
        root = tree(args.workdir, dirs)
        exported = dirs + 1
        if not args.no_file_mode:
            log(f"{exported} exported directories: mode file")
            f = file_mode(args.python, root, run, args.repeat)
            file_rows.append([
                f"{exported:,}", f"{f['du']:.2f}", f"{f['exporter']:.2f}",
                f"{f['exporter'] / f['du']:.2f}",
                f"{f['du_cpu']:.2f}", f"{f['exporter_cpu']:.2f}",
                f"{f['exporter_cpu'] / f['du_cpu']:.2f}", f"{f['scan']:.2f}",
                f"{f['render']:.2f}",
                f"{f['exporter'] - f['scan'] - f['render']:.2f}",
                f"{f['db_bytes'] / exported:.0f}",
                f"{f['gzip_bytes'] / exported:.0f}",
            ])
        if args.no_daemon:
            continue
        log(f"{exported} exported directories: daemon")
        d = daemon(args.python, root, run, args.scrapers, args.seconds,
                   args.client_procs)
        _, gzip_bytes, render_peak = _render_seconds(args.python, root, run)
        budget = 64 * MIB + 512 * exported
        daemon_rows.append([
            f"{exported:,}", _mib(d["peak_rss"]), _mib(budget),
            f"{d['idle']:.2f}", f"{d['loaded']:.2f}",
            f"{d['loaded'] / d['idle']:.2f}", f"{args.scrapers}",
            f"{d['requests']:,}", f"{d['errors']}", f"{d['p50']:.1f}",
            f"{d['p99']:.1f}",
        ])
        growth = (d["parent_hwm"] - base["parent_hwm"]) if base else float("nan")
        part_rows.append([
            f"{exported:,}", _mib(d["peak_rss"]), _mib(budget),
            _mib(d["parent_hwm"]), _mib(d["worker_hwm"]),
            f"{d['first_scan']:.1f}",
            _per_dir(d["db_bytes"], exported), _per_dir(gzip_bytes, exported),
            _per_dir(render_peak, exported), _per_dir(growth, exported),
        ])
        points.append({
            "exported": exported, "peak_rss": d["peak_rss"], "target": budget,
            "parent_hwm": d["parent_hwm"], "worker_hwm": d["worker_hwm"],
            "db_bytes": d["db_bytes"], "gzip_bytes": gzip_bytes,
            "render_peak": render_peak, "parent_growth": growth,
        })
    if file_rows:
        print("**Mode file**, whole command vs `du -B1 --max-depth=4` (medians):\n")
        print(markdown_table(
            ["exported dirs", "du s", "du-exporter s", "ratio", "du CPU s",
             "du-exporter CPU s", "CPU ratio", "scan s",
             "render s", "other s", "db B/dir", "gzip B/dir"],
            file_rows,
        ))
        print()
    if args.no_daemon:
        return 0
    print("**Daemon**: peak summed RSS (first scan, rescans, scrapes) and "
          f"{args.scrapers} open-loop gzip scrapers at 1/s:\n")
    print(markdown_table(
        ["exported dirs", "peak RSS MiB", "target MiB", "rescan s",
         "rescan s loaded", "slowdown", "scrapers", "requests", "errors",
         "p50 ms", "p99 ms"],
        daemon_rows,
    ))
    print("\n**Memory parts**: peaks by process; bytes per exported directory "
          "of the store (SQLite file), the cached exposition (both gzip "
          "bodies), the Python objects of a render (tracemalloc peak) and the "
          "parent's peak RSS above the baseline's:\n")
    print(markdown_table(
        ["exported dirs", "peak RSS MiB", "target MiB", "parent MiB",
         "worker MiB", "first scan s", "store B/dir", "exposition B/dir",
         "render objects B/dir", "parent growth B/dir"],
        part_rows,
    ))
    if args.chart:
        data = {"baseline": base, "points": points}
        args.chart.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
        from many_chart import draw  # noqa: PLC0415 - matplotlib only for --chart

        draw(args.chart, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
