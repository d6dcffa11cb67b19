"""What the running process knows about its scans, for the collector.

The database holds the results of complete scans; this holds what only
the live process knows: a scan running now, its progress, and how many
scans ended how since start-up.  Thread-safe: the scan thread writes,
scrapes read.
"""

from __future__ import annotations

import threading

from collections import Counter
from dataclasses import dataclass, field


RESULTS = ("success", "error", "aborted")


@dataclass
class RootStatus:
    in_progress: bool = False
    entries: int = 0
    results: Counter[str] = field(default_factory=Counter)
    last_error: str = ""


class ScanStatus:
    """Per configured root: progress now and scan results so far."""

    def __init__(self, roots: list[bytes]) -> None:
        self._lock = threading.Lock()
        self._roots = {root: RootStatus() for root in roots}
        self._generation = 0
        self._version = 0

    def set_roots(self, roots: list[bytes]) -> None:
        """After a reload: keep counters of roots that stay."""
        with self._lock:
            self._roots = {r: self._roots.get(r, RootStatus()) for r in roots}

    def started(self, roots: list[bytes]) -> None:
        with self._lock:
            self._version += 1
            for root in roots:
                if root in self._roots:
                    self._roots[root].in_progress = True
                    self._roots[root].entries = 0

    def progress(self, roots: list[bytes], entries: int) -> None:
        with self._lock:
            for root in roots:
                if root in self._roots:
                    self._roots[root].entries = entries

    def finished(self, roots: list[bytes], result: str, error: str = "") -> None:
        with self._lock:
            self._version += 1
            for root in roots:
                if root in self._roots:
                    st = self._roots[root]
                    st.in_progress = False
                    st.results[result] += 1
                    st.last_error = error
            if result == "success":
                self._generation += 1

    def version(self) -> int:
        """Bumped whenever a scan starts or ends (not on progress)."""
        with self._lock:
            return self._version

    def generation(self) -> int:
        """Bumped whenever a scan completes: a new generation is visible."""
        with self._lock:
            return self._generation

    def view(self) -> dict[bytes, RootStatus]:
        """A copy, safe to read without the lock."""
        with self._lock:
            return {
                r: RootStatus(s.in_progress, s.entries, Counter(s.results),
                              s.last_error)
                for r, s in self._roots.items()
            }
