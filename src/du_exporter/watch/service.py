"""Watch mode: marks, the dirty directories, updates and publications.

The marks are placed when the watcher starts, before the daemon's first
scan, and stay: a change made while a scan runs is an event too.  Once
a walk's generation is complete, the watcher reads the walk once more
directory by directory (the *baseline*: own sums of every directory,
which the scan does not keep) and then, ``watch-delay-seconds`` after
the first of a batch of events, re-reads the directories the events
named and publishes the changed rows into the served generation.  After
each complete interval scan the baseline is read again, so whatever no
event reports (writes through mmap, allocation at writeback) is
corrected there, as by the scan itself.

Whatever cannot be followed exactly falls back to scanning: a queue
overflow or a plain file's first hard link made from another directory
asks the daemon for a full rescan of the walk; a filesystem that cannot be marked leaves its
walk to interval scans.  Each says so in one warning line.
"""

from __future__ import annotations

import os
import select
import threading
import time

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from du_exporter.config import Config
from du_exporter.errors import StoreError, WatchUnavailableError
from du_exporter.paths import Walk, depth_under, plan_walks
from du_exporter.scan.ignore import Ignore
from du_exporter.scan.model import SIZE_BUCKETS
from du_exporter.store.watchrows import (
    Publication,
    WatchDirRow,
    WatchRow,
    WatchRows,
)
from du_exporter.watch.apply import (
    Change,
    NeedsRescan,
    OneDir,
    Reader,
    baseline,
    update,
)
from du_exporter.watch.fanotify import FanotifyGroup
from du_exporter.watch.state import Dir, Tree
from du_exporter.watch.status import WatchStatus


log = structlog.get_logger("du_exporter.watch")


@dataclass
class _Followed:
    """One walk while it is watched."""

    walk: Walk
    marked: bool = False
    tree: Tree | None = None
    gen: int | None = None
    next_row: int = 0
    #: Waiting for the daemon's rescan (overflow, hard link) to replace
    #: generation ``stale``.
    rescanning: bool = False
    stale: int | None = None
    #: Bumped whenever the tree is lost: work begun before is dropped.
    epoch: int = 0
    #: Events were lost since the last baseline (warned once).
    overflowed: bool = False
    dirty: set[bytes] = field(default_factory=set)
    first_dirty: float | None = None
    in_flight: int = 0


#: The field of a mountinfo line that holds the mount point.
_MOUNT_POINT = 4


def mount_points(top: bytes, mountinfo: bytes) -> list[bytes]:
    """Mount points strictly below ``top`` in ``/proc/self/mountinfo``."""
    prefix = top.rstrip(b"/") + b"/"
    out = []
    for line in mountinfo.splitlines():
        fields = line.split(b" ")
        if len(fields) <= _MOUNT_POINT:
            continue
        point = _unescape(fields[_MOUNT_POINT])
        if point.startswith(prefix):
            out.append(point)
    return sorted(set(out))


def _unescape(field: bytes) -> bytes:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


