"""The watch self metrics, per configured root (``path``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from du_exporter.paths import label_path
from du_exporter.watch.status import RESCAN_REASONS, WatchStatus


class WatchCollector:
    """Reads :class:`WatchStatus` on each scrape (none: watch is off)."""

    def __init__(self, status: Callable[[], WatchStatus | None]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        if status is None:
            return
        view = status.view()
        p = "du_exporter_watch_"
        entries = CounterMetricFamily(
            p + "entries", "Directory entries read by watch updates.",
            labels=["path"],
        )
        events = CounterMetricFamily(
            p + "events", "fanotify events read for the root.", labels=["path"]
        )
        updates = CounterMetricFamily(
            p + "updates", "Watch publications of the root's rows.",
            labels=["path"],
        )
        last = GaugeMetricFamily(
            p + "last_publish_timestamp_seconds",
            "When the root's rows were last published by watch mode.",
            labels=["path"],
        )
        pending = GaugeMetricFamily(
            p + "pending_dirs",
            "Directories named by events and not yet published (0 when "
            "nothing waits).",
            labels=["path"],
        )
        active = GaugeMetricFamily(
            p + "active", "1 while the root's changes are followed.",
            labels=["path"],
        )
        rescans = CounterMetricFamily(
            p + "rescans", "Full rescans watch mode asked for, by reason.",
            labels=["path", "reason"],
        )
        for root, w in sorted(view.items()):
            label = [label_path(root)]
            entries.add_metric(label, w.entries)
            events.add_metric(label, w.events)
            updates.add_metric(label, w.updates)
            if w.last_publish is not None:
                last.add_metric(label, w.last_publish)
            pending.add_metric(label, w.pending)
            active.add_metric(label, 1 if w.active else 0)
            for reason in RESCAN_REASONS:
                rescans.add_metric([*label, reason], w.rescans[reason])
        yield from (entries, events, updates, last, pending, active, rescans)
