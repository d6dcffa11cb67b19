"""Mode ``file``: scan every root once, write the textfile, exit."""

from __future__ import annotations

import threading

import structlog

from du_exporter.config import Config
from du_exporter.errors import ScanAbortedError
from du_exporter.expose.families import HealthCollector, make_registry
from du_exporter.expose.textfile import write_textfile
from du_exporter.paths import root_levels
from du_exporter.progress import Progress, Terminal
from du_exporter.scan.pool import ScanPool
from du_exporter.scan.runner import ScanRunner
from du_exporter.scan.status import ScanStatus
from du_exporter.store.reader import Reader
from du_exporter.store.writer import Store


log = structlog.get_logger("du_exporter")


def run_once(
    config: Config,
    progress: Terminal | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Mode ``file``: scan every root, write the textfile, return the exit code.

    When ``stop`` is set (SIGTERM) the scan is abandoned: the workers are
    killed, the partial generation deleted, the previous textfile left
    as it was, and :class:`ScanAbortedError` raised.
    """
    stop = stop if stop is not None else threading.Event()
    store = Store.open(config.db_path)
    status = ScanStatus(list(root_levels(config.roots)))
    try:
        with ScanPool(config.max_procs, config.scan_priority) as pool:
            writer = ScanRunner(config, pool, store, status)
            if progress is not None and progress.isatty():
                with Progress(status, progress):
                    ok = writer.scan_all(stop)
            else:
                ok = writer.scan_all(stop)
        if stop.is_set():  # between two roots
            msg = "scan stopped before it completed"
            raise ScanAbortedError(msg)
        reader = Reader(config.db_path)
        health = HealthCollector(reader, status, lambda: config)
        write_textfile(config.output_file, reader, config, make_registry(health, process_metrics=False))
    finally:
        store.close()
    log.info("textfile_written", path=str(config.output_file), complete=ok)
    return 0 if ok else 1
