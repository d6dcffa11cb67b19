"""A one-line progress display for one-shot scans on a terminal.

The progress line sits below the log: :class:`Terminal` is the stream
both write to, so a log line first clears the progress line and starts
at the left margin, and the progress line is drawn again under it.
"""

from __future__ import annotations

import io
import threading
import time

from collections.abc import Callable
from typing import Self, TextIO

from du_exporter.paths import display
from du_exporter.scan.status import ScanStatus


_CLEAR = "\r\x1b[K"  # back to the margin, erase to the end of the line


class Terminal(io.TextIOBase):
    """A text stream (stderr) with one status line kept below its output."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._lock = threading.RLock()
        self._status = ""
        self._shown = False  # the status line is on screen, cursor after it

    def isatty(self) -> bool:
        return self.stream.isatty()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.stream.fileno()

    def write(self, text: str) -> int:
        with self._lock:
            if self._shown:
                self.stream.write(_CLEAR)
                self._shown = False
            self.stream.write(text)
            if self._status and text.endswith("\n"):
                self.stream.write(self._status)
                self._shown = True
            return len(text)

    def flush(self) -> None:
        with self._lock:
            self.stream.flush()

    def show(self, line: str) -> None:
        """Draw (or redraw) the status line."""
        with self._lock:
            self._status = line
            self.stream.write(_CLEAR + line)
            self._shown = True
            self.stream.flush()

    def clear(self) -> None:
        """Erase the status line: what follows starts on a clean line."""
        with self._lock:
            if self._shown:
                self.stream.write(_CLEAR)
            self._status, self._shown = "", False
            self.stream.flush()


class Progress:
    """Redraws the status line of ``terminal`` every ``interval`` while a
    scan runs, and erases it at the end."""

    def __init__(
        self,
        status: ScanStatus,
        terminal: Terminal,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.status = status
        self.terminal = terminal
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
        self.terminal.clear()

    def line(self) -> str:
        live = self.status.view()
        running = [display(r) for r, s in live.items() if s.in_progress]
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
            self.terminal.show(self.line())
