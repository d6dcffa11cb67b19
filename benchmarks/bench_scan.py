"""Benchmark du-exporter's one-shot scan against GNU du (and gdu).

For each ``--shape`` and ``--entries N`` a synthetic tree is built
(cached) with ``maketree.py`` under ``--workdir``; its page cache is
warmed with one ``du -s`` (or dropped before every timed run with
``--cold``); then, in the same run, each tool scans it:

* ``du -sB1 TREE`` (GNU coreutils), the reference for size and time;
* ``gdu -n -p TREE`` when gdu is on ``PATH``;
* ``python -m du_exporter --mode file ... --max-procs P --scan-engine E``
  for each P and E.

Wall time, CPU time (user + sys) of the whole process tree (and of the
scan workers alone), and peak RSS summed over the whole process tree
(sampled every 20 ms from ``/proc``) are measured. The exporter's root
size is checked against du's total. Optional sections: a ``--batch-size``
sweep, a ``--max-iops`` accuracy test (``--iops``), and a PNG chart of
wall time and peak RSS against tree size (``--chart``).

Stdout gets Markdown only (tables, exactness verdicts, target verdicts,
notes); progress goes to stderr.
Exit status: 0 when every scan succeeded and matched du, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import maketree


SAMPLE_INTERVAL = 0.020
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024
#: Marks a scan worker in its command line (``python -m du_exporter.worker``).
WORKER_MARK = b"du_exporter.scan.worker"


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


def _read_cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


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
    #: pids of du-exporter scan workers among the descendants.
    workers: set[int] = field(default_factory=set)
    #: (monotonic time, root's CPU ticks) at the first and the last
    #: sample that saw a scan worker: the life of the scan pool.
    pool_first: tuple[float, int] | None = None
    pool_last: tuple[float, int] | None = None
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _use_task_children: bool = True
    _cmdlines: dict[int, bytes] = field(default_factory=dict)  # exec'd
    _first_seen: dict[int, float] = field(default_factory=dict)

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

    def _not_execed(self, pid: int, ppid: int, now: float) -> bool:
        """A child between fork and exec, still its parent's image.

        ``subprocess`` forks with ``vfork``: until the child calls
        ``exec`` it *is* the parent's address space, and its RSS (and
        VmHWM) would count the parent twice. Such a child is left out
        of the sums (for up to a second; a child that never execs is
        counted after that).
        """
        if pid == self.root or pid in self._cmdlines:
            return False
        cmdline = _read_cmdline(pid)
        parent = self._cmdlines.get(ppid)
        if parent is None:
            parent = _read_cmdline(ppid)
        first = self._first_seen.setdefault(pid, now)
        if cmdline is None or (cmdline == parent and now - first < 1.0):
            return True
        self._cmdlines[pid] = cmdline
        if WORKER_MARK in cmdline:
            self.workers.add(pid)
        return False

    def sample(self) -> None:
        total_pages = 0
        alive = 0
        now = time.monotonic()
        if self.root not in self._cmdlines:
            self._cmdlines[self.root] = _read_cmdline(self.root) or b""
        pool_up = False
        for pid in self._descendants():
            stat = _read_stat(pid)
            if stat is None:
                continue
            ppid, ticks, rss_pages = stat
            self.cpu_ticks[pid] = max(ticks, self.cpu_ticks.get(pid, 0))
            if self._not_execed(pid, ppid, now):
                continue
            total_pages += rss_pages
            alive += 1
            pool_up = pool_up or pid in self.workers
            self.hwm[pid] = max(_read_hwm(pid), self.hwm.get(pid, 0))
        if pool_up:
            mark = (now, self.cpu_ticks.get(self.root, 0))
            self.pool_first = self.pool_first or mark
            self.pool_last = mark
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
    worker_cpu: float = 0.0  # seconds, du-exporter scan workers only
    parent_hwm: int = 0  # bytes, VmHWM of the command's own process
    worker_hwm: int = 0  # bytes, largest VmHWM of a scan worker
    workers: int = 0  # scan worker processes seen
    pool_wall: float = 0.0  # seconds during which scan workers were seen
    pool_parent_cpu: float = 0.0  # CPU of the command's process meanwhile

    @property
    def parent_cpu(self) -> float:
        """CPU of everything but the scan workers (the parent, mostly)."""
        return max(0.0, self.cpu - self.worker_cpu)

    @property
    def parent_busy(self) -> float | None:
        """Share of one core the parent used while the pool ran."""
        if self.pool_wall < 0.1:  # too short to say
            return None
        return self.pool_parent_cpu / self.pool_wall


def measure(
    argv: list[str],
    env: dict[str, str] | None = None,
    prepare: Callable[[], object] | None = None,
) -> Measured:
    """Run ``argv``; measure wall, tree CPU and tree peak RSS.

    ``prepare`` runs just before the clock starts (dropping caches).
    """
    if prepare is not None:
        prepare()
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
    workers = sampler.workers
    pool_wall = pool_parent_cpu = 0.0
    if sampler.pool_first is not None and sampler.pool_last is not None:
        pool_wall = sampler.pool_last[0] - sampler.pool_first[0]
        ticks = sampler.pool_last[1] - sampler.pool_first[1]
        pool_parent_cpu = ticks / CLK_TCK
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
        worker_cpu=sum(sampler.cpu_ticks[p] for p in workers) / CLK_TCK,
        parent_hwm=sampler.hwm.get(proc.pid, 0),
        worker_hwm=max((sampler.hwm[p] for p in workers), default=0),
        workers=len(workers),
        pool_wall=pool_wall,
        pool_parent_cpu=pool_parent_cpu,
    )


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_caches() -> str | None:
    """``sync; echo 3 > drop_caches``: None when done, else why not."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n", encoding="ascii")
    except OSError as e:
        return f"not permitted ({DROP_CACHES}: {e.strerror or e})"
    return None


