"""The worker pool: priorities, dead workers, clean shutdown."""

from __future__ import annotations

import os
import signal
import threading
import time

from pathlib import Path

import pytest

from du_exporter.errors import ScanError
from du_exporter.scan.model import Plan, Unit, UnitResult
from du_exporter.scan.pool import ScanPool
from du_exporter.store.rows import UnitRow
from helpers import du, ioprio_of, new_workers, worker_pids, write


def plan_for(root: Path, iops: float = 0.0) -> tuple[Plan, Unit]:
    st = os.stat(root)
    plan = Plan(
        exports=((os.fsencode(root), 1),),
        ignore=(),
        one_file_system=False,
        follow_symlinks=False,
        root_dev=st.st_dev,
        iops=iops,
    )
    top = Unit(os.fsencode(root), b"", st.st_blocks * 512, st.st_size,
               st.st_mtime, dev=st.st_dev, ino=st.st_ino)
    return plan, top


def nice_of(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[16])


class TestPriority:
    """scan-priority lowers the workers, not the exporter."""

    @pytest.mark.parametrize(
        ("level", "nice", "ioclass"), [("normal", 0, None), ("low", 10, 2), ("idle", 19, 3)]
    )
    def test_levels(self, tmp_path, level, nice, ioclass):
        write(tmp_path / "t" / "f", 10)
        plan, top = plan_for(tmp_path / "t")
        before = worker_pids()
        with ScanPool(2, level) as pool:
            pool.walk(plan, top, lambda *_: None, threading.Event())
            pids = new_workers(before, 2)
            assert 2 == len(pids)
            for pid in pids:
                want = (nice + os.nice(0), ioclass)

                def seen(pid: int = pid) -> tuple[int, int | None]:
                    io = ioprio_of(pid) >> 13 if ioclass is not None else None
                    return nice_of(pid), io

                deadline = time.monotonic() + 10  # until the worker started
                while seen() != want and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert want == seen()
        assert 0 == nice_of(os.getpid()) - os.nice(0)


class TestWorkerImports:
    """A worker loads the scanner only: every module costs every worker."""

    #: Pulled in by ``dataclasses`` (``inspect`` with ``ast``, ``dis`` and
    #: ``tokenize``: 1.5 MiB) and by ctypes (0.3 MiB, for ioprio_set).
    HEAVY = frozenset({"dataclasses", "inspect", "ast", "dis", "tokenize",
                       "ctypes", "platform"})

    @staticmethod
    def imported(stderr: str) -> set[str]:
        return {line.rpartition("|")[2].strip()
                for line in stderr.splitlines()
                if line.startswith("import time:")}

    @pytest.mark.parametrize("level", ["normal", "low"])
    def test_no_heavy_modules(self, tmp_path, capfd, monkeypatch, level):
        write(tmp_path / "t" / "d" / "f", 10)
        plan, top = plan_for(tmp_path / "t")
        # The workers inherit it and list every import on stderr (ours).
        monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
        # Under pytest-cov the workers would start coverage, which imports
        # inspect, dataclasses and platform itself: not what a user runs.
        for name in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"):
            monkeypatch.delenv(name, raising=False)
        with ScanPool(1, level) as pool:
            pool.walk(plan, top, lambda *_: None, threading.Event())
        monkeypatch.delenv("PYTHONPROFILEIMPORTTIME")
        seen = self.imported(capfd.readouterr().err)
        assert {"du_exporter.scan.walker", "du_exporter.scan.model"} <= seen
        if level == "normal":
            assert set() == seen & self.HEAVY
        else:  # the check sees a lazy import: ioprio_set needs ctypes
            assert "ctypes" in seen
            assert set() == seen & (self.HEAVY - {"ctypes"})


class TestFailures:
    """A dead worker fails the walk; it never hangs."""

    def test_killed_worker_fails_the_scan(self, tmp_path):
        root = tmp_path / "t"
        for i in range(200):
            (root / f"d{i}").mkdir(parents=True)
        plan, top = plan_for(root, iops=50)  # slow: ~2 s per worker

        before = worker_pids()
        with ScanPool(2) as pool:
            pids = new_workers(before, 2)

            def kill_all() -> None:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)

            killer = threading.Timer(0.5, kill_all)
            killer.start()
            with pytest.raises(ScanError, match="scan worker failed"):
                pool.walk(plan, top, lambda *_: None, threading.Event())
            # The pool starts fresh workers for the next walk.
            results: list[UnitResult] = []
            plan, top = plan_for(root)
            pool.walk(plan, top, lambda r, *_: results.append(r), threading.Event())
            disk = sum(UnitRow(*row).disk for r in results for row in r.rows)
            assert du(root, "-sB1")[os.fsencode(root)] == disk

    def test_terminate_reaps_everything(self, tmp_path):
        write(tmp_path / "t" / "f", 10)
        before = worker_pids()
        pool = ScanPool(2)
        pids = new_workers(before, 2)
        assert 2 == len(pids)
        pool.terminate()
        assert not pool.alive()
        for pid in pids:
            with pytest.raises(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
