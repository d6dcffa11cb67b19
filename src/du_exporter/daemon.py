"""Mode ``http``: store, scan pool, collector and HTTP server; the schedule.

No parsing happens here: the CLI hands over a checked :class:`Config`
and a function that re-reads it on SIGHUP.
"""

from __future__ import annotations

import dataclasses
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
    UsageCollector,
    make_registry,
)
from du_exporter.notify import notify, start_watchdog
from du_exporter.paths import plan_walks, root_levels
from du_exporter.scan.pool import ScanPool
from du_exporter.scan.runner import Writer
from du_exporter.scan.status import ScanStatus
from du_exporter.store.reader import Reader
from du_exporter.store.writer import Store
from du_exporter.web.browse import browse_page
from du_exporter.web.landing import landing_page
from du_exporter.web.server import Pages, ServerHandle, start_server
from du_exporter.web.webconfig import load as load_web_config


log = structlog.get_logger("du_exporter")


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


def _replace_db_path(config: Config, db_path: Path) -> Config:
    return dataclasses.replace(config, db_path=db_path)


class Daemon:
    """Mode ``http``: serve ``/metrics`` and scan every interval."""

    def __init__(
        self, config: Config, reload_config: Callable[[], Config]
    ) -> None:
        self.config = config
        self.reload_config = reload_config
        self.store = Store.open(config.db_path)
        self.reader = Reader(config.db_path)
        self.status = ScanStatus(list(root_levels(config.roots)))
        self.server: ServerHandle | None = None
        self.pool: ScanPool | None = None
        self.exposition: Exposition | None = None

    def _start_server(self) -> ServerHandle:
        collector = UsageCollector(self.reader, self.status, lambda: self.config)
        health = HealthCollector(self.reader, self.status, lambda: self.config)
        exposition = self.exposition = Exposition(
            self.reader,
            lambda: self.config,
            make_registry(health, process_metrics=True),
            key_source=self.status.generation,
            fresh_ttl=1.0,
            fresh_key=self.status.version,
        )
        pages = Pages(
            registry=make_registry(collector, process_metrics=True),
            landing=lambda: landing_page(self.config, self.reader, self.status),
            ready=lambda: is_ready(self.config, self.reader),
            render=exposition.render,
            browse=lambda query: browse_page(self.config, self.reader, query),
        )
        cfg = self.config
        # Read again (build() checked it): certificates may have been
        # renewed since.  A file broken in between is a ConfigError.
        web = load_web_config(cfg.web_config_file, cfg.basic_auth_users)
        try:
            server = start_server(
                pages, cfg.bind_host, cfg.bind_port, web=web, max_threads=128
            )
        except OSError as e:
            addr = format_address(cfg.bind_host, cfg.bind_port)
            msg = f"bind-address {addr!r}: cannot listen: {e.strerror}"
            raise DuExporterError(msg) from None
        log.info("listening", url=server.url, basic_auth=bool(web and web.users))
        return server

    def run(self, stop: threading.Event, reload: threading.Event) -> None:
        """Scan now and every interval until ``stop``; reload on ``reload``."""
        self.server = self._start_server()
        self._warm()  # a generation that survived a restart
        self.pool = ScanPool(self.config.max_procs, self.config.scan_priority)
        notify("READY=1")  # the database is open and the port is bound
        watchdog_stop = threading.Event()
        start_watchdog(self._healthy, watchdog_stop)
        try:
            self._loop(stop, reload)
        finally:
            notify("STOPPING=1")
            watchdog_stop.set()
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

    def _loop(self, stop: threading.Event, reload: threading.Event) -> None:
        next_scan: float | None = time.monotonic()
        while not stop.is_set():
            if reload.is_set():
                reload.clear()
                notify("RELOADING=1")
                self._reload()
                notify("READY=1")
                next_scan = time.monotonic()
            if next_scan is not None and time.monotonic() >= next_scan:
                interval = self.config.scan_interval_minutes * 60
                # 0 means scan once, then only serve (until a reload).
                next_scan = time.monotonic() + interval if interval else None
                self._scan(stop)
            wait = 1.0 if next_scan is None else next_scan - time.monotonic()
            stop.wait(min(1.0, max(0.0, wait)))

    def _scan(self, stop: threading.Event) -> None:
        assert self.pool is not None  # noqa: S101 - set by run()
        writer = Writer(
            self.config, self.pool, self.store, self.status, on_complete=self._warm
        )
        try:
            writer.scan_all(stop)
        except ScanAbortedError:
            return
        except StoreError as e:  # disk full, database locked: retry later
            log.error("store_failed", error=str(e))

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
        if self.pool is not None and (new.max_procs, new.scan_priority) != (
            old.max_procs,
            old.scan_priority,
        ):
            self.pool.terminate()
            self.pool = ScanPool(new.max_procs, new.scan_priority)
        log.info("reloaded", config=new.summary())