# --------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The environment without DU_EXPORTER_* (flags alone configure runs)."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("DU_EXPORTER_")
    }


def exporter_env(workdir: Path) -> dict[str, str]:
    """``clean_env()`` with byte-code caching on, as for an installed package.

    With ``PYTHONDONTWRITEBYTECODE`` set (some shells and CI set it),
    every run would compile du-exporter's sources again (~0.1 s of
    start-up); the caches go to ``WORKDIR/pycache``
    (``PYTHONPYCACHEPREFIX``), not into the source tree.
    """
    env = clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def parse_du_total(stdout: str) -> int:
    return int(stdout.split(None, 1)[0])


_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def prom_value(prom: str, name: str, **labels: str) -> Decimal | None:
    """The value of the first sample ``name`` carrying ``labels``."""
    for line in prom.splitlines():
        m = _SAMPLE.match(line)
        if m is None or m.group("name") != name:
            continue
        have = {
            k: _unescape(v) for k, v in _LABEL.findall(m.group("labels") or "")
        }
        if all(have.get(k) == v for k, v in labels.items()):
            try:
                return Decimal(m.group("value"))
            except InvalidOperation:
                return None
    return None


def parse_root_size(prom: str, root: str) -> int | None:
    """``node_disk_usage_bytes{path=root, level="0"}`` as an exact int."""
    value = prom_value(prom, "node_disk_usage_bytes", path=root, level="0")
    return None if value is None else int(value)


@dataclass(frozen=True)
class ScanFacts:
    """What the exporter's own textfile says about its scan."""

    root_size: int | None = None
    scan_seconds: float | None = None  # du_exporter_scan_duration_seconds
    entries: int | None = None  # du_exporter_scan_entries
    dirs: int | None = None  # directories below the root (level-0 count)

    @classmethod
    def parse(cls, prom: str, root: str) -> ScanFacts:
        def get(name: str, **labels: str) -> Decimal | None:
            return prom_value(prom, name, path=root, **labels)

        seconds = get("du_exporter_scan_duration_seconds")
        entries = get("du_exporter_scan_entries")
        dirs = get("node_disk_usage_directory_count", level="0")
        return cls(
            root_size=parse_root_size(prom, root),
            scan_seconds=None if seconds is None else float(seconds),
            entries=None if entries is None else int(entries),
            dirs=None if dirs is None else int(dirs),
        )

    @property
    def ops(self) -> int | None:
        """What ``max-iops`` counts: one read per directory (the root
        too) plus one stat per entry."""
        if self.entries is None or self.dirs is None:
            return None
        return self.entries + self.dirs + 1


def _remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


@dataclass(frozen=True)
class ExporterRun:
    measured: Measured
    facts: ScanFacts
    db_bytes: int

    @property
    def root_size(self) -> int | None:
        return self.facts.root_size


