"""Test helpers: GNU du, file writers, an in-process scanner."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import subprocess
import sys
import threading
import time

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from du_exporter import config as config_mod
from du_exporter.cli import main
from du_exporter.config import Config
from du_exporter.expose.exposition import Exposition
from du_exporter.paths import label_path
from du_exporter.scan.pool import ScanPool
from du_exporter.scan.runner import ScanRunner
from du_exporter.scan.status import ScanStatus
from du_exporter.store import db as db_mod
from du_exporter.store import reader as reader_mod
from du_exporter.store.reader import Reader
from du_exporter.store.rows import DirRow
from du_exporter.store.writer import Store
from du_exporter.web.server import Body


def trace_sql(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement the store's readers run from now on (SQLite's
    own trace callback on each connection they open)."""
    statements: list[str] = []
    real = db_mod.connect

    def traced(path: Path, *, readonly: bool) -> Any:
        conn = real(path, readonly=readonly)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(reader_mod, "connect", traced)
    return statements


def du(path: Path | bytes, *args: str) -> dict[bytes, int]:
    """GNU du's output as {path: bytes}; e.g. ``du(p, "-B1", "--max-depth=2")``.

    Paths are bytes (names may hold newlines or invalid UTF-8), so the
    output is NUL-separated (``-0``).  A saturated sum (du prints
    "Infinity") is 2**64 - 1.
    """
    out = subprocess.run(
        ["du", "-0", *args, os.fsencode(path)],
        capture_output=True,
        check=False,
    ).stdout
    result = {}
    for record in filter(None, out.split(b"\0")):
        size, _, name = record.partition(b"\t")
        result[name] = 2**64 - 1 if size == b"Infinity" else int(size)
    return result


