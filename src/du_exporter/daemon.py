"""Mode ``http``: store, scan pool, collector and HTTP server; the schedule.

No parsing happens here: the CLI hands over a checked :class:`Config`
and a function that re-reads it on SIGHUP.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import sqlite3
import threading
import time

from collections.abc import Callable
from pathlib import Path

import structlog

from du_exporter.config import Config, format_address
from du_exporter.errors import (
    ConfigError,
    DuExporterError,
    ScanAbortedError,
    StoreError,
)
from du_exporter.expose.exposition import Exposition
from du_exporter.expose.families import (
    HealthCollector,
    make_registry,
)
from du_exporter.notify import notify, start_watchdog
from du_exporter.paths import Walk, display, plan_walks, root_levels
from du_exporter.scan.pool import ScanPool
from du_exporter.scan.runner import ScanRunner
from du_exporter.scan.status import ScanStatus
from du_exporter.scan.walker import engine_name
from du_exporter.store.reader import Reader
from du_exporter.store.writer import Store
from du_exporter.watch.metrics import WatchCollector
from du_exporter.watch.service import Watcher
from du_exporter.web.browse import browse_page
from du_exporter.web.landing import landing_page
from du_exporter.web.server import Pages, ServerHandle, start_server


log = structlog.get_logger("du_exporter")


#: mallopt(3)'s M_ARENA_MAX (glibc).
_M_ARENA_MAX = -8


def one_malloc_arena(environ: dict[str, str] | None = None) -> bool:
    """Let every thread of this process allocate from glibc's main arena.

    By default glibc gives each new thread its own arena (up to 8 per
    core; those of ended threads are reused) and keeps what was freed
    in each:
    the HTTP render threads, the result readers and the scan thread left
    ~13 MiB more resident after a scan of 10,000 exported directories
    under 50 scrapers (benchmarks/README.md).  With the GIL the threads
    rarely allocate at once, so one arena costs no measurable time.
    Left alone when the operator chose (``MALLOC_ARENA_MAX`` or
    ``GLIBC_TUNABLES``) or the C library has no ``mallopt`` (musl).
    Call it before the first thread starts.  True when set.
    """
    env = os.environ if environ is None else environ
    if "MALLOC_ARENA_MAX" in env or "GLIBC_TUNABLES" in env:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, 1))


def is_ready(config: Config, reader: Reader) -> bool:
    """Every walked root has a complete generation."""
    try:
        gens = reader.snapshot(with_rows=False).generations
    except StoreError:
        return False
    return all(w.top in gens for w in plan_walks(config.roots))


def _serving(config: Config) -> tuple[object, ...]:
    """What the HTTP server is built from."""
    return (
        config.bind_host,
        config.bind_port,
        config.web_config_file,
        config.basic_auth_users,
    )


def _watched(config: Config) -> tuple[object, ...]:
    """What the watcher is built from."""
    if not config.watch:
        return ()
    return (
        config.roots, config.watch_delay_seconds, config.ignore_dirs,
        config.one_file_system, config.max_iops, config.scan_engine,
        config.owner_usage,
    )


def _replace_db_path(config: Config, db_path: Path) -> Config:
    return dataclasses.replace(config, db_path=db_path)


#: The first retry of a failed scan; each next one waits twice as long.
RETRY_FIRST_SECONDS = 60.0
#: The longest wait between retries when scan-interval-minutes is 0.
RETRY_MAX_SECONDS = 3600.0


def retry_delay(failures: int, interval: float) -> float:
    """After ``failures`` failed scans in a row: 1 min, 2, 4, … the interval."""
    cap = interval if interval > 0 else RETRY_MAX_SECONDS
    return min(RETRY_FIRST_SECONDS * 2.0 ** max(0, failures - 1), cap)


def wall_time(due: float | None) -> str | None:
    """A monotonic deadline as a UTC timestamp for the log."""
    if due is None:
        return None
    at = time.time() + max(0.0, due - time.monotonic())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _scanned(config: Config) -> tuple[object, ...]:
    """The settings that change every walk's result (levels are per walk)."""
    return (
        config.ignore_dirs,
        config.one_file_system,
        config.follow_symlinks,
        config.owner_usage,
    )


def changed_walks(old: Config, new: Config) -> list[Walk]:
    """The walks of ``new`` whose stored result ``old`` would not give.

    Every walk when a setting of every walk changed; else the new walks
    and those whose nested roots or levels changed.  Settings that only
    change how stored rows are shown (size-mode, counts) or how fast a
    scan runs (max-iops, scan-engine, max-procs) need no rescan.
    """
    walks = plan_walks(new.roots)
    if _scanned(old) != _scanned(new):
        return walks
    before = set(plan_walks(old.roots))
    return [w for w in walks if w not in before]


