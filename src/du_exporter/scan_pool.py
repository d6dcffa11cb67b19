"""A fixed-size pool of worker processes that walks one root in units.

The parent hands out units (directories) and receives their sums; a
worker that notices idle workers returns early and hands its pending
directories back, so one big subtree still keeps every worker busy.
Workers only compute; the parent alone writes the database.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import threading

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from du_exporter.errors import ScanAbortedError, ScanError
from du_exporter.scan import Plan, SharedHunger, Unit, UnitResult, scan_unit


#: Called with each result, its unit id and its parent unit's id.
OnResult = Callable[[UnitResult, int, int | None], None]


@dataclass
class _Done:
    uid: int
    parent: int | None
    result: UnitResult | None
    error: BaseException | None


def _init_worker(hunger: SharedHunger) -> None:
    # Ctrl-C reaches the whole process group; the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from du_exporter.scan import init_worker  # noqa: PLC0415 - in the worker

    init_worker(hunger)


class ScanPool:
    """``procs`` worker processes, started with ``spawn``.

    ``spawn`` (not ``fork``) keeps workers small and independent of the
    parent's threads and of any library state in it.
    """

    def __init__(self, procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs = procs
        self.hunger = SharedHunger(ctx.Value("i", 0))
        self._pool: Any = ctx.Pool(
            procs, initializer=_init_worker, initargs=(self.hunger,)
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()

    def terminate(self) -> None:
        """Stop the workers now, even mid-unit, and reap them."""
        self._pool.terminate()
        self._pool.join()

    def walk(
        self, plan: Plan, top: Unit, on_result: OnResult, stop: threading.Event
    ) -> None:
        """Walk ``top`` to the bottom; call ``on_result`` per unit."""
        done: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        state = {"next": 0, "inflight": 0}

        def submit(unit: Unit, parent: int | None) -> None:
            uid = state["next"]
            state["next"] += 1
            state["inflight"] += 1
            self._pool.apply_async(
                scan_unit,
                (plan, unit),
                callback=lambda r: done.put(_Done(uid, parent, r, None)),
                error_callback=lambda e: done.put(_Done(uid, parent, None, e)),
            )

        submit(top, None)
        self.hunger.set(self.procs - 1)
        try:
            while state["inflight"]:
                if stop.is_set():
                    msg = "scan stopped before it completed"
                    raise ScanAbortedError(msg)
                try:
                    item = done.get(timeout=0.2)
                except queue.Empty:
                    continue
                state["inflight"] -= 1
                if item.result is None:
                    msg = f"scan worker failed: {item.error!r}"
                    raise ScanError(msg)
                for child in item.result.children:
                    submit(child, item.uid)
                self.hunger.set(self.procs - state["inflight"])
                on_result(item.result, item.uid, item.parent)
        finally:
            self.hunger.set(0)
