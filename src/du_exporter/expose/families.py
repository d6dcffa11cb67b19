"""The Prometheus collector: the store's latest complete scans, per scrape.

The families are built from one consistent snapshot of the database
(one read transaction); :mod:`du_exporter.expose.exposition` decides
when, and keeps the rendered bytes.  Nothing here starts a scan.
"""

from __future__ import annotations

import math
import platform
import pwd
import time

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)

from du_exporter import __version__
from du_exporter.config import Config
from du_exporter.paths import label_path, plan_walks, root_levels
from du_exporter.scan.status import RESULTS, ScanStatus
from du_exporter.scan.walker import engine_name
from du_exporter.store.reader import Reader
from du_exporter.store.rows import Snapshot


def _bound(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(le)


class UsageCollector:
    """Directory usage and scan health, read from the store per scrape.

    Used whole for the textfile; the HTTP server renders the two halves
    separately (:mod:`du_exporter.exposition`).
    """

    def __init__(
        self,
        reader: Reader,
        status: ScanStatus,
        config: Callable[[], Config],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.status = status
        self.config = config
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        cfg = self.config()
        snap = self.reader.snapshot()
        yield from directory_families(cfg, snap)
        yield from self._health(cfg, snap)


    def _health(self, cfg: Config, snap: Snapshot) -> Iterator[Metric]:
        """What only the live process knows, plus the time since a scan."""
        running = _per_root(
            "du_exporter_scan_in_progress",
            "1 while a scan of the root is running.",
        )
        progress = _per_root(
            "du_exporter_scan_progress_entries",
            "Entries read so far by the running scan of the root.",
        )
        age = _per_root(
            "du_exporter_scan_age_seconds",
            "Seconds since the last completed scan of the root finished.",
        )
        scans = CounterMetricFamily(
            "du_exporter_scans",
            "Scans of the root since start-up, by result.",
            labels=["path", "result"],
        )
        live = self.status.view()
        now = self.clock()
        for walk in plan_walks(cfg.roots):
            gen = snap.generations.get(walk.top)
            for root in walk.roots:
                label = [label_path(root)]
                if gen is not None:
                    age.add_metric(label, max(0.0, now - gen.finished))
                st = live.get(root)
                running.add_metric(label, int(bool(st and st.in_progress)))
                progress.add_metric(label, st.entries if st else 0)
                for result in RESULTS:
                    scans.add_metric([*label, result], st.results[result] if st else 0)
        yield from (running, progress, age, scans)
        yield GaugeMetricFamily(
            "du_exporter_database_size_bytes",
            "Size of the SQLite database file and its write-ahead log.",
            value=self.reader.size_bytes(),
        )
        info = GaugeMetricFamily(
            "du_exporter_build_info",
            "Always 1; the labels say which du-exporter is running.",
            labels=["version", "python_version", "engine"],
        )
        engine = engine_name(cfg.scan_engine)
        info.add_metric([__version__, platform.python_version(), engine], 1)
        yield info


def make_registry(
    collector: UsageCollector, *, process_metrics: bool
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry


class HealthCollector(UsageCollector):
    """Only the live self metrics: cheap, rendered fresh on every scrape."""

    def collect(self) -> Iterator[Metric]:
        cfg = self.config()
        yield from self._health(cfg, self.reader.snapshot(with_rows=False))


def _per_root(name: str, doc: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=["path"])


def user_name(uid: int) -> str:
    """The account name of ``uid``, or the number if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


def _owner_family(cfg: Config, snap: Snapshot) -> Metric:
    owner = GaugeMetricFamily(
        "node_disk_usage_owner_bytes",
        "Usage by owner (file uid) below each walked root, every inode "
        "once; as of the last completed scan.",
        labels=["path", "uid", "user"],
    )
    for walk in plan_walks(cfg.roots):
        gen = snap.generations.get(walk.top)
        for uid, disk, apparent in gen.owners if gen else ():
            value = disk if cfg.size_mode == "disk" else apparent
            owner.add_metric([label_path(walk.top), str(uid), user_name(uid)], value)
    return owner


def generation_families(cfg: Config, snap: Snapshot) -> Iterator[Metric]:
    """Facts of the generations served: cached with the directory rows."""
    fams = (
        _per_root(
            "du_exporter_scan_duration_seconds",
            "Wall time of the last completed scan of the root.",
        ),
        _per_root(
            "du_exporter_last_success_timestamp_seconds",
            "When the last completed scan of the root finished (0: none).",
        ),
        _per_root(
            "du_exporter_scan_entries",
            "Entries read by the last completed scan of the root.",
        ),
        _per_root(
            "du_exporter_scan_unreadable_entries",
            "Entries the last completed scan could not read (permission "
            "denied, vanished); see the warning log for their paths.",
        ),
        _per_root(
            "du_exporter_scan_generation",
            "Id of the complete scan (generation) the directory series of "
            "the root come from (0: none yet); it changes when a new scan "
            "completes.",
        ),
    )
    duration, success, entries, unreadable, generation = fams
    walked = _per_root(
        "du_exporter_walked_root",
        "1 for each root that is walked; a root nested in another is not "
        "(its outer root's walk covers it). Sum node_disk_usage_bytes over "
        "these paths to count every byte once.",
    )
    if cfg.owner_usage:
        yield _owner_family(cfg, snap)
    for walk in plan_walks(cfg.roots):
        walked.add_metric([label_path(walk.top)], 1)
        gen = snap.generations.get(walk.top)
        for root in walk.roots:
            label = [label_path(root)]
            # Every root has every series from start-up: 0 until a scan
            # of it completes.
            success.add_metric(label, gen.finished if gen else 0)
            duration.add_metric(label, gen.finished - gen.started if gen else 0)
            entries.add_metric(label, gen.entries if gen else 0)
            unreadable.add_metric(label, gen.unreadable if gen else 0)
            generation.add_metric(label, gen.id if gen else 0)
    yield from fams
    yield walked


def directory_families(cfg: Config, snap: Snapshot) -> Iterator[Metric]:
    """Everything that is a function of the generations alone."""
    yield from _Usage(cfg, snap).families()
    yield from generation_families(cfg, snap)


@dataclass(frozen=True)
class DirectorySpec:
    """One per-directory family: its name, help, type and store column."""

    name: str
    doc: str
    #: ``gauge`` or ``unknown``.
    kind: str
    column: str


def directory_specs(cfg: Config, *, every: bool = False) -> list[DirectorySpec]:
    """The per-directory families ``cfg`` exports (``every``: also the
    ones it turned off), in exposition order."""
    disk = cfg.size_mode == "disk"
    specs = [
        DirectorySpec(
            "node_disk_usage_bytes",
            f"Disk usage of the directory and everything below it, like "
            f"du ({'du -sB1' if disk else 'du -sb'}); as of the last "
            f"completed scan.",
            "gauge",
            "disk" if disk else "apparent",
        ),
        # The README names these *_count; promtool's linter reserves that suffix
        # for histograms and summaries of every type but untyped, so they
        # are exposed untyped (a gauge in all but the TYPE line).
        DirectorySpec(
            "node_disk_usage_file_count",
            "Non-directory entries below the directory, recursively; as of "
            "the last completed scan.",
            "unknown",
            "files",
        ),
        DirectorySpec(
            "node_disk_usage_directory_count",
            "Directories below the directory, recursively; as of the last "
            "completed scan.",
            "unknown",
            "dirs",
        ),
        DirectorySpec(
            "node_disk_usage_latest_mtime_seconds",
            "Newest modification time in the directory's subtree; as of "
            "the last completed scan.",
            "gauge",
            "mtime",
        ),
    ]
    wanted = (True, cfg.file_count, cfg.dir_count, True)
    return [s for s, on in zip(specs, wanted, strict=True) if every or on]


def histogram_family(cfg: Config, snap: Snapshot) -> Iterator[Metric]:
    """The file-size histogram, if ``cfg`` exports it."""
    if cfg.size_bucket:
        yield _histogram(cfg, snap)


class _Usage:
    def __init__(self, cfg: Config, snap: Snapshot) -> None:
        self.cfg = cfg
        self.snap = snap

    def families(self) -> Iterator[Metric]:
        cfg, snap = self.cfg, self.snap
        labels = ["path", "level"]
        size, files, dirs, mtime = fams = [
            (GaugeMetricFamily if spec.kind == "gauge" else UnknownMetricFamily)(
                spec.name, spec.doc, labels=labels
            )
            for spec in directory_specs(cfg, every=True)
        ]
        levels = root_levels(cfg.roots)
        for row in snap.rows:
            if row.level > levels.get(row.root, -1):
                continue  # from a root or level no longer configured
            value = [label_path(row.path), str(row.level)]
            size.add_metric(
                value, row.disk if cfg.size_mode == "disk" else row.apparent
            )
            files.add_metric(value, row.files)
            dirs.add_metric(value, row.dirs)
            mtime.add_metric(value, row.mtime)
        names = {spec.name for spec in directory_specs(cfg)}
        yield from (f for f in fams if f.name in names)
        yield from histogram_family(cfg, snap)


def _histogram(cfg: Config, snap: Snapshot) -> Metric:
    hist = HistogramMetricFamily(
        "node_disk_usage_file_size_bytes",
        "Sizes (apparent, st_size) of the regular files below each "
        "walked root; as of the last completed scan.",
        labels=["path"],
    )
    for walk in plan_walks(cfg.roots):
        gen = snap.generations.get(walk.top)
        if gen is None or not gen.histogram:
            continue
        counts = accumulate(n for _, n in gen.histogram)
        buckets = [
            (_bound(le), float(n))
            for (le, _), n in zip(gen.histogram, counts, strict=True)
        ]
        hist.add_metric([label_path(walk.top)], buckets, gen.histogram_sum)
    return hist