class Watcher:
    """Follows every walk of ``config`` with one fanotify group."""

    def __init__(
        self,
        config: Config,
        on_publish: Callable[[], None] = lambda: None,
        on_rescan: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        #: Walks to rescan, taken by the daemon (:meth:`take_rescans`).
        self._rescans: list[bytes] = []
        self.on_publish = on_publish
        #: Called when a rescan is asked for (:meth:`take_rescans`).
        self.on_rescan = on_rescan
        self.clock = clock
        walks = plan_walks(config.roots)
        self.walks = {w.top: _Followed(w) for w in walks}
        self.status = WatchStatus({w.top: w.roots for w in walks})
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        #: A subtree was walked whole: read the mount table again.
        self._remount = threading.Event()
        self._thread: threading.Thread | None = None
        self._mounts_thread: threading.Thread | None = None
        self._group: FanotifyGroup | None = None
        db = os.fsencode(os.path.abspath(config.db_path))
        self._quiet_dir = os.path.dirname(db)
        base = os.path.basename(db)
        self._quiet_names = frozenset(
            base + s for s in (b"", b"-wal", b"-shm", b"-journal")
        )

    # --- start and stop -------------------------------------------------

    def start(self) -> None:
        """Place the marks (before any scan) and start the threads."""
        try:
            group = FanotifyGroup(self._on_dirs, self._on_overflow, self._quiet)
        except WatchUnavailableError as e:
            for top in self.walks:
                self._unavailable(top, str(e))
            return
        self._group = group
        for top, f in self.walks.items():
            try:
                for path in self._to_mark(f.walk):
                    group.mark(path)
            except WatchUnavailableError as e:
                self._unavailable(top, str(e))
                continue
            f.marked = True
            self.status.update(top, active=True)
            self._set_pending(f)
        if not any(f.marked for f in self.walks.values()):
            group.close()
            self._group = None
            return
        group.start()
        log.info(
            "watch_started",
            roots=[os.fsdecode(t) for t, f in self.walks.items() if f.marked],
            delay_seconds=self.config.watch_delay_seconds,
        )
        self._thread = threading.Thread(
            target=self._run, name="du-exporter-watch", daemon=True
        )
        self._thread.start()
        self._mounts_thread = threading.Thread(
            target=self._follow_mounts, name="du-exporter-mounts", daemon=True
        )
        self._mounts_thread.start()

    def _to_mark(self, walk: Walk) -> list[bytes]:
        """The walk's top and every walked mount point below it."""
        try:
            with open("/proc/self/mountinfo", "rb") as f:
                info = f.read()
        except OSError:
            info = b""
        return [walk.top, *self._walked_points(walk.top, mount_points(walk.top, info))]

    def _walked_points(self, top: bytes, points: list[bytes]) -> list[bytes]:
        """The mount points of ``points`` the walk of ``top`` enters."""
        if self.config.one_file_system:
            return []  # neither walked nor counted: no mark needed
        ignore = Ignore(tuple(os.fsencode(p) for p in self.config.ignore_dirs))
        return [p for p in points if _walked(ignore, top, p)]

    # --- mounts and unmounts (their own thread) ----------------------------

    def _follow_mounts(self) -> None:
        """Mounts raise no fsnotify event: ``/proc/self/mountinfo`` polls
        POLLPRI when the mount table changes.  A filesystem mounted in a
        walk is marked before the directories around it are read again.
        A directory moved in brings its mount points without changing the
        table: after an update walked a new subtree the table is read
        again, so they are marked, and their unmount is seen."""
        try:
            fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            log.warning("watch_mounts_unavailable", error=e.strerror,
                        fallback="a filesystem mounted later waits for the next scan")
            return
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI | select.POLLERR)
            known = self._mount_table(fd)
            while not self._stop.is_set():
                if not poller.poll(200) and not self._remount.is_set():
                    continue
                self._remount.clear()
                now = self._mount_table(fd)
                self._mounts_changed(known, now)
                known = now
        finally:
            os.close(fd)

    def _mount_table(self, fd: int) -> dict[bytes, set[bytes]]:
        """Every walk's mount points below its top, read from ``fd``."""
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        info = b"".join(chunks)
        return {top: set(mount_points(top, info)) for top in self.walks}

    def _mounts_changed(
        self, known: dict[bytes, set[bytes]], now: dict[bytes, set[bytes]]
    ) -> None:
        group = self._group
        for top, f in self.walks.items():
            changed = known.get(top, set()) ^ now.get(top, set())
            if not f.marked or not changed or group is None:
                continue
            added = sorted(now[top] - known.get(top, set()))
            try:
                for point in self._walked_points(top, added):
                    group.mark(point)
            except WatchUnavailableError as e:
                self._unavailable(top, str(e))
                with self._lock:
                    f.marked = False
                    f.dirty.clear()
                    self._set_pending(f)
                continue
            log.info("watch_mounts_changed", root=os.fsdecode(top),
                     mounted=[os.fsdecode(p) for p in added],
                     unmounted=[os.fsdecode(p) for p in sorted(known[top] - now[top])])
            # The mount point changed identity: its parent's listing says
            # what is there now (walked whole if it is walked at all).
            dirty = {os.path.dirname(p) for p in changed} | changed
            with self._lock:
                f.dirty.update(dirty)
                if f.first_dirty is None:
                    f.first_dirty = self.clock()
                self._set_pending(f)
        self._wake.set()

    def _unavailable(self, top: bytes, reason: str) -> None:
        log.warning(
            "watch_unavailable", root=os.fsdecode(top), reason=reason,
            fallback="interval scans only",
        )
        self.status.update(top, active=False)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if self._mounts_thread is not None:
            self._mounts_thread.join()
        if self._group is not None:
            self._group.close()

    # --- events (the reader thread) --------------------------------------

    def _quiet(self, path: bytes, names: set[bytes]) -> bool:
        """Only the database's own files changed: no publication for that."""
        return path == self._quiet_dir and names <= self._quiet_names

    def _on_dirs(self, dirs: dict[bytes, int]) -> None:
        now = self.clock()
        with self._lock:
            for top, f in self.walks.items():
                prefix = top.rstrip(b"/") + b"/"
                mine = {p: n for p, n in dirs.items()
                        if p == top or p.startswith(prefix)}
                if not mine:
                    continue
                self.status.add(top, events=sum(mine.values()))
                f.dirty.update(mine)
                if f.first_dirty is None:
                    f.first_dirty = now
                self._set_pending(f)
        self._wake.set()

    def _on_overflow(self) -> None:
        with self._lock:
            for top, f in self.walks.items():
                if not f.marked or f.overflowed:
                    continue
                f.overflowed = True
                log.warning(
                    "watch_overflow", root=os.fsdecode(top),
                    reason="the kernel's event queue overflowed",
                    fallback="full rescan",
                )
                self._lose_tree(f, "overflow", active=False)

    def _lose_tree(self, f: _Followed, reason: str, *, active: bool) -> None:
        """Forget the tree and ask for a rescan; called with the lock."""
        f.epoch += 1
        f.stale = f.gen
        f.tree = None
        f.gen = None
        f.dirty.clear()
        f.first_dirty = None
        self.status.rescan(f.walk.top, reason)
        self.status.update(f.walk.top, active=active)
        if not f.rescanning:
            f.rescanning = True
            if reason != "root":
                # A root that vanished waits for the next interval scan
                # (which fails and says so) instead of failing every second.
                self._rescans.append(f.walk.top)
                self.on_rescan()
        self._set_pending(f)

    def _set_pending(self, f: _Followed) -> None:
        waiting = len(f.dirty) + f.in_flight
        if f.tree is None:
            waiting += 1  # the baseline
        self.status.update(f.walk.top, pending=waiting)

    # --- scans (the daemon's thread) ---------------------------------------

    def scan_completed(self) -> None:
        """A walk's generation completed: read its baseline again."""
        self._wake.set()

    def take_rescans(self) -> list[bytes]:
        """Walks whose rescan was asked for since the last call."""
        with self._lock:
            out, self._rescans = self._rescans, []
        return out

    def scan_failed(self, top: bytes) -> None:
        """The rescan asked for did not complete; ask again next round."""
        with self._lock:
            f = self.walks.get(top)
            if f is not None:
                f.rescanning = False

    # --- updates (the watch thread) ------------------------------------------

    def _run(self) -> None:
        try:
            rows = WatchRows(self.config.db_path)
        except StoreError as e:
            for top in self.walks:
                self._unavailable(top, str(e))
            return
        try:
            self._loop(rows)
        finally:
            rows.close()

    def _loop(self, rows: WatchRows) -> None:
        delay = self.config.watch_delay_seconds
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            for f in self.walks.values():
                if self._stop.is_set():
                    return
                if not f.marked:
                    continue
                try:
                    self._step(f, rows, delay)
                except (StoreError, OSError) as e:
                    # Read again from scratch next round; interval scans
                    # keep the numbers right meanwhile.
                    log.error("watch_update_failed", root=os.fsdecode(f.walk.top),
                              error=str(e))
                    with self._lock:
                        f.tree = None
                        self._set_pending(f)
                    self._stop.wait(5)

    def _step(self, f: _Followed, rows: WatchRows, delay: float) -> None:
        served = rows.served(f.walk.top)
        if served is None:
            return  # the first scan has not completed yet
        tree, gen = f.tree, f.gen
        if tree is None or gen != served:
            if f.rescanning and f.stale == served:
                return  # the rescan asked for has not completed yet
            self._baseline(f, rows, served)
            return
        with self._lock:
            due = f.first_dirty is not None and self.clock() - f.first_dirty >= delay
            if not due:
                return
            dirty, f.dirty = f.dirty, set()
            f.first_dirty = None
            f.in_flight = len(dirty)
            epoch = f.epoch
        try:
            change = update(tree, self._reader(f.walk), dirty)
        except NeedsRescan as e:
            self._log_rescan(f, e.reason)
            with self._lock:
                f.in_flight = 0
                if f.epoch == epoch:
                    self._lose_tree(f, e.reason, active=True)
            return
        self.status.add(f.walk.top, entries=change.entries)
        if change.walked:
            self._remount.set()
        self._warn_unreadable(change)
        with self._lock:
            f.in_flight = 0
            lost = f.epoch != epoch  # an overflow meanwhile: a rescan comes
            self._set_pending(f)
        if not lost and (change.changed or change.removed):
            self._publish(f, rows, tree, gen, change, replace=False)

    def _baseline(self, f: _Followed, rows: WatchRows, served: int) -> None:
        with self._lock:
            f.dirty.clear()  # what follows reads everything fresh
            f.first_dirty = None
            f.tree = None
            epoch = f.epoch
        started = time.monotonic()
        try:
            tree, change = baseline(self._reader(f.walk))
        except NeedsRescan as e:
            self._log_rescan(f, e.reason)
            with self._lock:
                self._lose_tree(f, e.reason, active=True)
            return
        self._warn_unreadable(change)
        f.next_row = 0
        if not self._publish(f, rows, tree, served, change, replace=True):
            return
        with self._lock:
            if f.epoch != epoch:
                return  # events were lost while it was read: rescan first
            f.tree, f.gen = tree, served
            f.rescanning = False
            f.overflowed = False
            self.status.update(f.walk.top, active=True)
            self._set_pending(f)
        log.info(
            "watch_baseline", root=os.fsdecode(f.walk.top),
            directories=len(tree.dirs), entries=change.entries,
            seconds=round(time.monotonic() - started, 3),
        )

    def _reader(self, walk: Walk) -> Reader:
        cfg = self.config
        try:
            dev = os.stat(walk.top).st_dev
        except OSError:
            dev = 0
        plan = OneDir(
            exports=walk.exports,
            ignore=tuple(os.fsencode(p) for p in cfg.ignore_dirs),
            one_file_system=cfg.one_file_system,
            follow_symlinks=False,
            root_dev=dev,
            iops=float(cfg.max_iops),
            engine=cfg.scan_engine,
            owner_usage=cfg.owner_usage,
        )
        return Reader(walk, plan)

    def _log_rescan(self, f: _Followed, reason: str) -> None:
        why = {
            "hardlink": "a file got a second name and its first is where no"
                        " event was read",
            "root": "the root itself changed",
        }.get(reason, reason)
        log.info("watch_rescan", root=os.fsdecode(f.walk.top), reason=why)

    def _warn_unreadable(self, change: Change) -> None:
        for path, reason in change.unreadable:
            log.warning("unreadable", path=os.fsdecode(path), error=reason)

    # --- publications --------------------------------------------------------

    def _publish(
        self, f: _Followed, rows: WatchRows, tree: Tree, gen: int,
        change: Change, *, replace: bool,
    ) -> bool:
        walk = f.walk
        if replace:
            f.next_row = 0
        else:
            f.next_row = max(f.next_row, rows.max_row_id(gen) + 1)
        upsert: list[WatchRow] = []
        delete = [d.row for d in change.removed if d.row is not None]
        for d in change.removed:
            d.row = None
        # Parents before children: a row's parent id is known when needed.
        for d in sorted(change.changed, key=lambda x: len(x.path)):
            if tree.dirs.get(d.path) is not d:
                continue
            export = walk.export_of(d.path)
            if export is None:
                continue
            if d.row is None or replace:
                d.row = f.next_row
                f.next_row += 1
            upsert.append(_row(walk, d, export))
        bounds = [*map(float, SIZE_BUCKETS), float("inf")]
        pub = Publication(
            walk=walk.top,
            gen=gen,
            upsert=upsert,
            delete=delete,
            dirs=[_dir_row(d) for d in change.changed | change.rekeyed
                  if tree.dirs.get(d.path) is d],
            gone_dirs=[d.path for d in change.removed],
            histogram=list(zip(bounds, tree.totals.histogram, strict=True)),
            histogram_sum=tree.totals.histogram_sum,
            owners=dict(tree.totals.owners) if self.config.owner_usage else None,
            replace=replace,
        )
        if not rows.publish(pub):
            return False  # a scan completed meanwhile: read it again
        self.status.published(walk.top, self.clock())
        self.on_publish()
        return True


