"""Benchmark du-exporter's one-shot scan against GNU du (and gdu).

For each ``--entries N`` a synthetic tree is built (cached) with
``maketree.py`` under ``--workdir``; its page cache is warmed with one
``du -s``; then, in the same run, each tool scans it:

* ``du -sB1 TREE`` (GNU coreutils), the reference for size and time;
* ``gdu -n -p TREE`` when gdu is on ``PATH``;
* ``python -m du_exporter --mode file ... --max-procs P`` for each P.

Wall time, CPU time (user + sys) of the whole process tree, and peak RSS
summed over the whole process tree (sampled every 20 ms from ``/proc``)
are measured. The exporter's root size is checked against du's total.

Stdout gets Markdown only (the table, the exactness verdicts, notes);
progress goes to stderr.
Exit status: 0 when every scan succeeded and matched du, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import maketree


SAMPLE_INTERVAL = 0.020
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Process-tree measurement
# --------------------------------------------------------------------------


def _children_via_task(pid: int) -> list[int] | None:
    """Children of ``pid`` from /proc/PID/task/*/children (None: no support)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread just ended
            return None  # kernel without CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return out


def _ppid_map() -> dict[int, list[int]]:
    """Parent → children for every process (fallback: scan /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _read_stat(int(name))
        if stat is not None:
            children.setdefault(stat[0], []).append(int(name))
    return children


def _busy_seconds() -> float:
    """Non-idle CPU time of the whole machine, from /proc/stat, seconds."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return 0.0
    # cpu user nice system idle iowait irq softirq steal ...
    ticks = [int(x) for x in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / CLK_TCK


def _read_hwm(pid: int) -> int:
    """VmHWM (peak RSS of the current address space) of ``pid``, bytes."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _read_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime + stime in ticks, rss in pages) of ``pid``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    # fields[0] is field 3 (state): ppid=4, utime=14, stime=15, rss=24.
    try:
        return (
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
            int(fields[21]),
        )
    except (IndexError, ValueError):
        return None


@dataclass
class TreeSampler:
    """Samples RSS and CPU of a process and all its descendants."""

    root: int
    peak_rss: int = 0  # bytes, max over samples of the summed RSS
    max_procs: int = 0  # most processes seen at once
    hwm: dict[int, int] = field(default_factory=dict)  # pid -> VmHWM bytes
    cpu_ticks: dict[int, int] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _use_task_children: bool = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _descendants(self) -> list[int]:
        pids = [self.root]
        if self._use_task_children:
            i = 0
            while i < len(pids):
                kids = _children_via_task(pids[i])
                if kids is None:
                    self._use_task_children = False
                    return self._descendants()
                pids.extend(kids)
                i += 1
            return pids
        tree = _ppid_map()
        i = 0
        while i < len(pids):
            pids.extend(tree.get(pids[i], []))
            i += 1
        return pids

    def sample(self) -> None:
        total_pages = 0
        alive = 0
        for pid in self._descendants():
            stat = _read_stat(pid)
            if stat is None:
                continue
            _ppid, ticks, rss_pages = stat
            total_pages += rss_pages
            alive += 1
            self.cpu_ticks[pid] = max(ticks, self.cpu_ticks.get(pid, 0))
            self.hwm[pid] = max(_read_hwm(pid), self.hwm.get(pid, 0))
        self.samples += 1
        self.peak_rss = max(self.peak_rss, total_pages * PAGE_SIZE)
        self.max_procs = max(self.max_procs, alive)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_INTERVAL)


@dataclass(frozen=True)
class Measured:
    """One command's resource use."""

    argv: list[str]
    returncode: int
    wall: float  # seconds
    cpu: float  # seconds, user + sys, whole process tree
    peak_rss: int  # bytes, whole process tree
    max_procs: int
    other_cpu: float  # seconds of CPU used by everything else meanwhile
    stdout: str
    stderr: str


def measure(argv: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``argv``; measure wall, tree CPU and tree peak RSS."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        busy_before = _busy_seconds()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            wall = time.perf_counter() - started
            busy = _busy_seconds() - busy_before
            sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    # wait4's rusage covers the child and every descendant it reaped
    # (pool workers are joined); the sampled per-process CPU catches
    # descendants nobody reaped. ru_maxrss is not used: after a vfork
    # it holds the *parent's* (this script's) peak RSS. The largest
    # VmHWM seen is a floor for runs shorter than the sample interval.
    reaped_cpu = usage.ru_utime + usage.ru_stime
    sampled_cpu = sum(sampler.cpu_ticks.values()) / CLK_TCK
    hwm_floor = max(sampler.hwm.values(), default=0)
    cpu = max(reaped_cpu, sampled_cpu)
    return Measured(
        argv=argv,
        returncode=proc.returncode,
        wall=wall,
        cpu=cpu,
        peak_rss=max(sampler.peak_rss, hwm_floor),
        max_procs=max(sampler.max_procs, 1),
        other_cpu=max(0.0, busy - cpu),
        stdout=stdout,
        stderr=stderr,
    )


# --------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The environment without DU_EXPORTER_* (flags alone configure runs)."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("DU_EXPORTER_")
    }


def parse_du_total(stdout: str) -> int:
    return int(stdout.split(None, 1)[0])


_SAMPLE = re.compile(
    r"^node_disk_usage_bytes\{(?P<labels>.*)\}\s+(?P<value>\S+)"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse_root_size(prom: str, root: str) -> int | None:
    """``node_disk_usage_bytes{path=root, level="0"}`` as an exact int."""
    for line in prom.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        labels = {
            k: _unescape(v) for k, v in _LABEL.findall(m.group("labels"))
        }
        if labels.get("path") == root and labels.get("level") == "0":
            try:
                return int(Decimal(m.group("value")))
            except (InvalidOperation, ValueError):
                return None
    return None


def _remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


@dataclass(frozen=True)
class ExporterRun:
    measured: Measured
    root_size: int | None
    db_bytes: int


def run_exporter(
    python: str,
    tree: Path,
    *,
    procs: int,
    dir_level: int,
    run_dir: Path,
    batch_size: int | None = None,
) -> ExporterRun:
    """One fresh one-shot scan (new database) of ``tree``."""
    db = run_dir / "bench.db"
    out = run_dir / "bench.prom"
    _remove_db(db)
    out.unlink(missing_ok=True)
    argv = [
        python,
        "-m",
        "du_exporter",
        "--mode",
        "file",
        "--analyzed-path",
        str(tree),
        "--dir-level",
        str(dir_level),
        "--max-procs",
        str(procs),
        "--db-path",
        str(db),
        "--output-file",
        str(out),
        "--log-level",
        "warning",
    ]
    if batch_size is not None:
        argv += ["--batch-size", str(batch_size)]
    measured = measure(argv, env=clean_env())
    root_size = None
    if measured.returncode == 0 and out.exists():
        root_size = parse_root_size(out.read_text(encoding="utf-8"), str(tree))
    db_bytes = sum(
        p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists()
    )
    _remove_db(db)
    out.unlink(missing_ok=True)
    return ExporterRun(measured, root_size, db_bytes)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    entries: int
    tool: str
    procs: str
    measured: Measured | None  # None: the run failed
    du_wall: float

    def cells(self) -> list[str]:
        m = self.measured
        if m is None:
            failed = ["failed"] * (len(TABLE_HEADER) - 3)
            return [f"{self.entries:,}", self.tool, self.procs, *failed]
        return [
            f"{self.entries:,}",
            self.tool,
            self.procs,
            f"{m.wall:.3f}",
            f"{m.cpu:.3f}",
            f"{m.peak_rss / MIB:.1f}",
            f"{self.entries / m.wall:,.0f}" if m.wall > 0 else "-",
            f"{m.wall / self.du_wall:.2f}" if self.du_wall > 0 else "-",
        ]


_NUMERIC = re.compile(r"^(-?[\d,]+(\.\d+)?|-|failed)$")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(header[i]), *(len(r[i]) for r in rows))
        for i in range(len(header))
    ]
    # Numeric columns (and failed runs) are right-aligned.
    right = [
        all(_NUMERIC.match(r[i]) for r in rows) for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if r else c.ljust(w)
            for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|".join(
        "-" * (w + 1) + ":" if r else "-" * (w + 2)
        for w, r in zip(widths, right, strict=True)
    )
    return "\n".join([line(header), f"|{rule}|", *(line(r) for r in rows)])


def median_index(walls: list[float]) -> int:
    """Index of the median wall time (the lower median when even)."""
    order = sorted(range(len(walls)), key=walls.__getitem__)
    return order[(len(order) - 1) // 2]


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from exc
    if not values or any(v < 1 for v in values):
        msg = f"expected positive integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cpus = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        description="Benchmark du-exporter's scan against GNU du."
    )
    parser.add_argument(
        "--entries",
        type=int,
        action="append",
        help="tree size in entries; repeatable (default: 200000)",
    )
    parser.add_argument(
        "--procs",
        type=_int_list,
        default=sorted({1, cpus}),
        help=f"comma-separated --max-procs values (default: 1,{cpus})",
    )
    parser.add_argument("--dir-level", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/du-bench"))
    parser.add_argument("--seed", type=int, default=0, help="tree seed")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per tool; the median-wall run is reported (default: 1)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_int_list,
        help="also sweep --batch-size on the largest tree, e.g. 100,1000,10000",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter with du_exporter installed (default: this one)",
    )
    args = parser.parse_args(argv)
    args.entries = args.entries or [200_000]
    if any(n < 1 for n in args.entries) or args.repeat < 1:
        parser.error("--entries and --repeat must be >= 1")
    return args


TABLE_HEADER = [
    "tree entries",
    "tool",
    "procs",
    "wall s",
    "CPU s",
    "peak RSS MiB (all processes)",
    "entries/s",
    "wall / du",
]


@dataclass
class Bench:
    args: argparse.Namespace
    run_dir: Path
    gdu: str | None
    rows: list[Row] = field(default_factory=list)
    exactness: list[str] = field(default_factory=list)
    batch_rows: list[list[str]] = field(default_factory=list)
    ok: bool = True

    def _fail(self, what: str, m: Measured) -> None:
        self.ok = False
        tail = "\n".join(m.stderr.strip().splitlines()[-15:])
        log(f"{what} failed (exit {m.returncode}):\n{tail}")

    def _measure_repeated(self, argv: list[str]) -> Measured:
        runs = [measure(argv) for _ in range(self.args.repeat)]
        return runs[median_index([r.wall for r in runs])]

    def _exporter(
        self, tree: Path, procs: int, du_total: int, batch: int | None = None
    ) -> Measured | None:
        what = f"du-exporter procs={procs}" + (
            f" batch-size={batch}" if batch is not None else ""
        )
        runs: list[ExporterRun] = []
        for _ in range(self.args.repeat):
            run = run_exporter(
                self.args.python,
                tree,
                procs=procs,
                dir_level=self.args.dir_level,
                run_dir=self.run_dir,
                batch_size=batch,
            )
            m = run.measured
            if m.returncode != 0:
                self._fail(what, m)
                self.exactness.append(f"{tree}, {what}: FAILED")
                return None
            verdict = "MATCH" if run.root_size == du_total else "MISMATCH"
            log(
                f"{tree}, {what}: {verdict} (du {du_total} B, du-exporter "
                f"{run.root_size} B); wall {m.wall:.3f} s, "
                f"cpu {m.cpu:.3f} s, peak rss {m.peak_rss / MIB:.1f} MiB "
                f"over up to {m.max_procs} processes, "
                f"db {run.db_bytes / MIB:.1f} MiB; other CPU use meanwhile "
                f"{m.other_cpu:.2f} s (this script included)"
            )
            runs.append(run)
        sizes = sorted({r.root_size or 0 for r in runs})
        matched = sum(r.root_size == du_total for r in runs)
        verdict = "MATCH" if matched == len(runs) else "MISMATCH"
        if verdict != "MATCH":
            self.ok = False
        got = ", ".join(str(x) for x in sizes)
        self.exactness.append(
            f"{tree}, {what}: {verdict} ({matched}/{len(runs)} runs; "
            f"du {du_total} B, du-exporter {got} B)"
        )
        walls = [r.measured.wall for r in runs]
        return runs[median_index(walls)].measured

    def tree(self, info: maketree.TreeInfo) -> None:
        tree, n = info.path, info.entries
        log(f"{tree}: warming the page cache (du -s)")
        subprocess.run(
            ["du", "-s", str(tree)], stdout=subprocess.DEVNULL, check=False
        )
        du = self._measure_repeated(["du", "-sB1", str(tree)])
        if du.returncode != 0:
            self._fail("du", du)
            return
        du_total = parse_du_total(du.stdout)
        log(f"{tree}: du -sB1 = {du_total} B in {du.wall:.3f} s")
        self.rows.append(Row(n, "du -sB1", "1", du, du.wall))
        if self.gdu is not None:
            g: Measured | None = self._measure_repeated(
                [self.gdu, "-n", "-p", str(tree)]
            )
            if g is not None and g.returncode != 0:
                self._fail("gdu", g)
                g = None
            self.rows.append(Row(n, "gdu -n -p", "all", g, du.wall))
        for procs in self.args.procs:
            m = self._exporter(tree, procs, du_total)
            self.rows.append(Row(n, "du-exporter", str(procs), m, du.wall))

    def batch_sweep(self, info: maketree.TreeInfo, sizes: list[int]) -> None:
        tree = info.path
        procs = max(self.args.procs)
        du = measure(["du", "-sB1", str(tree)])
        du_total = parse_du_total(du.stdout) if du.returncode == 0 else -1
        for batch in sizes:
            m = self._exporter(tree, procs, du_total, batch)
            if m is None:
                self.batch_rows.append(
                    [f"{batch}", str(procs)] + ["failed"] * 3
                )
                continue
            self.batch_rows.append(
                [
                    f"{batch}",
                    str(procs),
                    f"{m.wall:.3f}",
                    f"{m.cpu:.3f}",
                    f"{m.peak_rss / MIB:.1f}",
                ]
            )


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def _loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("du") is None:
        log("GNU du is not on PATH")
        return 1
    workdir: Path = args.workdir.absolute()
    run_dir = workdir / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    gdu = shutil.which("gdu")
    if gdu is None:
        log("gdu is not on PATH: skipped")

    infos: list[maketree.TreeInfo] = []
    for n in sorted(set(args.entries)):
        dest = (
            workdir / f"tree-{n}"
            if args.seed == 0
            else (workdir / f"tree-{n}-s{args.seed}")
        )
        log(f"{dest}: building {n} entries (cached when present)")
        info = maketree.build_tree(dest, n, seed=args.seed, progress=True)
        state = "cached" if info.cached else f"built in {info.seconds:.1f} s"
        log(
            f"{dest}: {state}: {info.directories} dirs, {info.files} files, "
            f"{info.hardlinks} hard links, {info.symlinks} symlinks"
        )
        infos.append(info)

    load_at_start = _loadavg()
    bench = Bench(args, run_dir, gdu)
    for info in infos:
        bench.tree(info)
    if args.batch_sizes:
        bench.batch_sweep(infos[-1], args.batch_sizes)

    print(markdown_table(TABLE_HEADER, [r.cells() for r in bench.rows]))
    print()
    print("Exactness (du-exporter level-0 size vs `du -sB1`):")
    print()
    for line in bench.exactness:
        print(f"- {line}")
    if args.batch_sizes:
        print()
        print(
            f"Batch-size sweep ({infos[-1].path}, {infos[-1].entries:,} entries):"
        )
        print()
        print(
            markdown_table(
                ["batch size", "procs", "wall s", "CPU s", "peak RSS MiB"],
                bench.batch_rows,
            )
        )
    print()
    version_argv = [args.python, "-m", "du_exporter", "--version"]
    exporter_version = _version(version_argv)
    startup = measure(version_argv, env=clean_env())
    notes = [
        (
            f"{os.cpu_count()} CPUs, {_version(['uname', '-sr'])}, "
            f"Python {sys.version.split()[0]}, "
            f"{_version(['du', '--version'])}, {exporter_version}"
        ),
        (
            "warm page cache; wall / du is relative to `du -sB1` on the "
            f"same tree; median-wall run of {args.repeat}"
        ),
        (
            "du-exporter wall times include interpreter start-up and "
            f"imports: `du-exporter --version` takes {startup.wall:.3f} s, "
            f"{startup.peak_rss / MIB:.1f} MiB"
        ),
    ]
    reported = [r.measured for r in bench.rows if r.measured is not None]
    wall_sum = sum(m.wall for m in reported)
    if wall_sum > 0:
        other = sum(m.other_cpu for m in reported) / wall_sum
        notes.append(
            f"CPU used outside the measured process trees during the "
            f"reported runs: {other:.2f} cores on average (this script's "
            "sampler included; much above 0.05 means a busy machine)"
        )
    notes.append(
        f"load average (1/5/15 min) before the timed runs: "
        f"{load_at_start}, after: "
        f"{_loadavg()} (other jobs on the machine skew the numbers)"
    )
    if gdu is None:
        notes.append("gdu: not on PATH, not measured")
    for note in notes:
        print(f"- {note}")
    return 0 if bench.ok else 1


if __name__ == "__main__":
    sys.exit(main())
