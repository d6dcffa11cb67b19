"""Scan runs: walk each root with the pool, store each as a generation.

Roots nested inside another configured root are not walked on their
own: the outer walk covers them, and they only decide which directories
get a row and at what level.  Each walked root gets its own generation.
"""

from __future__ import annotations

import os
import stat
import threading
import time

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

import structlog

from du_exporter.config import Config
from du_exporter.errors import ScanAbortedError, ScanError, StoreError
from du_exporter.paths import Walk, display, plan_walks
from du_exporter.scan.model import (
    SIZE_BUCKETS,
    Link,
    Plan,
    Row,
    Unit,
    UnitResult,
    du_blocks,
    saturate,
)
from du_exporter.scan.pool import ScanPool
from du_exporter.scan.status import ScanStatus
from du_exporter.store.writer import Store


@dataclass
class _Totals:
    entries: int = 0
    unreadable: int = 0
    python_dirs: int = 0
    histogram: list[int] = field(
        default_factory=lambda: [0] * (len(SIZE_BUCKETS) + 1)
    )
    histogram_sum: int = 0
    owners: dict[int, list[int]] = field(default_factory=dict)


class _Batch:
    """Buffer rows; write ``size`` of them per transaction."""

    def __init__(self, store: Store, gen_id: int, size: int) -> None:
        self.store, self.gen_id, self.size = store, gen_id, size
        self.units: list[Row] = []
        self.links: list[Link] = []

    def add(self, units: list[Row], links: list[Link]) -> None:
        self.units.extend(units)
        self.links.extend(links)
        if len(self.units) + len(self.links) >= self.size:
            self.flush()

    def flush(self) -> None:
        """Write everything buffered, at most ``size`` rows at a time."""
        units, links, size = self.units, self.links, self.size
        self.units, self.links = [], []
        n = len(units) + len(links)
        for k in range(0, n, size):
            self.store.write_batch(
                self.gen_id,
                units[k:k + size],
                links[max(0, k - len(units)):max(0, k + size - len(units))],
            )


class ScanRunner:
    """Runs scans of every root and stores them."""

    def __init__(
        self,
        config: Config,
        pool: ScanPool,
        store: Store,
        status: ScanStatus,
        on_complete: Callable[[], None] | None = None,
    ) -> None:
        #: Called after each walked root's generation became visible.
        self.on_complete = on_complete
        self.config = config
        self.pool = pool
        self.store = store
        self.status = status
        self.log = structlog.get_logger("du_exporter.scan")

    def scan_all(self, stop: threading.Event) -> bool:
        """Scan every root once; True if every root succeeded."""
        ok = True
        for walk in plan_walks(self.config.roots):
            if stop.is_set():
                break
            ok = self.scan_walk(walk, stop) and ok
        return ok

    def scan_walk(self, walk: Walk, stop: threading.Event) -> bool:
        self.status.started(walk.roots)
        started = time.time()
        label = display(walk.top)
        self.log.info("scan_started", root=label)
        try:
            totals = self._scan(walk, stop)
        except ScanAbortedError:
            self.status.finished(walk.roots, "aborted")
            self.log.warning("scan_aborted", root=label)
            raise
        except (ScanError, StoreError) as e:
            # StoreError: disk full, database locked.  The last complete
            # generation stays served; the next interval tries again.
            self.status.finished(walk.roots, "error", str(e))
            self.log.error("scan_failed", root=label, error=str(e))
            return False
        self.status.finished(walk.roots, "success")
        if self.on_complete is not None:
            self.on_complete()
        self.log.info(
            "scan_completed",
            root=label,
            seconds=round(time.time() - started, 3),
            entries=totals.entries,
            unreadable=totals.unreadable,
            python_dirs=totals.python_dirs,
        )
        return True

    def _top_unit(self, path: bytes) -> tuple[Unit, int]:
        try:
            st = os.stat(path)
        except OSError as e:
            msg = f"root '{display(path)}': {e.strerror}"
            raise ScanError(msg) from None
        if not stat.S_ISDIR(st.st_mode):
            msg = f"root '{display(path)}': not a directory"
            raise ScanError(msg)
        unit = Unit(
            path=path,
            key=b"",
            disk=du_blocks(st.st_blocks) * 512,
            apparent=st.st_size,
            mtime=st.st_mtime,
            linked=self.config.follow_symlinks,
            dev=st.st_dev,
            ino=st.st_ino,
            uid=st.st_uid,
        )
        return unit, st.st_dev

    def _scan(self, walk: Walk, stop: threading.Event) -> _Totals:
        cfg = self.config
        top, dev = self._top_unit(walk.top)
        plan = Plan(
            exports=walk.exports,
            ignore=tuple(os.fsencode(p) for p in cfg.ignore_dirs),
            one_file_system=cfg.one_file_system,
            follow_symlinks=cfg.follow_symlinks,
            root_dev=dev,
            iops=cfg.max_iops / cfg.max_procs,
            engine=cfg.scan_engine,
            threads=cfg.scan_threads,
            owner_usage=cfg.owner_usage,
        )
        self.store.drop_incomplete()  # what a failed earlier attempt left
        gen_id = self.store.begin_generation(walk.top, time.time())
        batch = _Batch(self.store, gen_id, cfg.batch_size)
        totals = _Totals()

        def on_result(res: UnitResult) -> None:
            self._record(walk, res, batch, totals)

        try:
            self.pool.walk(plan, top, on_result, stop)
            batch.flush()
            bounds = [*map(float, SIZE_BUCKETS), float("inf")]
            self.store.complete_generation(
                gen_id,
                finished=time.time(),
                entries=totals.entries,
                unreadable=totals.unreadable,
                histogram=list(zip(bounds, totals.histogram, strict=True)),
                histogram_sum=totals.histogram_sum,
                owners=totals.owners if cfg.owner_usage else None,
                keep=cfg.keep_generations,
            )
        except BaseException:
            with suppress(StoreError):  # a full disk: dropped next time
                self.store.fail_generation(gen_id)
            raise
        return totals

    def _record(
        self,
        walk: Walk,
        res: UnitResult,
        batch: _Batch,
        totals: _Totals,
    ) -> None:
        batch.add(res.rows, res.links)
        totals.entries += res.entries
        totals.unreadable += res.unreadable
        totals.python_dirs += res.python_dirs
        for i, n in enumerate(res.histogram):
            totals.histogram[i] += n
        totals.histogram_sum += res.histogram_sum
        for owner, (disk, apparent) in res.owners.items():
            sums = totals.owners.setdefault(owner, [0, 0])
            sums[0] = saturate(sums[0] + disk)
            sums[1] = saturate(sums[1] + apparent)
        for path, reason in res.errors:
            self.log.warning("unreadable", path=display(path), error=reason)
        self.status.progress(walk.roots, totals.entries)
