"""Where watch mode stands per walked root, for the collector.

Thread-safe: the watch threads write, scrapes read.
"""

from __future__ import annotations

import threading

from collections import Counter
from dataclasses import dataclass, field


RESCAN_REASONS = ("overflow", "hardlink", "root")


@dataclass
class WalkWatch:
    """Counters of one walk (shared by the configured roots it holds)."""

    active: bool = False
    entries: int = 0
    events: int = 0
    updates: int = 0
    last_publish: float | None = None
    pending: int = 0
    rescans: Counter[str] = field(default_factory=Counter)


class WatchStatus:
    def __init__(self, walks: dict[bytes, list[bytes]]) -> None:
        """``walks``: walked root -> the configured roots it exports."""
        self._lock = threading.Lock()
        self._walks = {top: WalkWatch() for top in walks}
        self._roots = dict(walks)
        self._publications = 0

    def update(self, top: bytes, **changes: object) -> None:
        with self._lock:
            w = self._walks[top]
            for name, value in changes.items():
                setattr(w, name, value)

    def add(self, top: bytes, *, entries: int = 0, events: int = 0) -> None:
        with self._lock:
            w = self._walks[top]
            w.entries += entries
            w.events += events

    def rescan(self, top: bytes, reason: str) -> None:
        with self._lock:
            self._walks[top].rescans[reason] += 1

    def published(self, top: bytes, when: float) -> None:
        with self._lock:
            w = self._walks[top]
            w.updates += 1
            w.last_publish = when
            self._publications += 1

    def publications(self) -> int:
        """Bumped by every publication: the served rows changed."""
        with self._lock:
            return self._publications

    def view(self) -> dict[bytes, WalkWatch]:
        """Per configured root, a copy of its walk's counters."""
        with self._lock:
            out = {}
            for top, w in self._walks.items():
                copy = WalkWatch(
                    w.active, w.entries, w.events, w.updates, w.last_publish,
                    w.pending, Counter(w.rescans),
                )
                for root in self._roots[top]:
                    out[root] = copy
            return out