@dataclass(frozen=True)
class Setting:
    """How du-exporter is run: engine, pool size, options."""

    engine: str
    procs: int
    batch_size: int | None = None
    max_iops: int | None = None
    #: ``ignore-dirs`` names (``--ignore``).
    ignore: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The engine column: the engine, and the ignored names."""
        if not self.ignore:
            return self.engine
        return f"{self.engine}, ignore {','.join(self.ignore)}"

    def describe(self) -> str:
        text = f"du-exporter engine={self.engine} procs={self.procs}"
        if self.ignore:
            text += f" ignore-dirs={','.join(self.ignore)}"
        if self.batch_size is not None:
            text += f" batch-size={self.batch_size}"
        if self.max_iops is not None:
            text += f" max-iops={self.max_iops}"
        return text


def exporter_argv(
    python: str, tree: Path, setting: Setting, dir_level: int, run_dir: Path
) -> list[str]:
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
        str(setting.procs),
        "--scan-engine",
        setting.engine,
        "--db-path",
        str(run_dir / "bench.db"),
        "--output-file",
        str(run_dir / "bench.prom"),
        "--log-level",
        "warning",
    ]
    if setting.batch_size is not None:
        argv += ["--batch-size", str(setting.batch_size)]
    if setting.max_iops is not None:
        argv += ["--max-iops", str(setting.max_iops)]
    if setting.ignore:
        argv += ["--ignore-dirs", ",".join(setting.ignore)]
    return argv


def run_exporter(
    python: str,
    tree: Path,
    setting: Setting,
    *,
    dir_level: int,
    run_dir: Path,
    prepare: Callable[[], object] | None = None,
) -> ExporterRun:
    """One fresh one-shot scan (new database) of ``tree``."""
    db = run_dir / "bench.db"
    out = run_dir / "bench.prom"
    _remove_db(db)
    out.unlink(missing_ok=True)
    argv = exporter_argv(python, tree, setting, dir_level, run_dir)
    env = exporter_env(run_dir.parent)
    measured = measure(argv, env=env, prepare=prepare)
    facts = ScanFacts()
    if measured.returncode == 0 and out.exists():
        facts = ScanFacts.parse(out.read_text(encoding="utf-8"), str(tree))
    db_bytes = sum(
        p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists()
    )
    _remove_db(db)
    out.unlink(missing_ok=True)
    return ExporterRun(measured, facts, db_bytes)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


_NUMERIC = re.compile(r"^([-+]?[\d,]+(\.\d+)?( ?%|x)?|-|failed)$")


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


def pick_index(walls: list[float], pick: str) -> int:
    """The reported run: ``median`` wall, or ``min`` (best of R)."""
    if pick == "min":
        return min(range(len(walls)), key=walls.__getitem__)
    return median_index(walls)


def _mib(n: int) -> str:
    return f"{n / MIB:.1f}"


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f} %"


@dataclass(frozen=True)
class Result:
    """One tool's (median) run on one tree."""

    tree: maketree.TreeInfo
    shape: str
    tool: str
    engine: str  # "-" for du and gdu
    procs: str
    measured: Measured | None  # None: the run failed
    du_wall: float
    facts: ScanFacts | None = None

    @property
    def entries(self) -> int:
        return self.tree.entries

    @property
    def ratio(self) -> float | None:
        m = self.measured
        if m is None or self.du_wall <= 0:
            return None
        return m.wall / self.du_wall

    def cells(self) -> list[str]:
        head = [self.shape, f"{self.entries:,}", self.tool, self.engine]
        head.append(self.procs)
        m = self.measured
        if m is None:
            return [*head, *["failed"] * (len(MAIN_HEADER) - len(head))]
        ratio = self.ratio
        return [
            *head,
            f"{m.wall:.3f}",
            f"{m.cpu:.3f}",
            _mib(m.peak_rss),
            f"{self.entries / m.wall:,.0f}" if m.wall > 0 else "-",
            "-" if ratio is None else f"{ratio:.2f}",
        ]

    def split_cells(self) -> list[str]:
        m, f = self.measured, self.facts
        head = [self.shape, f"{self.entries:,}", self.engine, self.procs]
        if m is None or f is None or not f.scan_seconds:
            return [*head, *["failed"] * (len(SPLIT_HEADER) - len(head))]
        efficiency = m.worker_cpu / (f.scan_seconds * int(self.procs))
        busy = m.parent_busy
        return [
            *head,
            f"{f.dirs or 0:,}",
            f"{m.wall:.3f}",
            f"{f.scan_seconds:.3f}",
            f"{m.worker_cpu:.3f}",
            f"{efficiency:.2f}",
            f"{m.pool_parent_cpu:.3f}",
            "-" if busy is None else f"{busy:.2f}",
        ]


MAIN_HEADER = [
    "shape",
    "tree entries",
    "tool",
    "engine",
    "procs",
    "wall s",
    "CPU s",
    "peak RSS MiB (all processes)",
    "entries/s",
    "wall / du",
]
SPLIT_HEADER = [
    "shape",
    "tree entries",
    "engine",
    "procs",
    "directories",
    "wall s",
    "scan s",
    "worker CPU s",
    "split efficiency",
    "parent CPU s (pool up)",
    "parent busy",
]
MEMORY_HEADER = [
    "shape",
    "tree entries",
    "engine",
    "procs",
    "peak RSS MiB (sum)",
    "parent peak MiB",
    "largest worker peak MiB",
    "workers",
    "sum vs smallest tree",
]
BATCH_HEADER = [
    "batch size",
    "engine",
    "procs",
    "wall s",
    "scan s",
    "CPU s",
    "worker CPU s",
    "parent CPU s (pool up)",
    "parent busy",
    "peak RSS MiB",
]
IOPS_HEADER = [
    "max-iops",
    "engine",
    "procs",
    "ops",
    "scan s",
    "ops/s (scan)",
    "vs budget",
    "within ±10 %",
    "wall s",
    "ops/s (wall)",
    "slowdown (wall)",
]
TREE_HEADER = [
    "tree",
    "shape",
    "entries",
    "directories",
    "files",
    "hard links",
    "symlinks",
    "sparse 1 GiB",
    "disk (du -sB1)",
    "build",
]


