"""Load benchmark of ``/metrics``: concurrent Prometheus-like scrapers.

For each ``--series N`` a tree with about N/4 exported directories is
built (cached) under ``--workdir``: ``A x B`` directories at level 2,
one small file in each.  Every exported directory gives four directory
series (bytes, file count, directory count, latest mtime).

Then, per series count:

* a **cache run**: the exporter scans once (``--scan-interval-minutes
  0``), and one client scrapes the same generation repeatedly, so the
  first scrape (the directory families are rendered: a cache miss) can
  be compared with the following ones (cache hits);
* per ``--clients C`` a **load run**: the real exporter runs as a
  subprocess and scans back to back (``--scan-interval-minutes
  0.001``) while a mutator thread keeps changing file sizes, so
  consecutive generations differ; C scraper threads (spread over
  ``--client-procs`` processes, so the client is not GIL-bound) scrape
  for ``--seconds``, each with Prometheus' own headers, one request per
  connection, and record the latency to the full body.

Afterwards (with the exporter stopped, so it does not compete for CPU)
the saved responses are checked in a process pool: gunzip, parse with
prometheus_client's parser, exactly one ``du_exporter_scan_generation``
per root, every directory present, and ``node_disk_usage_bytes`` of the
root and of each level-1 directory equal to its own blocks plus the sum
over its children -- which holds within one generation and breaks when
two generations are mixed, because the mutator changes sizes.

Stdout gets Markdown only (tables, targets, notes); progress goes to
stderr.  Exit status: 0 when every request succeeded and every checked
response was consistent, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import zlib

from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from bench_scan import (
    CLK_TCK,
    MIB,
    TreeSampler,
    clean_env,
    log,
    markdown_table,
)
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import (
    text_string_to_metric_families as text_families,
)


#: What Prometheus 2.x/3.x sends (``scrape_protocols`` default order).
ACCEPT = (
    "application/openmetrics-text;version=1.0.0,"
    "application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
REQUEST_TIMEOUT = 30.0
KIB = 1024
DIR_FAMILIES = (
    "node_disk_usage_bytes",
    "node_disk_usage_file_count",
    "node_disk_usage_directory_count",
    "node_disk_usage_latest_mtime_seconds",
)
GEN_FAMILY = "du_exporter_scan_generation"
TARGET_P99_MS = 50.0
TARGET_SERIES = 100_000
TARGET_CLIENTS = 8
TARGET_CLEAN_CLIENTS = 50
AFTER_SCAN = 2.0  # seconds after a scan completed that count as "after"


# --------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    path: Path
    width: int  # directories at level 1
    depth2: int  # directories in each level-1 directory
    files: list[Path]  # one per level-2 directory: what the mutator changes

    @property
    def dirs(self) -> int:
        """Exported directories (dir-level 2), the root included."""
        return 1 + self.width + self.width * self.depth2

    def own_blocks(self) -> dict[str, int]:
        """Own st_blocks x 512 of the root and the level-1 directories.

        Constant during a run: the mutator changes file sizes only, it
        never adds or removes entries.
        """
        own = {str(self.path): self.path.stat().st_blocks * 512}
        for i in range(self.width):
            d = self.path / _l1(i)
            own[str(d)] = d.stat().st_blocks * 512
        return own


def _l1(i: int) -> str:
    return f"d{i:03d}"


def _l2(j: int) -> str:
    return f"e{j:03d}"


def tree_shape(series: int) -> tuple[int, int]:
    """(A, B) with A x B ~ series / 4 level-2 directories."""
    leaves = max(1, math.ceil(series / len(DIR_FAMILIES)))
    width = math.ceil(math.sqrt(leaves))
    return width, math.ceil(leaves / width)


def build_tree(workdir: Path, series: int) -> Tree:
    """Build (or reuse) ``workdir/tree-N``; the marker lies outside it."""
    width, depth2 = tree_shape(series)
    dest = workdir / f"tree-{series}"
    marker = workdir / f"tree-{series}.json"
    shape = {"width": width, "depth2": depth2, "version": 1}
    files = [
        dest / _l1(i) / _l2(j) / "data"
        for i in range(width)
        for j in range(depth2)
    ]
    with contextlib.suppress(OSError, ValueError):
        if json.loads(marker.read_text()) == shape:
            log(f"{dest}: cached ({width} x {depth2} level-2 directories)")
            return Tree(dest, width, depth2, files)
    started = time.perf_counter()
    marker.unlink(missing_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    for f in files:
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x" * 1000)
    marker.write_text(json.dumps(shape))
    log(
        f"{dest}: built {width} x {depth2} level-2 directories in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return Tree(dest, width, depth2, files)


class Mutator:
    """Keeps changing file sizes so that consecutive scans differ.

    Appends 4 KiB (one more block) to a random file, or truncates one
    that reached 64 KiB; ``rate`` changes per second.
    """

    def __init__(self, files: list[Path], rate: float, seed: int = 0) -> None:
        self.files = files
        self.rate = rate
        self.rng = random.Random(seed)  # noqa: S311 - not cryptography
        self.changes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        if self.rate > 0:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        tick = 0.02
        owed = 0.0
        block = b"m" * 4096
        while not self._stop.wait(tick):
            owed += self.rate * tick
            while owed >= 1:
                owed -= 1
                f = self.rng.choice(self.files)
                if f.stat().st_size >= 64 * KIB:
                    os.truncate(f, 0)
                else:
                    with f.open("ab") as out:
                        out.write(block)
                self.changes += 1


# --------------------------------------------------------------------------
# The exporter
# --------------------------------------------------------------------------


class Exporter:
    """``python -m du_exporter`` in mode http, its JSON log followed."""

    def __init__(
        self,
        python: str,
        tree: Path,
        run_dir: Path,
        interval_minutes: float,
        max_procs: int,
    ) -> None:
        db = run_dir / "scrape.db"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        self.db = db
        argv = [
            python,
            "-m",
            "du_exporter",
            "--analyzed-path",
            str(tree),
            "--dir-level",
            "2",
            "--bind-address",
            "127.0.0.1:0",
            "--db-path",
            str(db),
            "--scan-interval-minutes",
            f"{interval_minutes:g}",
            "--log-format",
            "json",
            "--max-procs",
            str(max_procs),
        ]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=clean_env(),
        )
        self.url: str | None = None
        #: (monotonic time, seconds) of every scan_completed event
        self.scans: list[tuple[float, float]] = []
        #: (monotonic time, event) of every warning or error logged
        self.problems: list[tuple[float, str]] = []
        self.tail: list[str] = []
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail = [*self.tail[-19:], line]
            try:
                event = json.loads(line)
            except ValueError:
                continue
            name = event.get("event")
            if name == "listening":
                self.url = str(event["url"])
                self._listening.set()
            elif name == "scan_completed":
                seconds = float(event.get("seconds", math.nan))
                self.scans.append((time.monotonic(), seconds))
            if event.get("level") in {"warning", "error", "critical"}:
                self.problems.append((time.monotonic(), str(name)))
        self._listening.set()  # exited: wake up a waiter

    def wait_ready(self, timeout: float = 600.0) -> str:
        """The base URL once ``/-/ready`` answers 200 (the first scan)."""
        deadline = time.monotonic() + timeout
        self._listening.wait(timeout)
        if self.url is None:
            tail = "\n".join(self.tail[-15:])
            msg = f"the exporter did not start:\n{tail}"
            raise RuntimeError(msg)
        host, port = _host_port(self.url)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = "the exporter exited:\n" + "\n".join(self.tail[-15:])
                raise RuntimeError(msg)
            with contextlib.suppress(OSError):
                if _get(host, port, "/-/ready", {})[0] == 200:
                    break
            time.sleep(0.1)
        else:
            msg = f"the exporter was not ready within {timeout:.0f} s"
            raise RuntimeError(msg)
        while not self.scans and time.monotonic() < deadline:
            time.sleep(0.01)  # the scan_completed line is on its way
        return self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(5)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)


# --------------------------------------------------------------------------
# HTTP client (raw sockets: cheap, exact timing, nothing hidden)
# --------------------------------------------------------------------------


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class HTTPError(Exception):
    pass


def _get(
    host: str, port: int, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """One GET on a new connection: status, headers (lower case), body.

    Reads exactly Content-Length bytes (Prometheus would keep the
    connection alive if the server allowed it; this one is HTTP/1.0).
    """
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((host, port), timeout=REQUEST_TIMEOUT) as s:
        s.sendall(request)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                msg = "connection closed before the headers"
                raise HTTPError(msg)
            buf += chunk
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        hdrs = {}
        for h in header_lines:
            name, _, value = h.partition(":")
            hdrs[name.strip().lower()] = value.strip()
        length = int(hdrs.get("content-length", "-1"))
        body = bytearray(rest)
        while length < 0 or len(body) < length:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            body += chunk
    if 0 <= length != len(body):
        msg = f"short body: {len(body)} of {length} bytes"
        raise HTTPError(msg)
    return status, hdrs, bytes(body)


PROMETHEUS_HEADERS = {
    "User-Agent": "Prometheus/3.5.0",
    "Accept": ACCEPT,
    "Accept-Encoding": "gzip",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}


@dataclass
class Sample:
    """One request: latency to the full body, or what went wrong."""

    at: float  # time.monotonic() at the start (one clock for all processes)
    latency: float  # seconds
    size: int  # body bytes as sent (gzipped)
    error: str | None = None


@dataclass
class ClientResult:
    samples: list[Sample]
    cpu: float  # user + sys seconds of this client process
    wall: float


def _scraper(
    host: str,
    port: int,
    deadline: float,
    check_every: int,
    spool: Path,
    tag: str,
    out: list[Sample],
) -> None:
    n = 0
    while time.perf_counter() < deadline:
        at = time.monotonic()
        started = time.perf_counter()
        try:
            status, hdrs, body = _get(
                host, port, "/metrics", PROMETHEUS_HEADERS
            )
        except (OSError, HTTPError, ValueError, IndexError) as e:
            out.append(
                Sample(at, time.perf_counter() - started, 0, type(e).__name__)
            )
            time.sleep(0.01)  # a refused connection fails at once: no spin
            continue
        latency = time.perf_counter() - started
        if status != 200:
            out.append(Sample(at, latency, len(body), f"HTTP {status}"))
            continue
        if hdrs.get("content-encoding") != "gzip":
            out.append(Sample(at, latency, len(body), "not gzipped"))
            continue
        out.append(Sample(at, latency, len(body)))
        if n % check_every == 0:
            name = spool / f"{tag}-{n}.gz"
            ctype = hdrs.get("content-type", "")
            name.write_bytes(ctype.encode() + b"\n" + body)
        n += 1


def client_process(
    url: str,
    threads: int,
    seconds: float,
    check_every: int,
    spool: str,
    tag: str,
    barrier: Barrier,
    results: Any,
) -> None:
    """A client process: ``threads`` scrapers, started by ``barrier``."""
    host, port = _host_port(url)
    samples: list[list[Sample]] = [[] for _ in range(threads)]
    barrier.wait()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    deadline = started + seconds
    workers = [
        threading.Thread(
            target=_scraper,
            args=(
                host,
                port,
                deadline,
                check_every,
                Path(spool),
                f"{tag}.{i}",
                samples[i],
            ),
        )
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    results.put(ClientResult([s for per in samples for s in per], cpu, wall))


# --------------------------------------------------------------------------
# Consistency check (runs in a process pool, after the load)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """What one piece of a response says, parsed."""

    families: frozenset[str]
    generations: dict[str, list[float]]  # root path -> values
    sizes: dict[str, float]  # path -> node_disk_usage_bytes
    dir_series: Counter[str]  # directory family -> samples
    duplicates: int


@dataclass(frozen=True)
class Verdict:
    generation: int | None
    mixed: str | None  # what did not add up
    invalid: str | None  # unparsable or incomplete
    root_size: float | None = None


_CHECK: dict[str, Any] = {}
_MEMO: dict[bytes, Part] = {}


def _init_checker(own: dict[str, int], root: str, dirs: int) -> None:
    with contextlib.suppress(OSError):
        os.nice(5)
    _CHECK.update(own=own, root=root, dirs=dirs)


def _gzip_members(data: bytes) -> list[bytes]:
    """Each gzip member decompressed (their concatenation = gunzip)."""
    out = []
    while data:
        d = zlib.decompressobj(wbits=31)
        out.append(d.decompress(data) + d.flush())
        if not d.eof:
            msg = "truncated gzip member"
            raise ValueError(msg)
        data = d.unused_data
    return out


_SAMPLE_LINE = re.compile(
    rf"^({'|'.join((*DIR_FAMILIES, GEN_FAMILY))})\{{", re.MULTILINE
)


def _parse(text: str, openmetrics: bool) -> Part:
    parse = openmetrics_families if openmetrics else text_families
    families: set[str] = set()
    gens: dict[str, list[float]] = {}
    sizes: dict[str, float] = {}
    parsed: Counter[str] = Counter()
    for fam in parse(text):
        families.add(fam.name)
        parsed[fam.name] += len(fam.samples)
        if fam.name == GEN_FAMILY:
            for s in fam.samples:
                gens.setdefault(s.labels.get("path", ""), []).append(s.value)
        elif fam.name == "node_disk_usage_bytes":
            sizes.update((s.labels["path"], s.value) for s in fam.samples)
    # The parsers keep one of two samples with the same labels and drop
    # the other silently: count the sample lines themselves.
    lines = Counter(_SAMPLE_LINE.findall(text))
    duplicates = (lines - parsed).total()
    dir_series = Counter({f: parsed[f] for f in DIR_FAMILIES})
    return Part(frozenset(families), gens, sizes, dir_series, duplicates)


def _merge(a: Part, b: Part) -> Part:
    gens = {k: list(v) for k, v in a.generations.items()}
    for k, v in b.generations.items():
        gens.setdefault(k, []).extend(v)
    # A family in both halves: the concatenation is not valid exposition.
    clash = len(a.families & b.families)
    return Part(
        a.families | b.families,
        gens,
        {**a.sizes, **b.sizes},
        a.dir_series + b.dir_series,
        a.duplicates + b.duplicates + clash,
    )


def _judge(part: Part) -> Verdict:
    root: str = _CHECK["root"]
    own: dict[str, int] = _CHECK["own"]
    gens = part.generations.get(root, [])
    if len(gens) != 1 or part.duplicates:
        # Two copies of a series: most likely two generations in a row.
        what = f"{len(gens)} generation values, {part.duplicates} duplicates"
        return Verdict(None, what, None)
    gen = int(gens[0])
    want = _CHECK["dirs"]
    missing = [f for f in DIR_FAMILIES if part.dir_series[f] != want]
    if missing:
        got = ", ".join(f"{f}={part.dir_series[f]}" for f in missing)
        return Verdict(gen, None, f"want {want} series per family: {got}")
    children: dict[str, float] = dict.fromkeys(own, 0.0)
    for path, value in part.sizes.items():
        parent = path.rpartition("/")[0]
        if parent in children:
            children[parent] += value
    for path, blocks in own.items():
        total = blocks + children[path]
        if part.sizes.get(path) != total:
            return Verdict(
                gen,
                f"{path}: {part.sizes.get(path)} B, but own {blocks} + "
                f"children {children[path]:.0f} = {total:.0f}",
                None,
            )
    return Verdict(gen, None, None, part.sizes.get(root))


def check_response(path: str) -> tuple[Verdict, int]:
    """Verdict on one spooled response, and its uncompressed size.

    The directory families come in the first gzip member; the same
    bytes always parse to the same result, so that part is parsed once
    per distinct content (one generation) and remembered. The rest (the
    fresh self metrics) is parsed every time, and both are combined.
    """
    raw = Path(path).read_bytes()
    Path(path).unlink()
    ctype, _, body = raw.partition(b"\n")
    openmetrics = ctype.startswith(b"application/openmetrics-text")
    try:
        members = _gzip_members(body)
        first, rest = members[0], b"".join(members[1:])
        key = hashlib.sha256(first).digest()
        if key not in _MEMO:
            text = first.decode()
            if openmetrics and rest:
                text += "# EOF\n"  # parse the cached half on its own
            _MEMO[key] = _parse(text, openmetrics)
        part = _MEMO[key]
        if rest:
            tail = _parse(rest.decode(), openmetrics)
            part = _merge(part, tail)
    except (ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
        return Verdict(None, None, f"{type(e).__name__}: {e}"[:200]), 0
    return _judge(part), len(first) + len(rest)


# --------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------


def _loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class LoadRun:
    series: int
    clients: int
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    client_wall: float = 0.0
    exporter_cpu: float = 0.0  # seconds, whole tree, during the window
    exporter_main_cpu: float = 0.0  # the server/writer process alone
    exporter_rss: int = 0  # peak of the summed RSS, bytes
    #: durations of the scans that completed during the window
    scan_seconds: list[float] = field(default_factory=list)
    scan_done: list[float] = field(default_factory=list)  # monotonic
    idle_scan: float = math.nan  # the first scan, before any scrape
    mutations: int = 0
    verdicts: list[Verdict] = field(default_factory=list)
    text_bytes: list[int] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)  # in the window
    load: str = "?"

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    @property
    def errors(self) -> Counter[str]:
        return Counter(s.error for s in self.samples if s.error is not None)

    @property
    def mislabelled(self) -> int:
        """Responses whose root size is not the one most responses of
        the same generation have: rows of another generation under this
        generation's id (each generation's rows never change)."""
        by_gen: dict[int, Counter[float]] = {}
        for v in self.verdicts:
            if v.generation is not None and v.root_size is not None:
                by_gen.setdefault(v.generation, Counter())[v.root_size] += 1
        return sum(c.total() - c.most_common(1)[0][1] for c in by_gen.values())

    def errors_after_scans(self, seconds: float = AFTER_SCAN) -> int:
        """Errors of requests started within ``seconds`` after a scan
        completed (while the new generation is being rendered)."""
        return sum(
            any(0 <= s.at - t <= seconds for t in self.scan_done)
            for s in self.samples
            if s.error is not None
        )

    @property
    def mixed(self) -> int:
        inconsistent = sum(v.mixed is not None for v in self.verdicts)
        return inconsistent + self.mislabelled

    @property
    def invalid(self) -> int:
        return sum(v.invalid is not None for v in self.verdicts)

    def cells(self) -> list[str]:
        lat = sorted(s.latency * 1000 for s in self.ok)
        sizes = [s.size for s in self.ok]
        gens = {
            v.generation for v in self.verdicts if v.generation is not None
        }
        wall = self.client_wall or self.seconds
        return [
            f"{self.series:,}",
            str(self.clients),
            f"{len(self.samples):,}",
            f"{len(lat) / wall:,.1f}",
            *(f"{percentile(lat, q):,.1f}" for q in (50, 90, 99)),
            f"{lat[-1]:,.1f}" if lat else "-",
            f"{sum(self.errors.values()):,}",
            f"{self.mixed} ({len(self.verdicts):,})",
            f"{len(gens)}",
            f"{len(self.scan_seconds)}",
            f"{statistics.median(sizes) / KIB:,.1f}" if sizes else "-",
            f"{self.exporter_cpu / wall:.2f}",
            f"{self.exporter_rss / MIB:,.0f}",
            f"{sum(self.client_cpu) / wall:.2f}",
        ]


LOAD_HEADER = [
    "series",
    "clients",
    "requests",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "errors",
    "mixed (checked)",
    "generations seen",
    "scans done",
    "response gzip KiB",
    "exporter CPU cores",
    "exporter peak RSS MiB",
    "client CPU cores",
]


def _tree_cpu(sampler: TreeSampler) -> dict[int, int]:
    sampler.sample()
    return dict(sampler.cpu_ticks)


def load_run(
    args: argparse.Namespace,
    tree: Tree,
    series: int,
    clients: int,
    run_dir: Path,
) -> LoadRun:
    run = LoadRun(series, clients, args.seconds)
    check_every = args.check_every or (1 if series <= 10_000 else 10)
    spool = run_dir / f"spool-{series}-{clients}"
    shutil.rmtree(spool, ignore_errors=True)
    spool.mkdir(parents=True)
    own = tree.own_blocks()
    exporter = Exporter(args.python, tree.path, run_dir, 0.001, args.max_procs)
    try:
        url = exporter.wait_ready()
        run.idle_scan = exporter.scans[0][1] if exporter.scans else math.nan
        log(
            f"{series:,} series, {clients} clients: exporter at {url}, "
            f"first scan (no load) {run.idle_scan:.1f} s"
        )
        # One scrape renders the first generation, so that the cache
        # misses in the window are those of the scans completed in it.
        host, port = _host_port(url)
        _timed(host, port, PROMETHEUS_HEADERS)
        with Mutator(tree.files, args.mutations) as mutator:
            _drive(args, run, exporter, url, clients, check_every, spool)
            run.mutations = mutator.changes
        log(f"  {run.mutations:,} file size changes")
    finally:
        exporter.stop()
    spooled = sorted(str(p) for p in spool.iterdir())
    log(f"checking {len(spooled):,} responses (every {check_every})")
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=os.cpu_count() or 1,
        mp_context=ctx,
        initializer=_init_checker,
        initargs=(own, str(tree.path), tree.dirs),
    ) as pool:
        for verdict, size in pool.map(check_response, spooled, chunksize=8):
            run.verdicts.append(verdict)
            if size:
                run.text_bytes.append(size)
    shutil.rmtree(spool, ignore_errors=True)
    log(f"checked in {time.perf_counter() - started:.1f} s")
    for v in run.verdicts:
        if v.mixed or v.invalid:
            log(f"  generation {v.generation}: {v.mixed or v.invalid}")
    return run


def _drive(
    args: argparse.Namespace,
    run: LoadRun,
    exporter: Exporter,
    url: str,
    clients: int,
    check_every: int,
    spool: Path,
) -> None:
    """Start the client processes together; measure the exporter."""
    procs = max(1, min(args.client_procs, clients))
    per = [clients // procs + (i < clients % procs) for i in range(procs)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=client_process,
            args=(
                url,
                n,
                args.seconds,
                check_every,
                str(spool),
                f"c{i}",
                barrier,
                results,
            ),
        )
        for i, n in enumerate(per)
    ]
    for w in workers:
        w.start()
    sampler = TreeSampler(exporter.proc.pid)
    run.load = _loadavg()
    barrier.wait(timeout=120)
    spy = _profile(args, exporter.proc.pid, run)
    started = time.monotonic()
    before = _tree_cpu(sampler)
    sampler.peak_rss = 0
    sampler.start()
    got = [
        results.get(timeout=args.seconds + 3 * REQUEST_TIMEOUT)
        for _ in workers
    ]
    sampler.stop()
    after = _tree_cpu(sampler)
    ended = time.monotonic()
    if spy is not None:
        spy.wait()
    for w in workers:
        w.join()
    pid = exporter.proc.pid
    run.exporter_cpu = (
        sum(t - before.get(p, 0) for p, t in after.items()) / CLK_TCK
    )
    run.exporter_main_cpu = (after.get(pid, 0) - before.get(pid, 0)) / CLK_TCK
    run.exporter_rss = sampler.peak_rss
    window = [(t, s) for t, s in exporter.scans if started <= t <= ended]
    run.scan_done = [t for t, _ in window]
    run.scan_seconds = [s for _, s in window]
    run.problems = Counter(
        name for t, name in exporter.problems if started <= t <= ended
    )
    run.client_wall = max(r.wall for r in got)
    for r in got:
        run.samples.extend(r.samples)
        run.client_cpu.append(r.cpu)
    log(
        f"  {len(run.samples):,} requests, {sum(run.errors.values())} errors, "
        f"{len(run.scan_seconds)} scans completed, exporter CPU {run.exporter_cpu:.1f} s "
        f"(server/writer process {run.exporter_main_cpu:.1f} s), client CPU "
        + ", ".join(f"{c:.1f}" for c in run.client_cpu)
        + f" s in {procs} processes x {per[0]} threads; load {run.load}"
    )


def _profile(
    args: argparse.Namespace, pid: int, run: LoadRun
) -> subprocess.Popen[bytes] | None:
    """With --profile: py-spy samples the exporter's threads that hold
    the GIL during the window (raw collapsed stacks)."""
    if not args.profile:
        return None
    spy = shutil.which("py-spy") or str(Path(args.python).parent / "py-spy")
    out = args.workdir.absolute() / f"profile-{run.series}-{run.clients}.txt"
    log(f"  profiling the exporter into {out}")
    argv = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--gil",
        "--threads",
        "--nonblocking",
        "--rate",
        "200",
        "--format",
        "raw",
        "--duration",
        str(math.ceil(run.seconds)),
        "--output",
        str(out),
    ]
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@dataclass
class CacheRun:
    series: int
    miss: float
    hits: list[float]
    size: int
    plain_miss: float
    plain_hits: list[float]
    plain_size: int

    def cells(self) -> list[str]:
        hits = sorted(h * 1000 for h in self.hits)
        plain = sorted(h * 1000 for h in self.plain_hits)
        return [
            f"{self.series:,}",
            f"{self.miss * 1000:,.1f}",
            f"{statistics.median(hits):,.1f}",
            f"{hits[-1]:,.1f}",
            f"{self.size / KIB:,.1f}",
            f"{self.plain_miss * 1000:,.1f}",
            f"{statistics.median(plain):,.1f}",
            f"{self.plain_size / KIB:,.1f}",
        ]


CACHE_HEADER = [
    "series",
    "first scrape (miss) ms",
    "next scrapes (hit) p50 ms",
    "hit max ms",
    "gzip KiB",
    "plain text miss ms",
    "plain text hit p50 ms",
    "plain KiB",
]


def _timed(host: str, port: int, headers: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    status, _hdrs, body = _get(host, port, "/metrics", headers)
    elapsed = time.perf_counter() - started
    if status != 200:
        msg = f"/metrics answered {status}"
        raise HTTPError(msg)
    return elapsed, len(body)


def cache_run(
    args: argparse.Namespace, tree: Tree, series: int, run_dir: Path
) -> CacheRun:
    """One generation (no rescans); the first scrape renders, then hits.

    Prometheus' headers first (OpenMetrics, gzip), then a plain
    ``text/plain`` scrape without gzip, which is a separate cache entry.
    """
    exporter = Exporter(args.python, tree.path, run_dir, 0, args.max_procs)
    try:
        host, port = _host_port(exporter.wait_ready())
        time.sleep(1.0)  # let the scan's last writes settle
        miss, size = _timed(host, port, PROMETHEUS_HEADERS)
        hits = [_timed(host, port, PROMETHEUS_HEADERS)[0] for _ in range(20)]
        plain_headers = {"Accept": "text/plain"}
        plain_miss, plain_size = _timed(host, port, plain_headers)
        plain = [_timed(host, port, plain_headers)[0] for _ in range(20)]
    finally:
        exporter.stop()
    run = CacheRun(series, miss, hits, size, plain_miss, plain, plain_size)
    log(
        f"{run.series:,} series, cache: miss {miss * 1000:.1f} ms, hits "
        f"p50 {statistics.median(hits) * 1000:.1f} ms"
    )
    return run


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cpus = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        description="Load-test du-exporter's /metrics with concurrent "
        "Prometheus-like scrapers while it rescans."
    )
    parser.add_argument(
        "--series",
        type=int,
        action="append",
        help="directory series (about 4 per directory); repeatable "
        "(default: 10000 and 100000)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        action="append",
        help="concurrent scrapers; repeatable (default: 8 and 50)",
    )
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="per load run (60)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/du-scrape"))
    parser.add_argument(
        "--client-procs",
        type=int,
        default=cpus,
        help=f"processes the scraper threads are spread over ({cpus})",
    )
    parser.add_argument(
        "--check-every",
        type=int,
        help="check every Nth response of each scraper (default: 1 up to "
        "10,000 series, else 10)",
    )
    parser.add_argument(
        "--mutations",
        type=float,
        default=50.0,
        help="file size changes per second during load runs (50)",
    )
    parser.add_argument(
        "--max-procs", type=int, default=1, help="exporter's --max-procs (1)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the exporter with py-spy (--gil) during each load "
        "run into WORKDIR/profile-SERIES-CLIENTS.txt",
    )
    parser.add_argument(
        "--no-cache-run", action="store_true", help="skip the cache runs"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter with du_exporter installed (default: this one)",
    )
    args = parser.parse_args(argv)
    args.series = sorted(set(args.series or [10_000, 100_000]))
    args.clients = sorted(set(args.clients or [8, 50]))
    if min(args.series + args.clients) < 1 or args.seconds <= 0:
        parser.error("--series, --clients and --seconds must be positive")
    if args.client_procs < 1 or (args.check_every or 1) < 1:
        parser.error("--client-procs and --check-every must be >= 1")
    return args


def _targets(runs: list[LoadRun]) -> list[str]:
    out = []
    for r in runs:
        if r.series == TARGET_SERIES and r.clients == TARGET_CLIENTS:
            p99 = percentile(sorted(s.latency * 1000 for s in r.ok), 99)
            verdict = "met" if p99 <= TARGET_P99_MS else "NOT met"
            out.append(
                f"p99 <= {TARGET_P99_MS:.0f} ms at {TARGET_SERIES:,} series "
                f"with {TARGET_CLIENTS} gzip scrapers: {verdict} "
                f"(p99 {p99:,.1f} ms)"
            )
        if r.clients == TARGET_CLEAN_CLIENTS:
            errors = sum(r.errors.values())
            bad = r.mixed + r.invalid
            verdict = "met" if errors == 0 and bad == 0 else "NOT met"
            out.append(
                f"0 errors and 0 mixed generations with "
                f"{TARGET_CLEAN_CLIENTS} scrapers at {r.series:,} series: "
                f"{verdict} ({errors} errors, {r.mixed} mixed and "
                f"{r.invalid} invalid of {len(r.verdicts):,} checked)"
            )
    if not out:
        out.append(
            f"(not measured: the targets are p99 <= {TARGET_P99_MS:.0f} ms "
            f"at {TARGET_SERIES:,} series with {TARGET_CLIENTS} gzip "
            f"scrapers, and 0 errors / 0 mixed with {TARGET_CLEAN_CLIENTS})"
        )
    return out


def _notes(
    args: argparse.Namespace, runs: list[LoadRun], load0: str
) -> list[str]:
    version = subprocess.run(
        [args.python, "-m", "du_exporter", "--version"],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    ).stdout.strip()
    notes = [
        (
            f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
            f"{version}; exporter `--dir-level 2 --max-procs "
            f"{args.max_procs} --scan-interval-minutes 0.001` (scans back "
            f"to back), {args.mutations:g} file size changes per second"
        ),
        (
            f"clients: threads in up to {args.client_procs} processes, raw "
            "sockets, Prometheus' Accept header and `Accept-Encoding: "
            "gzip`, one request per connection; latency = connect to the "
            "last body byte, successful requests only; req/s = successful "
            "requests per second; client CPU cores = CPU of the client "
            "processes / wall"
        ),
        (
            "exporter CPU cores and peak RSS: the exporter and its scan "
            "workers, from /proc every 20 ms, during the timed window"
        ),
    ]
    for r in runs:
        gens = sorted(
            {v.generation for v in r.verdicts if v.generation is not None}
        )
        wall = r.client_wall or r.seconds
        errors = ", ".join(f"{k}: {n}" for k, n in r.errors.most_common())
        if errors:
            share = min(1.0, len(r.scan_done) * AFTER_SCAN / wall)
            errors += (
                f" ({r.errors_after_scans()} of them started within "
                f"{AFTER_SCAN:.0f} s after a scan completed, windows that "
                f"cover {share:.0%} of the run)"
            )
        text = statistics.median(r.text_bytes) / MIB if r.text_bytes else 0
        scans = (
            f"median {_median(r.scan_seconds):.1f} s each"
            if r.scan_seconds
            else "none"
        )
        if len(gens) < 2:
            scans += (
                " -- **only one generation was served: no generation "
                "change was checked**; a longer --seconds gives the scan "
                "time to complete under load"
            )
        notes.append(
            f"{r.series:,} series / {r.clients} clients: "
            f"{len(r.scan_seconds)} scans completed in the window ({scans}; "
            f"the first scan, before the load, took {r.idle_scan:.1f} s), "
            f"{len(gens)} distinct generations in the checked responses "
            f"({', '.join(map(str, gens))}); uncompressed "
            f"{text:.1f} MiB; server/writer process "
            f"{r.exporter_main_cpu / wall:.2f} cores of the exporter's "
            f"{r.exporter_cpu / wall:.2f}; "
            f"errors: {errors or 'none'}; invalid: {r.invalid}; exporter "
            f"warnings: {dict(r.problems) or 'none'}; load average at start "
            f"{r.load}"
        )
    notes.append(
        f"load average (1/5/15 min) before: {load0}, after: {_loadavg()}"
    )
    return notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir: Path = args.workdir.absolute()
    run_dir = workdir / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    load0 = _loadavg()
    runs: list[LoadRun] = []
    caches: list[CacheRun] = []
    for series in args.series:
        tree = build_tree(workdir, series)
        log(
            f"{series:,} series: {tree.dirs:,} exported directories, "
            f"{tree.dirs * len(DIR_FAMILIES):,} directory series"
        )
        if not args.no_cache_run:
            caches.append(cache_run(args, tree, series, run_dir))
        runs.extend(
            load_run(args, tree, series, c, run_dir) for c in args.clients
        )

    print(markdown_table(LOAD_HEADER, [r.cells() for r in runs]))
    print()
    if caches:
        print("Cache (one generation, no rescans, sequential scrapes):")
        print()
        print(markdown_table(CACHE_HEADER, [c.cells() for c in caches]))
        print()
    print("Targets:")
    print()
    for line in _targets(runs):
        print(f"- {line}")
    print()
    for note in _notes(args, runs, load0):
        print(f"- {note}")
    bad = any(r.errors or r.mixed or r.invalid for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
