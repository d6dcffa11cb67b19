"""A fixed-size pool of worker processes that walks one root in units.

The parent hands out units (subtrees) and receives their rows, a few
thousand per message, not one round trip per directory; a worker that
notices idle workers ends its unit early and hands its pending
directories back, so one big subtree still keeps every worker busy.
Workers only compute; the parent alone writes the database.

Workers are plain subprocesses (``python -m du_exporter.worker``) fed
through pipes rather than a ``multiprocessing.Pool``: they import only
the scanner (a few MiB each instead of the whole exporter), a worker
that dies fails the scan instead of hanging it, and stopping is a kill.
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from du_exporter.errors import ScanAbortedError, ScanError
from du_exporter.paths import display
from du_exporter.scan.hunger import MappedHunger
from du_exporter.scan.model import ROW_ID_BITS, Plan, Unit, UnitResult
from du_exporter.scan.worker import read_frame, write_frame


#: Called with each message of a worker.
OnResult = Callable[[UnitResult], None]
#: Messages of one worker read ahead of the parent: beyond them the rows
#: wait in the worker (blocked on its pipe), not in the parent's memory.
READ_AHEAD = 2


@dataclass
class _Task:
    unit_id: int
    #: The row the unit's own row hangs on.
    parent: int | None
    unit: Unit


@dataclass
class _Done:
    worker: _Worker
    result: UnitResult | str | None  # str: the worker's error; None: it died


class _Worker:
    """One worker process and the thread that reads its results."""

    def __init__(
        self, hunger_fd: int, done: queue.SimpleQueue[_Done], priority: str
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "du_exporter.scan.worker", str(hunger_fd), priority],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(hunger_fd,),
        )
        self.task: _Task | None = None
        self.done = done
        #: Released by the parent for each message it takes.
        self.room = threading.Semaphore(READ_AHEAD)
        self.stopped = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None  # noqa: S101 - a pipe
        while True:
            self.room.acquire()
            if self.stopped:
                break
            try:
                frame = read_frame(self.proc.stdout)
            except (OSError, ValueError):  # closed by kill()
                break
            if frame is None:
                break
            self.done.put(_Done(self, pickle.loads(frame)))  # noqa: S301 - our own worker
        self.done.put(_Done(self, None))

    def send(self, plan: Plan, task: _Task) -> None:
        assert self.proc.stdin is not None  # noqa: S101 - a pipe
        self.task = task
        try:
            base = task.unit_id << ROW_ID_BITS
            write_frame(self.proc.stdin,
                        pickle.dumps((plan, task.unit, base, task.parent)))
        except OSError as e:
            msg = f"scan worker {self.proc.pid} is gone: {e}"
            raise ScanError(msg) from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        self.stopped = True
        self.room.release()  # a reader waiting for room: let it end
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class ScanPool:
    """``procs`` worker processes, kept between scans."""

    def __init__(self, procs: int, priority: str = "normal") -> None:
        self.procs = procs
        self.priority = priority
        self._hunger_fd = os.memfd_create("du-exporter-hunger")
        os.ftruncate(self._hunger_fd, MappedHunger.SIZE)
        self.hunger = MappedHunger(self._hunger_fd)
        self._done: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        self._workers: list[_Worker] = []
        self._start()

    def _start(self) -> None:
        """(Re)start workers until there are ``procs`` idle ones."""
        self._done = queue.SimpleQueue()
        for w in self._workers:
            w.kill()
        self._workers = [
            _Worker(self._hunger_fd, self._done, self.priority)
            for _ in range(self.procs)
        ]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()

    def alive(self) -> bool:
        """Every worker process is running."""
        return bool(self._workers) and all(w.alive() for w in self._workers)

    def terminate(self) -> None:
        """Kill the workers now, even mid-unit, and reap them."""
        for w in self._workers:
            w.kill()
        self._workers = []
        if self._hunger_fd >= 0:
            self.hunger.map.close()
            os.close(self._hunger_fd)
            self._hunger_fd = -1

    def walk(
        self, plan: Plan, top: Unit, on_result: OnResult, stop: threading.Event
    ) -> None:
        """Walk ``top`` to the bottom; call ``on_result`` per message."""
        if any(w.task is not None or not w.alive() for w in self._workers):
            self._start()  # a previous walk was cut short
        walk = _Walk(self, plan, on_result)
        try:
            walk.run(top, stop)
        except BaseException:
            self._start()  # workers may still be busy with the old walk
            raise
        finally:
            self.hunger.set(0)


class _Walk:
    """The bookkeeping of one walk: pending units, busy workers."""

    def __init__(self, pool: ScanPool, plan: Plan, on_result: OnResult) -> None:
        self.pool = pool
        self.plan = plan
        self.on_result = on_result
        self.pending: deque[_Task] = deque()
        self.busy = 0
        self.next_id = 0

    def add(self, unit: Unit, parent: int | None) -> None:
        self.pending.append(_Task(self.next_id, parent, unit))
        self.next_id += 1

    def dispatch(self) -> None:
        assigned = []
        for w in self.pool._workers:  # noqa: SLF001 - the pool's own helper
            if w.task is None and self.pending:
                # Newest first (depth first): the queue stays about as long
                # as the tree is deep times wide, not a whole level's width.
                assigned.append((w, self.pending.pop()))
                self.busy += 1
        # Tell the busy workers about idle ones before they start.
        idle = self.pool.procs - self.busy
        self.pool.hunger.set(idle if not self.pending else 0)
        for w, task in assigned:
            w.send(self.plan, task)

    def run(self, top: Unit, stop: threading.Event) -> None:
        self.add(top, None)
        self.dispatch()
        while self.busy:
            if stop.is_set():
                msg = "scan stopped before it completed"
                raise ScanAbortedError(msg)
            try:
                done = self.pool._done.get(timeout=0.2)  # noqa: SLF001
            except queue.Empty:
                continue
            done.worker.room.release()
            task = done.worker.task
            if task is None:
                continue  # the end of a worker killed between walks
            if not isinstance(done.result, UnitResult):
                reason = done.result or f"exited with {done.worker.proc.wait()}"
                msg = f"scan worker failed on '{display(task.unit.path)}': {reason}"
                raise ScanError(msg)
            if done.result.final:
                done.worker.task = None
                self.busy -= 1
                for child, parent in done.result.children:
                    self.add(child, parent)
                self.dispatch()
            self.on_result(done.result)