@dataclass(frozen=True)
class IopsResult:
    budget: int  # 0: unlimited
    setting: Setting
    run: ExporterRun | None

    def cells(self, unlimited: IopsResult | None) -> list[str]:
        budget = f"{self.budget:,}" if self.budget else "unlimited"
        head = [budget, self.setting.engine, str(self.setting.procs)]
        run = self.run
        ops = None if run is None else run.facts.ops
        scan = None if run is None else run.facts.scan_seconds
        if run is None or ops is None or not scan:
            return [*head, *["failed"] * (len(IOPS_HEADER) - len(head))]
        wall = run.measured.wall
        rate = ops / scan
        vs = within = "-"
        if self.budget:
            vs = _pct(rate / self.budget)
            within = "yes" if abs(rate / self.budget - 1) <= 0.10 else "no"
        slowdown = "-"
        if unlimited is not None and unlimited.run is not None:
            slowdown = f"{wall / unlimited.run.measured.wall:.1f}x"
        return [
            *head,
            f"{ops:,}",
            f"{scan:.3f}",
            f"{rate:,.0f}",
            vs,
            within,
            f"{wall:.3f}",
            f"{ops / wall:,.0f}",
            slowdown,
        ]


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _int_list(text: str, *, zero: bool = False) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from exc
    if not values or any(v < (0 if zero else 1) for v in values):
        msg = f"expected positive integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return values


def _choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        bad = [v for v in values if v not in allowed]
        if not values or bad:
            msg = f"expected a comma-separated list of {', '.join(allowed)}"
            raise argparse.ArgumentTypeError(msg)
        return list(dict.fromkeys(values))

    return parse


def default_engine(python: str) -> str:
    """``c`` when the interpreter has the C reader, else ``python``."""
    probe = [python, "-c", "import du_exporter.scan._fastscan"]
    done = subprocess.run(probe, capture_output=True, check=False)
    return "c" if done.returncode == 0 else "python"


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
    parser.add_argument(
        "--engine",
        type=_choices(("c", "scandir-rs", "python", "auto")),
        help="comma-separated --scan-engine values, e.g. c,scandir-rs,python "
        "(default: c when built, else python)",
    )
    parser.add_argument(
        "--shape",
        type=_choices(maketree.SHAPES),
        default=["balanced"],
        help="comma-separated tree shapes: " + ", ".join(maketree.SHAPES),
    )
    parser.add_argument(
        "--empty-files",
        action="store_true",
        help="trees of zero-byte files (cheap multi-million-entry trees)",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="NAME",
        help="also run every setting with ignore-dirs NAME (a bare name, "
        "e.g. .snapshot; repeatable); checked against du --exclude=NAME",
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
        "--pick",
        choices=("median", "min"),
        default="median",
        help="which of the --repeat runs is reported: the median wall "
        "time, or the fastest (the least disturbed on a shared machine)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_int_list,
        help="also sweep --batch-size on the largest tree, e.g. 100,1000,10000",
    )
    parser.add_argument(
        "--iops",
        type=_int_list,
        help="also run under --max-iops B for each B (and unlimited) on a "
        "small tree and compare the achieved rate with B, e.g. 2000,10000",
    )
    parser.add_argument(
        "--iops-entries",
        type=int,
        default=20_000,
        help="tree size for --iops (default: 20000)",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the page, dentry and inode caches before every timed "
        "run (needs root; reported as not permitted otherwise)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        help="write a PNG chart of wall time and peak RSS against tree "
        "size (needs matplotlib)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter with du_exporter installed (default: this one)",
    )
    args = parser.parse_args(argv)
    args.entries = sorted(set(args.entries or [200_000]))
    if any(not n or "/" in n or "," in n or re.search(r"[*?[]", n)
           for n in args.ignore):
        parser.error("--ignore takes a bare name: no '/', ',' or glob")
    if any(n < 1 for n in args.entries) or args.repeat < 1:
        parser.error("--entries and --repeat must be >= 1")
    if args.iops_entries < 1:
        parser.error("--iops-entries must be >= 1")
    if args.chart is not None:
        try:
            import matplotlib as mpl  # noqa: F401, PLC0415 - checked early
        except ImportError:
            parser.error("--chart needs matplotlib (pip install matplotlib)")
    args.engine = args.engine or [default_engine(args.python)]
    return args


def shape_label(args: argparse.Namespace, shape: str) -> str:
    """The shape as tables show it (``balanced, empty files``)."""
    return f"{shape}, empty files" if args.empty_files else shape


def tree_dest(
    workdir: Path, entries: int, shape: str, *, empty: bool, seed: int
) -> Path:
    name = f"tree-{entries}"
    if shape != "balanced":
        name += f"-{shape}"
    if empty:
        name += "-empty"
    if seed:
        name += f"-s{seed}"
    return workdir / name


def build(
    args: argparse.Namespace,
    entries: int,
    shape: str,
    *,
    empty: bool,
) -> maketree.TreeInfo:
    dest = tree_dest(args.workdir, entries, shape, empty=empty, seed=args.seed)
    log(f"{dest}: building {entries} entries (cached when present)")
    info = maketree.build_tree(
        dest,
        entries,
        seed=args.seed,
        shape=shape,
        empty_files=empty,
        progress=True,
    )
    state = "cached" if info.cached else f"built in {info.seconds:.1f} s"
    log(
        f"{dest}: {state}: {info.directories} dirs, {info.files} files, "
        f"{info.hardlinks} hard links, {info.symlinks} symlinks"
    )
    return info


