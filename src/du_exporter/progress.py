"""A one-line progress display for one-shot scans on a terminal."""

from __future__ import annotations

import threading
import time

from collections.abc import Callable
from typing import Self, TextIO

from du_exporter.scan.status import ScanStatus


class Progress:
    """Rewrites one stderr line every ``interval`` while a scan runs."""

    def __init__(
        self,
        status: ScanStatus,
        stream: TextIO,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.status = status
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = clock()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.stream.write("\n")
        self.stream.flush()

    def line(self) -> str:
        live = self.status.view()
        running = [r.decode(errors="backslashreplace") for r, s in live.items() if s.in_progress]
        entries = sum(s.entries for s in live.values() if s.in_progress)
        done = sum(1 for s in live.values() if s.results)
        elapsed = max(self.clock() - self._start, 1e-9)
        where = ", ".join(running) or "-"
        return (
            f"scanning {where}: {entries:,} entries ({entries / elapsed:,.0f}/s), "
            f"{done}/{len(live)} roots done, {elapsed:.0f} s"
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()