class Schedule:
    """When each walk is scanned next, on the monotonic clock.

    A walk that succeeded is due ``interval`` seconds after its round
    started (never again when the interval is 0); one that failed is
    retried after :func:`retry_delay`; one that was cut short stays due.
    """

    def __init__(self, walks: list[Walk], now: float, interval: float) -> None:
        self.interval = interval
        self.due: dict[bytes, float | None] = {w.top: now for w in walks}
        self.failures: dict[bytes, int] = {}
        #: When the round of each walk's last success started.
        self.succeeded: dict[bytes, float] = {}

    def due_walks(self, walks: list[Walk], now: float) -> list[Walk]:
        return [
            w for w in walks if (d := self.due.get(w.top)) is not None and d <= now
        ]

    def next_due(self) -> float | None:
        return min((d for d in self.due.values() if d is not None), default=None)

    def _after_success(self, top: bytes) -> float | None:
        return self.succeeded[top] + self.interval if self.interval > 0 else None

    def done(self, top: bytes, *, ok: bool, started: float, now: float) -> None:
        if top not in self.due:
            return  # removed by a reload meanwhile
        if ok:
            self.failures.pop(top, None)
            self.succeeded[top] = started
            self.due[top] = self._after_success(top)
        else:
            self.failures[top] = self.failures.get(top, 0) + 1
            self.due[top] = now + retry_delay(self.failures[top], self.interval)

    def all_due(self, walks: list[Walk], now: float) -> None:
        for w in walks:
            self.due[w.top] = now

    def keep(self, walks: list[Walk], interval: float) -> None:
        """After a reload: forget removed walks, apply a new interval."""
        tops = {w.top for w in walks}
        for top in set(self.due) - tops:
            del self.due[top]
            self.failures.pop(top, None)
            self.succeeded.pop(top, None)
        if interval != self.interval:
            self.interval = interval
            for top in self.succeeded:
                if top not in self.failures:
                    self.due[top] = self._after_success(top)


class _Round:
    """One scan of some walks, in a thread of its own."""

    def __init__(
        self, walks: list[Walk], writer: ScanRunner, wake: threading.Event
    ) -> None:
        self.walks = walks
        self.writer = writer
        self.wake = wake
        self.started = time.monotonic()
        self.cut = threading.Event()
        self.results: dict[bytes, bool] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="scan", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for walk in self.walks:
                if self.cut.is_set():
                    return
                try:
                    ok = self.writer.scan_walk(walk, self.cut)
                except StoreError as e:  # disk full, database locked
                    log.error("store_failed", error=str(e))
                    ok = False
                self.results[walk.top] = ok
        except ScanAbortedError:
            return
        except BaseException as e:  # noqa: BLE001 - raised again by the daemon
            self.error = e
        finally:
            self.wake.set()