@dataclass
class Bench:
    args: argparse.Namespace
    run_dir: Path
    gdu: str | None
    cold: bool = False
    results: list[Result] = field(default_factory=list)
    exactness: list[str] = field(default_factory=list)
    batch_rows: list[list[str]] = field(default_factory=list)
    batch_runs: list[ExporterRun] = field(default_factory=list)
    iops: list[IopsResult] = field(default_factory=list)
    trees: dict[Path, tuple[maketree.TreeInfo, str, int | None]] = field(
        default_factory=dict
    )
    ok: bool = True

    def prepare(self) -> None:
        if self.cold:
            problem = drop_caches()
            if problem is not None:
                msg = f"dropping caches: {problem}"
                raise RuntimeError(msg)

    def _fail(self, what: str, m: Measured) -> None:
        self.ok = False
        tail = "\n".join(m.stderr.strip().splitlines()[-15:])
        log(f"{what} failed (exit {m.returncode}):\n{tail}")

    def _measure_repeated(self, argv: list[str]) -> Measured:
        runs = [
            measure(argv, prepare=self.prepare)
            for _ in range(self.args.repeat)
        ]
        return runs[pick_index([r.wall for r in runs], self.args.pick)]

    def du(self, info: maketree.TreeInfo, shape: str) -> Result | None:
        tree = info.path
        if not self.cold:
            log(f"{tree}: warming the page cache (du -s)")
            subprocess.run(
                ["du", "-s", str(tree)], stdout=subprocess.DEVNULL, check=False
            )
        du = self._measure_repeated(["du", "-sB1", str(tree)])
        if du.returncode != 0:
            self._fail("du", du)
            return None
        total = parse_du_total(du.stdout)
        self.trees[tree] = (info, shape, total)
        log(f"{tree}: du -sB1 = {total} B in {du.wall:.3f} s")
        result = Result(info, shape, "du -sB1", "-", "1", du, du.wall)
        self.results.append(result)
        return result

    def exporter(
        self, tree: Path, setting: Setting, du_total: int | None
    ) -> ExporterRun | None:
        what = setting.describe()
        runs: list[ExporterRun] = []
        for _ in range(self.args.repeat):
            run = run_exporter(
                self.args.python,
                tree,
                setting,
                dir_level=self.args.dir_level,
                run_dir=self.run_dir,
                prepare=self.prepare,
            )
            m = run.measured
            if m.returncode != 0:
                self._fail(what, m)
                self.exactness.append(f"{tree}, {what}: FAILED")
                return None
            verdict = "MATCH" if run.root_size == du_total else "MISMATCH"
            f = run.facts
            log(
                f"{tree}, {what}: {verdict} (du {du_total} B, du-exporter "
                f"{run.root_size} B); wall {m.wall:.3f} s, scan "
                f"{f.scan_seconds or 0:.3f} s, cpu {m.cpu:.3f} s (workers "
                f"{m.worker_cpu:.3f} s), peak rss {m.peak_rss / MIB:.1f} MiB "
                f"over up to {m.max_procs} processes (parent VmHWM "
                f"{m.parent_hwm / MIB:.1f}, worker {m.worker_hwm / MIB:.1f}), "
                f"db {run.db_bytes / MIB:.1f} MiB; other CPU use meanwhile "
                f"{m.other_cpu:.2f} s (this script included)"
            )
            runs.append(run)
        if du_total is not None:
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
        return runs[pick_index(walls, self.args.pick)]

    def settings(self) -> list[Setting]:
        ignores = [()] + ([tuple(self.args.ignore)] if self.args.ignore else [])
        return [
            Setting(engine, procs, ignore=ignore)
            for ignore in ignores
            for engine in self.args.engine
            for procs in self.args.procs
        ]

    def du_excluding(self, tree: Path) -> int | None:
        """du's total with ``--ignore``'s names excluded (not timed): what
        a scan with them ignored must find."""
        excludes = [f"--exclude={n}" for n in self.args.ignore]
        done = subprocess.run(["du", "-sB1", *excludes, str(tree)],
                              capture_output=True, text=True, check=False)
        return parse_du_total(done.stdout) if done.returncode == 0 else None

    def tree(self, info: maketree.TreeInfo, shape: str) -> None:
        du = self.du(info, shape)
        if du is None or du.measured is None:
            return
        du_total = parse_du_total(du.measured.stdout)
        if self.gdu is not None:
            g: Measured | None = self._measure_repeated(
                [self.gdu, "-n", "-p", str(info.path)]
            )
            if g is not None and g.returncode != 0:
                self._fail("gdu", g)
                g = None
            self.results.append(
                Result(info, shape, "gdu -n -p", "-", "all", g, du.du_wall)
            )
        ignored_total = self.du_excluding(info.path) if self.args.ignore else None
        for setting in self.settings():
            run = self.exporter(info.path, setting,
                                ignored_total if setting.ignore else du_total)
            self.results.append(
                Result(
                    info,
                    shape,
                    "du-exporter",
                    setting.label,
                    str(setting.procs),
                    None if run is None else run.measured,
                    du.du_wall,
                    None if run is None else run.facts,
                )
            )

    def batch_sweep(self, info: maketree.TreeInfo, sizes: list[int]) -> None:
        engine, procs = self.args.engine[0], max(self.args.procs)
        du_total = self.trees.get(info.path, (info, "", None))[2]
        for batch in sizes:
            setting = Setting(engine, procs, batch_size=batch)
            run = self.exporter(info.path, setting, du_total)
            head = [f"{batch:,}", engine, str(procs)]
            if run is None or not run.facts.scan_seconds:
                self.batch_rows.append([*head, *["failed"] * 7])
                continue
            self.batch_runs.append(run)
            m, scan = run.measured, run.facts.scan_seconds
            busy = m.parent_busy
            self.batch_rows.append(
                [
                    *head,
                    f"{m.wall:.3f}",
                    f"{scan:.3f}",
                    f"{m.cpu:.3f}",
                    f"{m.worker_cpu:.3f}",
                    f"{m.pool_parent_cpu:.3f}",
                    "-" if busy is None else f"{busy:.2f}",
                    _mib(m.peak_rss),
                ]
            )

    def iops_test(self, info: maketree.TreeInfo, budgets: list[int]) -> None:
        tree = info.path
        if tree not in self.trees:
            self.du(info, "balanced")
        du_total = self.trees.get(tree, (info, "", None))[2]
        for setting in self.settings():
            if setting.ignore:
                continue
            for budget in [0, *budgets]:
                s = Setting(setting.engine, setting.procs, max_iops=budget)
                run = self.exporter(tree, s, du_total)
                self.iops.append(IopsResult(budget, s, run))
                if run is not None and run.facts.ops and budget:
                    rate = run.facts.ops / (run.facts.scan_seconds or 1)
                    log(
                        f"  achieved {rate:,.0f} ops/s for a budget of {budget:,}"
                    )


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


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