def _row(walk: Walk, d: Dir, export: tuple[bytes, int]) -> WatchRow:
    assert d.row is not None  # noqa: S101 - assigned by the caller
    parent = d.parent.row if d.parent is not None else None
    own = d.own
    return WatchRow(
        id=d.row,
        parent=parent,
        depth=depth_under(d.path, walk.top),
        path=d.path,
        root=export[0],
        level=export[1],
        own=(own.disk, own.apparent, own.files, own.dirs, own.mtime),
        disk=d.disk,
        apparent=d.apparent,
        files=d.files,
        dirs=d.dirs,
        mtime=d.mtime,
    )


def _dir_row(d: Dir) -> WatchDirRow:
    own = d.own
    return (
        d.path, d.parent.path if d.parent is not None else None, d.dev, d.ino,
        d.key, own.disk, own.apparent, own.files, own.dirs, own.mtime,
        int(own.links),
    )


def _walked(ignore: Ignore, top: bytes, point: bytes) -> bool:
    """Whether the walk of ``top`` reaches ``point`` (no ignored step)."""
    parent = top.rstrip(b"/") or b"/"
    rest = point[len(parent):].strip(b"/")
    for name in rest.split(b"/"):
        child = parent.rstrip(b"/") + b"/" + name
        skip = ignore.for_dir(parent)
        if skip is not None and skip(child, name):
            return False
        parent = child
    return True