class Requests:
    """What signals ask of the daemon; set from signal handlers."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.scan = threading.Event()
        #: Set with each of the others, and when a scan round ends.
        self.wake = threading.Event()

    def ask(self, what: threading.Event) -> None:
        what.set()
        self.wake.set()


class Daemon:
    """Mode ``http``: serve ``/metrics`` and scan every interval."""

    def __init__(
        self, config: Config, reload_config: Callable[[], Config]
    ) -> None:
        self.config = config
        self.reload_config = reload_config
        self.store = Store.open(config.db_path)
        #: False while the database file is gone and cannot be recreated.
        self.store_ok = True
        self.reader = Reader(config.db_path)
        self.status = ScanStatus(list(root_levels(config.roots)))
        self.server: ServerHandle | None = None
        self.pool: ScanPool | None = None
        self.exposition: Exposition | None = None
        self.watcher: Watcher | None = None
        self.schedule = Schedule(
            plan_walks(config.roots),
            time.monotonic(),
            config.scan_interval_minutes * 60,
        )
        self.round: _Round | None = None
        self.wake = threading.Event()

    def _start_server(self) -> ServerHandle:
        health = HealthCollector(self.reader, self.status, lambda: self.config)
        fresh = make_registry(health, process_metrics=True)
        fresh.register(
            WatchCollector(lambda: self.watcher.status if self.watcher else None)
        )
        exposition = self.exposition = Exposition(
            self.reader,
            lambda: self.config,
            fresh,
            key_source=self._generation,
            fresh_ttl=1.0,
            fresh_key=self.status.version,
            # Scrapes never wait for a render but the first: a new
            # generation (or a reloaded config) renders off the scrape.
            background=True,
        )
        pages = Pages(
            render=exposition.render,
            landing=lambda: landing_page(self.config, self.reader, self.status),
            ready=lambda: self._store_usable() and is_ready(self.config, self.reader),
            healthy=self._store_alive,
            browse=lambda query: browse_page(self.config, self.reader, query),
        )
        cfg = self.config
        web = cfg.web()  # read again: certificates may have been renewed
        try:
            server = start_server(
                pages, cfg.bind_host, cfg.bind_port, web=web
            )
        except OSError as e:
            addr = format_address(cfg.bind_host, cfg.bind_port)
            msg = f"bind-address {addr!r}: cannot listen: {e.strerror}"
            raise DuExporterError(msg) from None
        log.info("listening", url=server.url, basic_auth=bool(web and web.users))
        return server

    def _generation(self) -> object:
        """Changes whenever the served rows do: a scan or a publication."""
        watcher = self.watcher
        return (
            self.status.generation(),
            watcher.status.publications() if watcher is not None else 0,
        )

    def _start_watcher(self) -> None:
        """Marks go in before the first scan (changes during it count)."""
        if not self.config.watch:
            return
        self.watcher = Watcher(
            self.config, on_publish=self._warm, on_rescan=self.wake.set
        )
        self.watcher.start()

    def _stop_watcher(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None

    def _watch_rescans(self) -> None:
        """Between rounds: the walks watch mode cannot follow exactly
        (queue overflow, hard links) are scanned now."""
        if self.watcher is None or self.round is not None:
            return
        tops = set(self.watcher.take_rescans())
        walks = [w for w in plan_walks(self.config.roots) if w.top in tops]
        self.schedule.all_due(walks, time.monotonic())

    def _scan_completed(self) -> None:
        self._warm()
        if self.watcher is not None:
            self.watcher.scan_completed()

    def run(self, requests: Requests) -> None:
        """Scan now and on schedule until asked to stop; serve meanwhile."""
        self.server = self._start_server()
        self._warm()  # a generation that survived a restart
        self.pool = ScanPool(self.config.max_procs, self.config.scan_priority)
        notify("READY=1")  # the database is open and the port is bound
        watchdog_stop = threading.Event()
        start_watchdog(self._healthy, watchdog_stop)
        self.wake = requests.wake
        try:
            self._start_watcher()  # before the first scan starts
            self._loop(requests)
        finally:
            notify("STOPPING=1")
            watchdog_stop.set()
            self._cut()
            self._stop_watcher()
            self.pool.terminate()
            self.server.close()
            self.store.close()
            log.info("stopped")

    def _warm(self) -> None:
        """Render /metrics for a new generation here, not in a scrape."""
        if self.exposition is None:
            return
        try:
            self.exposition.warm()
        except StoreError as e:
            log.error("render_failed", error=str(e))

    def _healthy(self) -> bool:
        """For the watchdog: the server and the scan workers are up."""
        return (
            self.server is not None
            and self.server.alive()
            and self.pool is not None
            and self.pool.alive()
        )

    def _loop(self, requests: Requests) -> None:
        schedule = self.schedule
        log.info(
            "started",
            roots=[display(os.fsencode(r.path)) for r in self.config.roots],
            engine=engine_name(self.config.scan_engine),
            next_scan=wall_time(schedule.next_due()),
        )
        while not requests.stop.is_set():
            requests.wake.clear()
            if requests.reload.is_set():
                requests.reload.clear()
                notify("RELOADING=1")
                self._reload()
                notify("READY=1")
            if requests.scan.is_set():
                requests.scan.clear()
                self._scan_now()
            self._reap()
            self._watch_rescans()
            if self.round is None and self._check_store():
                if self.watcher is not None:  # its connection: the old file
                    self._stop_watcher()
                    self._start_watcher()
                self.schedule.all_due(plan_walks(self.config.roots), time.monotonic())
            if self.round is None and self.store_ok:
                self._start_round()
            due = schedule.next_due()
            wait = 60.0 if due is None else due - time.monotonic()
            if self.round is not None:
                wait = 60.0  # its end wakes us
            requests.wake.wait(min(60.0, max(0.0, wait)))

    def _store_usable(self) -> bool:
        """For the probes: the database file is the one open.  If not,
        wake the loop, which recreates it (a cheap stat per probe)."""
        if self.store_ok and not self.store.replaced():
            return True
        self.wake.set()
        return False

    def _store_alive(self) -> bool:
        """For /-/healthy: False only while the database cannot be
        recreated (a replaced file wakes the loop, which recreates it)."""
        self._store_usable()
        return self.store_ok

    def _check_store(self) -> bool:
        """Recreate the database when its file was deleted or replaced
        under us; True when it was (everything is scanned again)."""
        if self.store_ok and not self.store.replaced():
            return False
        try:
            store = Store.open(self.config.db_path)
        except StoreError as e:
            if self.store_ok:
                log.error("store_lost", error=str(e))
            self.store_ok = False
            return False
        old, self.store = self.store, store
        with contextlib.suppress(sqlite3.Error):
            old.close()
        self.store_ok = True
        log.warning(
            "store_recreated", path=str(self.config.db_path), reason="file gone or replaced"
        )
        return True

    def _start_round(self) -> None:
        """Scan the walks that are due, in the background."""
        walks = self.schedule.due_walks(plan_walks(self.config.roots), time.monotonic())
        if not walks:
            return
        self._fit_pool()
        assert self.pool is not None  # noqa: S101 - set by run()
        writer = ScanRunner(
            self.config, self.pool, self.store, self.status,
            on_complete=self._scan_completed,
        )
        self.round = _Round(walks, writer, self.wake)

    def _reap(self) -> None:
        """Take the results of a round that ended."""
        rnd = self.round
        if rnd is None or rnd.thread.is_alive():
            return
        rnd.thread.join()
        self.round = None
        if rnd.error is not None:
            raise rnd.error
        now = time.monotonic()
        for top, ok in rnd.results.items():
            self.schedule.done(top, ok=ok, started=rnd.started, now=now)
        failed = [t for t, ok in rnd.results.items() if not ok]
        if self.watcher is not None:
            for top in failed:
                self.watcher.scan_failed(top)
        if failed:
            retry = [d for t in failed if (d := self.schedule.due.get(t)) is not None]
            log.info(
                "scan_retry",
                roots=[display(t) for t in failed],
                next_scan=wall_time(min(retry, default=None)),
            )

    def _cut(self) -> None:
        """Abandon the running round, if any, and wait for it to end."""
        if self.round is not None:
            self.round.cut.set()
            self.round.thread.join()
            self._reap()

    def _scan_now(self) -> None:
        """SIGUSR1: every root now, unless a scan runs."""
        if self.round is not None:
            log.info("scan_request_ignored", reason="a scan is running")
            return
        log.info("scan_requested")
        self.schedule.all_due(plan_walks(self.config.roots), time.monotonic())

    def _fit_pool(self) -> None:
        """Between rounds: a pool of the configured size and priority."""
        cfg = self.config
        if self.pool is not None and (self.pool.procs, self.pool.priority) != (
            cfg.max_procs,
            cfg.scan_priority,
        ):
            self.pool.terminate()
            self.pool = ScanPool(cfg.max_procs, cfg.scan_priority)

    def _restart_server(self) -> None:
        assert self.server is not None  # noqa: S101 - set by run()
        self.server.close()
        self.server = self._start_server()

    def _reload(self) -> None:
        try:
            new = self.reload_config()
        except ConfigError as e:
            log.error("reload_failed", error=str(e))
            return
        old, self.config = self.config, new
        self.status.set_roots(list(root_levels(new.roots)))
        if new.db_path != old.db_path:
            log.warning("reload_ignored", key="db-path", reason="needs a restart")
            new = self.config = _replace_db_path(new, old.db_path)
        if new.web_config_file is not None or _serving(new) != _serving(old):
            # Also with an unchanged web config path: a renewed certificate.
            try:
                self._restart_server()
            except DuExporterError as e:
                log.error("reload_failed", error=str(e))
                self.config = old
                self.status.set_roots(list(root_levels(old.roots)))
                self._restart_server()
                return
        changed = changed_walks(old, new)
        if changed:
            # What is scanned changed: the running round is abandoned;
            # the changed roots are scanned now, the others as planned.
            self._cut()
        if _watched(new) != _watched(old):
            self._stop_watcher()
            self._start_watcher()
        self.schedule.keep(plan_walks(new.roots), new.scan_interval_minutes * 60)
        self.schedule.all_due(changed, time.monotonic())
        # Scrapes get the new config's /metrics from now on, not the
        # old bytes while a scrape's background render runs.
        self._warm()
        log.info(
            "reloaded",
            rescan=[display(w.top) for w in changed],
            config=new.summary(),
        )