def exporter_results(bench: Bench) -> list[Result]:
    return [r for r in bench.results if r.tool == "du-exporter"]


def memory_rows(bench: Bench) -> list[list[str]]:
    rows = []
    smallest: dict[tuple[str, str, str], int] = {}
    for r in sorted(exporter_results(bench), key=lambda r: r.entries):
        m = r.measured
        head = [r.shape, f"{r.entries:,}", r.engine, r.procs]
        if m is None:
            rows.append([*head, *["failed"] * (len(MEMORY_HEADER) - 4)])
            continue
        key = (r.shape, r.engine, r.procs)
        base = smallest.setdefault(key, m.peak_rss)
        rows.append(
            [
                *head,
                _mib(m.peak_rss),
                _mib(m.parent_hwm),
                _mib(m.worker_hwm),
                str(m.workers),
                "-" if base == m.peak_rss else _pct(m.peak_rss / base),
            ]
        )
    return rows


RSS_TARGET = 64 * MIB
RATIO_TARGET, RATIO_STRETCH = 1.0, 0.6
FLATNESS_TARGET = 0.10
#: The single writer has headroom while it is busy less than this.
WRITER_BUSY_LIMIT = 0.5


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def target_lines(bench: Bench) -> list[str]:
    """Verdicts on the issue-3 targets, from what this run measured."""
    lines: list[str] = []
    ran = [r for r in exporter_results(bench) if r.measured is not None]
    if not ran:
        return lines
    procs = (
        "2" if any(r.procs == "2" for r in ran) else max(r.procs for r in ran)
    )
    target_runs = [r for r in ran if r.procs == procs]
    for shape in dict.fromkeys(r.shape for r in target_runs):
        biggest = max(r.entries for r in target_runs if r.shape == shape)
        for r in target_runs:
            if r.shape != shape or r.entries != biggest or r.ratio is None:
                continue
            stretch = (
                " (stretch ≤ 0.6x met too)" if r.ratio <= RATIO_STRETCH else ""
            )
            lines.append(
                f"wall ≤ 1.0x `du -sB1` ({shape}, {r.entries:,} entries, "
                f"engine {r.engine}, procs {procs}): {r.ratio:.2f}x — "
                f"{_met(r.ratio <= RATIO_TARGET)}{stretch}"
            )
    worst = max(
        target_runs, key=lambda r: r.measured.peak_rss if r.measured else 0
    )
    assert worst.measured is not None
    lines.append(
        f"peak RSS summed over all processes ≤ 64 MiB (procs {procs}, "
        f"every tree and engine of this run): largest "
        f"{_mib(worst.measured.peak_rss)} MiB ({worst.shape}, "
        f"{worst.entries:,} entries, engine {worst.engine}) — "
        f"{_met(worst.measured.peak_rss <= RSS_TARGET)}"
    )
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for r in target_runs:
        groups.setdefault((r.shape, r.engine, r.procs), []).append(r)
    for (shape, engine, p), rs in groups.items():
        if len({r.entries for r in rs}) < 2:
            continue
        lo = min(rs, key=lambda r: r.entries)
        hi = max(rs, key=lambda r: r.entries)
        assert lo.measured is not None
        assert hi.measured is not None
        growth = hi.measured.peak_rss / lo.measured.peak_rss
        lines.append(
            f"peak RSS within +10 % from {lo.entries:,} to {hi.entries:,} "
            f"entries ({shape}, engine {engine}, procs {p}): "
            f"{_mib(lo.measured.peak_rss)} → {_mib(hi.measured.peak_rss)} MiB, "
            f"{_pct(growth)} — {_met(growth - 1 <= FLATNESS_TARGET)}"
        )
    if bench.batch_runs:
        walls = [r.measured.wall for r in bench.batch_runs]
        share = max(r.measured.parent_busy or 0.0 for r in bench.batch_runs)
        spread = max(walls) / min(walls)
        lines.append(
            "SQLite writer not the bottleneck (batch-size sweep): the "
            f"parent process (writer and dispatcher) busy at most "
            f"{share:.0%} of one core while the pool ran — "
            f"{_met(share < WRITER_BUSY_LIMIT)} (met: below "
            f"{WRITER_BUSY_LIMIT:.0%} at every batch size); slowest ÷ "
            f"fastest batch size: {_pct(spread)} (compare with the "
            "run-to-run spread of one setting on stderr)"
        )
    for i in bench.iops:
        if not i.budget or i.run is None or not i.run.facts.ops:
            continue
        rate = i.run.facts.ops / (i.run.facts.scan_seconds or 1)
        lines.append(
            f"max-iops {i.budget:,} within ±10 % (engine {i.setting.engine}, "
            f"procs {i.setting.procs}): {rate:,.0f} ops/s, "
            f"{_pct(rate / i.budget)} — {_met(abs(rate / i.budget - 1) <= 0.1)}"
        )
    return lines


