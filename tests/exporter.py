"""Run the real exporter as a subprocess and scrape it over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from prometheus_client.parser import text_string_to_metric_families

from helpers import clean_env


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sizes(
    samples: Samples, name: str = "node_disk_usage_bytes"
) -> dict[str, int]:
    """One family's values by ``path`` label (sizes: exact byte counts)."""
    return {
        dict(labels)["path"]: int(v)
        for (n, labels), v in samples.items()
        if n == name
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class Exporter:
    """``python -m du_exporter`` on 127.0.0.1, a free port, JSON logs."""

    def __init__(
        self, tmp_path: Path, *args: str, prefix: tuple[str, ...] = ()
    ) -> None:
        """``prefix``: a command that runs the exporter (e.g. ``setpriv``)."""
        self.db = tmp_path / "state" / "du.db"
        cmd = [
            *prefix,
            sys.executable, "-m", "du_exporter",
            "--bind-address", "127.0.0.1:0",
            "--db-path", str(self.db),
            "--log-format", "json",
            "--max-procs", "2",
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
            env=clean_env(tmp_path), cwd=tmp_path,
        )
        self.events: list[dict[str, object]] = []
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = str(self.wait_event("listening")["url"])

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    def wait_event(self, name: str, count: int = 1, timeout: float = 30) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if e.get("event") == name]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        msg = f"no {name!r} event #{count}; stderr:\n{''.join(self.lines)}"
        raise AssertionError(msg)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def scrape(self) -> Samples:
        status, _, body = self.get("/metrics")
        assert 200 == status
        return parse(body.decode())

    def wait_for(self, check: Callable[[Samples], bool], timeout: float = 30) -> Samples:
        deadline = time.monotonic() + timeout
        while True:
            samples = self.scrape()
            if check(samples):
                return samples
            if time.monotonic() > deadline:
                msg = f"condition never held; stderr:\n{''.join(self.lines)}"
                raise AssertionError(msg)
            time.sleep(0.05)

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self._reader.join(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (workers, resource tracker), from /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                kids = [int(p) for p in (task / "children").read_text().split()]
                found.extend(kids)
                todo.extend(kids)
    return found


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    running = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[0] not in {"Z", "X"}:
            running.append(pid)
    return running


def wait_gone(pids: list[int], timeout: float = 5) -> list[int]:
    """Wait for ``pids`` to exit; SIGKILL and return those that did not."""
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = alive(pids)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left