def du_labels(
    root: Path | bytes, *args: str, prefix: tuple[str, ...] = ()
) -> dict[str, int]:
    """du's sizes keyed like the exporter's ``path`` labels.

    ``prefix`` runs du under a wrapper (``setpriv ...``), as the exporter.
    """
    done = subprocess.run(
        [*prefix, "du", "-0", *args, os.fsencode(root)],
        capture_output=True, check=False,
    )
    result = {}
    for record in filter(None, done.stdout.split(b"\0")):
        size, _, name = record.partition(b"\t")
        result[label_path(name)] = int(size)
    return result


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """os.environ without DU_EXPORTER_*, with a private HOME and state."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("DU_EXPORTER_")
    }
    env["HOME"] = str(home)
    env["XDG_STATE_HOME"] = str(home / "state")
    env.update(extra)
    return env


def run(
    home: Path,
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``du-exporter ARGS`` in a real process, cwd and HOME in ``home``,
    with ``env`` on top of the clean environment."""
    return subprocess.run(
        [sys.executable, "-m", "du_exporter", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=home,
        env={**clean_env(home), **(env or {})},
        timeout=timeout,
        check=False,
    )


def invoke(
    home: Path, *args: str | Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``du-exporter ARGS`` in this process, through click's CliRunner.

    For what is decided before anything starts (help, usage and config
    errors, check-config): the same entry point, exit code and streams
    as :func:`run`, without a Python start-up per case.
    """
    environ = clean_env(home) if env is None else dict(env)
    unset: dict[str, str | None] = {k: None for k in os.environ if k not in environ}
    argv = ["du-exporter", *map(str, args)]
    code: object = 0
    saved = sys.argv
    with contextlib.chdir(home), CliRunner().isolation(
        env={**unset, **environ}
    ) as (out, err, _):
        sys.argv = argv
        try:
            main()
        except SystemExit as e:
            code = e.code
        finally:
            sys.argv = saved
        stdout, stderr = out.getvalue(), err.getvalue()
    return subprocess.CompletedProcess(
        argv,
        code if isinstance(code, int) else 1,
        stdout.decode(),
        stderr.decode(),
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``du-exporter: error: ...`` line on stderr."""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert 1 == len(lines), proc.stderr
    assert lines[0].startswith("du-exporter: error: ")
    return lines[0]


def write(path: Path, size: int, *, sparse: bool = False) -> Path:
    """A file of ``size`` bytes: real data, or a hole (``sparse``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        if sparse:
            f.truncate(size)
        else:
            f.write(os.urandom(size))
    return path


def many_dirs(root: Path, fan: int) -> Path:
    """``fan`` x ``fan`` directories of one file each, and hard links
    between far-apart ones (du counts each where it meets it first)."""
    for i in range(fan):
        for j in range(fan):
            write(root / f"a{i:03d}" / f"b{j:03d}" / "f", 100 * i + j)
    for i in range(0, fan, 7):
        os.link(root / f"a{i:03d}" / "b000" / "f",
                root / f"a{fan - 1 - i:03d}" / f"b{i:03d}" / "link")
    return root


def big_dir_with_link(root: Path) -> Path:
    """``root/big`` of 12,000 entries (past the 10,000 where fts sorts by
    inode) holding a hard link to ``root/data/f``; returns ``root``."""
    big = root / "big"
    big.mkdir(parents=True)
    for i in range(12_000):
        (big / f"{i:05d}").touch()
    write(root / "data" / "f", 40_000)
    os.link(root / "data" / "f", big / "link")
    return root


class Scanner:
    """Runs real scans with the shared pool into a real SQLite file."""

    def __init__(self, pool: ScanPool, db: Path, engine: str = "auto") -> None:
        self.pool = pool
        self.db = db
        self.engine = engine

    def config(self, **values: Any) -> Config:
        flags = {k.replace("_", "-"): v for k, v in values.items()}
        flags.setdefault("db-path", str(self.db))
        flags.setdefault("max-procs", 2)
        flags.setdefault("ignore-dirs", [])
        flags.setdefault("scan-engine", self.engine)
        return config_mod.build({}, {}, flags, {"HOME": str(self.db.parent)})

    def scan(self, **values: Any) -> dict[bytes, DirRow]:
        """Scan with these config values; the exported rows by path."""
        cfg = self.config(**values)
        store = Store.open(cfg.db_path)
        try:
            roots = [os.fsencode(r.path) for r in cfg.roots]
            ok = ScanRunner(cfg, self.pool, store, ScanStatus(roots)).scan_all(
                threading.Event()
            )
        finally:
            store.close()
        assert ok, "the scan failed"
        return {r.path: r for r in Reader(cfg.db_path).snapshot().rows}


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Nothing can be created in ``path`` (even by root: ``chattr +i``).

    Skips the test where the attribute cannot be set (not root, or a
    filesystem without it).
    """
    if os.geteuid() != 0:
        pytest.skip("chattr +i needs root (mode 0555 does not stop root)")
    done = subprocess.run(
        ["chattr", "+i", os.fsencode(path)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"chattr +i impossible here: {done.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", os.fsencode(path)], check=True)


def metrics_render(
    tmp_path: Path, fresh: CollectorRegistry
) -> Callable[[str, bool], tuple[Body, str, bool]]:
    """What the daemon serves at /metrics: an :class:`Exposition` of a
    real (empty) store, with *fresh* as its self metrics."""
    root = tmp_path / "metrics-root"
    root.mkdir(exist_ok=True)
    db = tmp_path / "metrics-state" / "du.db"
    cfg = config_mod.build(
        {},
        {},
        {"analyzed-path": str(root), "db-path": str(db)},
        {"HOME": str(tmp_path)},
    )
    Store.open(db).close()
    return Exposition(Reader(db), lambda: cfg, fresh).render
def worker_pids() -> set[int]:
    """This process's scan workers (``python -m du_exporter.scan.worker``)."""
    pids = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            for pid in map(int, (task / "children").read_text().split()):
                with contextlib.suppress(OSError):
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    if b"du_exporter.scan.worker" in argv:
                        pids.add(pid)
    return pids


@contextlib.contextmanager
def mounted(*args: str | Path) -> Iterator[None]:
    """``mount ARGS...`` (the last one is the mount point) for the block;
    the test is skipped where mounting is not allowed."""
    done = subprocess.run(["mount", *map(str, args)], capture_output=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount here (not root?): {done.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(args[-1])], check=True)


def new_workers(before: set[int], count: int, timeout: float = 10.0) -> set[int]:
    """The scan workers started since ``before``, once ``count`` are seen.

    ``/proc/PID/task/TID/children`` is only a snapshot (the kernel documents
    it as unreliable while children change), so poll until ``count`` show up
    or ``timeout`` passes; the caller asserts on what was found.
    """
    deadline = time.monotonic() + timeout
    pids = worker_pids() - before
    while len(pids) < count and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = worker_pids() - before
    return pids


def ioprio_of(pid: int) -> int:
    """ioprio_get(2) of a process; -1 where unknown."""
    nr = {"x86_64": 252, "aarch64": 31, "i686": 290, "armv7l": 315}.get(
        platform.machine()
    )
    if nr is None:
        return -1
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.syscall(nr, 1, pid))  # 1: IOPRIO_WHO_PROCESS