def tree_rows(bench: Bench) -> list[list[str]]:
    rows = []
    for info, shape, total in bench.trees.values():
        rows.append(
            [
                str(info.path),
                shape,
                f"{info.entries:,}",
                f"{info.directories:,}",
                f"{info.files:,}",
                f"{info.hardlinks:,}",
                f"{info.symlinks:,}",
                f"{info.sparse_files:,}",
                "-" if total is None else f"{total / 2**30:.2f} GiB",
                "cached" if info.cached else f"built in {info.seconds:.0f} s",
            ]
        )
    return rows


def chart_series(bench: Bench) -> dict[str, list[tuple[int, float, float]]]:
    """label → [(entries, wall s, peak RSS MiB)] for the first shape."""
    shape = shape_label(bench.args, bench.args.shape[0])
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in bench.results:
        if r.shape != shape or r.measured is None:
            continue
        if r.tool == "du-exporter":
            label = f"du-exporter ({r.engine}, {r.procs} proc{'s' * (r.procs != '1')})"
        else:
            label = r.tool
        point = (r.entries, r.measured.wall, r.measured.peak_rss / MIB)
        series.setdefault(label, []).append(point)
    return series


def print_report(
    bench: Bench,
    notes: list[str],
    targets: list[str],
    infos: list[maketree.TreeInfo],
) -> None:
    args = bench.args
    print(markdown_table(MAIN_HEADER, [r.cells() for r in bench.results]))
    print()
    print("Exactness (du-exporter level-0 size vs `du -sB1`):")
    print()
    for line in bench.exactness:
        print(f"- {line}")
    exp = exporter_results(bench)
    if exp:
        print()
        print(
            "Work splitting (split efficiency = CPU of the scan workers ÷ "
            "(scan s x procs); scan s is the exporter's own "
            "`du_exporter_scan_duration_seconds`; parent busy = CPU of "
            "the parent process (SQLite writer, dispatcher, result "
            "unpickling) ÷ the time the worker pool was up, 1.00 = one "
            "core saturated):"
        )
        print()
        print(markdown_table(SPLIT_HEADER, [r.split_cells() for r in exp]))
        print()
        print(
            "Memory (peak of the summed RSS of all processes; per-process "
            "peaks are `VmHWM`):"
        )
        print()
        print(markdown_table(MEMORY_HEADER, memory_rows(bench)))
    if args.batch_sizes and bench.batch_rows:
        print()
        big = max(infos, key=lambda i: i.entries)
        print(f"Batch-size sweep ({big.path}, {big.entries:,} entries):")
        print()
        print(markdown_table(BATCH_HEADER, bench.batch_rows))
    if bench.iops:
        print()
        print(
            "I/O budget (`--max-iops`; ops = entries + directories read, "
            "from the exporter's `du_exporter_scan_entries` and level-0 "
            "`node_disk_usage_directory_count` + 1; ops/s (scan) divides "
            "by `du_exporter_scan_duration_seconds`, ops/s (wall) by the "
            "process's wall time; slowdown is wall ÷ unlimited wall):"
        )
        print()
        rows = []
        unlimited: IopsResult | None = None
        for i in bench.iops:
            if i.budget == 0:
                unlimited = i
            rows.append(i.cells(unlimited))
        print(markdown_table(IOPS_HEADER, rows))
    print()
    print("Trees:")
    print()
    print(markdown_table(TREE_HEADER, tree_rows(bench)))
    if targets:
        print()
        print("Targets (issue 3):")
        print()
        for line in targets:
            print(f"- {line}")
    print()
    for note in notes:
        print(f"- {note}")


def source_note(python: str) -> str:
    """Which du-exporter source was measured: git commit, dirty or not."""
    probe = [python, "-c", "import du_exporter; print(du_exporter.__file__)"]
    done = subprocess.run(probe, capture_output=True, text=True, check=False)
    package = Path(done.stdout.strip() or ".").parent
    head = _version(
        ["git", "-C", str(package), "rev-parse", "--short", "HEAD"]
    )
    if head == "?" or not re.fullmatch(r"[0-9a-f]{4,40}", head):
        return f"du-exporter source: {package} (not a git checkout)"
    status = subprocess.run(
        ["git", "-C", str(package), "status", "--porcelain", "--", "."],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    dirty = " with uncommitted changes" if status.strip() else ""
    return f"du-exporter source: commit {head}{dirty} ({package})"


def machine_notes(
    bench: Bench, load_at_start: str, cold_note: str
) -> list[str]:
    args = bench.args
    version_argv = [args.python, "-m", "du_exporter", "--version"]
    exporter_version = _version(version_argv)
    env = exporter_env(args.workdir)
    measure(version_argv, env=env)  # fills the byte-code cache
    startup = measure(version_argv, env=env)
    notes = [
        (
            f"{os.cpu_count()} CPUs, {_version(['uname', '-sr'])}, "
            f"Python {platform.python_version()}, "
            f"{_version(['du', '--version'])}, {exporter_version}"
        ),
        (
            f"{cold_note}; wall / du is relative to `du -sB1` on the "
            f"same tree; {args.pick}-wall run of {args.repeat}; "
            f"--dir-level {args.dir_level}"
        ),
        (
            "du-exporter wall times include interpreter start-up and "
            f"imports: `du-exporter --version` takes {startup.wall:.3f} s, "
            f"{startup.peak_rss / MIB:.1f} MiB (warm)"
        ),
    ]
    if bench.cold:
        cold = measure(version_argv, env=env, prepare=bench.prepare)
        notes.append(
            f"cold start-up (caches dropped): `du-exporter --version` takes "
            f"{cold.wall:.3f} s"
        )
    reported = [r.measured for r in bench.results if r.measured is not None]
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
    notes.append(source_note(args.python))
    if bench.gdu is None:
        notes.append("gdu: not on PATH, not measured")
    return notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("du") is None:
        log("GNU du is not on PATH")
        return 1
    args.workdir = args.workdir.absolute()
    run_dir = args.workdir / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    gdu = shutil.which("gdu")
    if gdu is None:
        log("gdu is not on PATH: skipped")
    bench = Bench(args, run_dir, gdu)
    cold_note = "warm page cache (one `du -s` before the timed runs)"
    if args.cold:
        problem = drop_caches()
        if problem is None:
            bench.cold = True
            cold_note = (
                "cold: `sync; echo 3 > /proc/sys/vm/drop_caches` before "
                "every timed run (page cache, dentries and inodes dropped)"
            )
        else:
            log(f"--cold: {problem}; running warm")
            cold_note = f"--cold: dropping caches {problem}; ran warm"

    infos = [
        (
            build(args, n, shape, empty=args.empty_files),
            shape_label(args, shape),
        )
        for shape in args.shape
        for n in args.entries
    ]
    iops_info = None
    if args.iops:
        iops_info = build(args, args.iops_entries, "balanced", empty=False)

    # Fill the byte-code cache before anything is timed.
    subprocess.run(
        [args.python, "-m", "du_exporter", "--version"],
        env=exporter_env(args.workdir),
        capture_output=True,
        check=False,
    )
    load_at_start = _loadavg()
    for info, shape in infos:
        bench.tree(info, shape)
    first = [i for i, s in infos if s == shape_label(args, args.shape[0])]
    if args.batch_sizes:
        bench.batch_sweep(
            max(first, key=lambda i: i.entries), args.batch_sizes
        )
    if iops_info is not None:
        bench.iops_test(iops_info, args.iops)

    notes = machine_notes(bench, load_at_start, cold_note)
    print_report(bench, notes, target_lines(bench), first)
    if args.chart is not None:
        import scan_chart  # noqa: PLC0415 - needs matplotlib, only here

        title = (
            f"du-exporter vs du ({shape_label(args, args.shape[0])} trees, dir-level "
            f"{args.dir_level}, {cold_note.split(' (')[0].split(';')[0]})"
        )
        series = chart_series(bench)
        scan_chart.draw(args.chart, series, title)
        data = args.chart.with_suffix(".json")
        scan_chart.save(data, series, title)
        log(f"chart written to {args.chart} (data: {data})")
    return 0 if bench.ok else 1


if __name__ == "__main__":
    sys.exit(main())
