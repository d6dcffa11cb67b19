"""Crashes, signals and database faults: nothing lost, nothing faked.

Real exporter processes, real SIGKILL/SIGTERM, real SQLite files, a real
full filesystem; GNU du is the reference.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from du_exporter.paths import label_path
from du_exporter.store.reader import Reader
from du_exporter.store.schema import SCHEMA_VERSION
from exporter import (
    Exporter,
    Samples,
    descendants,
    parse,
    sizes,
    value,
    wait_gone,
)
from helpers import (
    clean_env,
    du_labels,
    immutable,
    one_error_line,
    run,
    write,
)


def make_tree(base: Path, dirs: int = 40, subdirs: int = 5) -> Path:
    """``dirs`` times ``subdirs`` leaf directories holding two files each."""
    for i in range(dirs):
        for j in range(subdirs):
            leaf = base / f"d{i}" / f"e{j}"
            write(leaf / "f1", 100 * (i + 1) + j)
            write(leaf / "f2", 5000 + j)
    return base


def usage(samples: Samples) -> Samples:
    """Every directory and histogram sample: what a scan produced."""
    return {k: v for k, v in samples.items() if k[0].startswith("node_disk_usage")}


def generations(db: Path) -> list[tuple[int, str, float]]:
    """(id, status, started) of every generation, read without du-exporter."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT id, status, started FROM generations"
        ).fetchall()
    finally:
        conn.close()


def integrity(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def db_check_statuses(output: str) -> dict[int, str]:
    """``du-exporter db check`` output: generation id -> status."""
    rows = {}
    for line in output.splitlines():
        fields = line.split()
        if line.startswith("  ") and len(fields) > 1 and fields[0].isdigit():
            rows[int(fields[0])] = fields[1]
    return rows


def units_written(db: Path) -> int:
    """Rows the running generation holds so far (0: none running)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(
            "SELECT count(*) FROM units WHERE gen IN"
            " (SELECT id FROM generations WHERE status = 'running')"
        ).fetchone()[0])
    finally:
        conn.close()


def until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.0005)


#: Scan continuously, one row per transaction, slowly (~1 s per scan).
CRASH_ARGS = (
    "--dir-level", "2",
    "--batch-size", "1",
    "--max-iops", "500",
    "--scan-interval-minutes", "0.001",
)


class TestCrash:
    """SIGKILL at any moment leaves the last complete generation servable."""

    @pytest.mark.slow
    def test_sigkill_at_many_moments(self, tmp_path: Path) -> None:
        root = make_tree(tmp_path / "t", dirs=20)
        units = 1 + 20 + 20 * 5
        args = ("--analyzed-path", str(root), *CRASH_ARGS)
        with Exporter(tmp_path, *args) as exp:
            exp.wait_event("scan_completed")
            reference = usage(exp.scrape())
            total = value(exp.scrape(), "du_exporter_scan_entries", path=str(root))
        assert total == 20 + 20 * 5 + 20 * 5 * 2
        assert du_labels(root, "-B1", "--max-depth=2") == sizes(reference)
        db = tmp_path / "state" / "du.db"

        # Spread over the first scans of each run (every moment is in a
        # batch commit or between two), plus moments around the last units:
        # the last batches, the completion and pruning transaction, the
        # start of the next scan.
        moments: list[tuple[str, float]] = [
            ("delay", 0.1 * i) for i in range(16)
        ] + [("end", d) for d in (0, 0.001, 0.002, 0.005, 0.01)]
        leftovers: list[tuple[int, str, float]] = []
        orphans: list[int] = []
        hit = {"mid-scan": 0, "all-units-written": 0, "between-scans": 0}
        for kind, delay in moments:
            with Exporter(tmp_path, *args) as exp:
                first = exp.scrape()
                # No generation the previous crash left survived start-up
                # (ids are reused, so compare the start times too).
                assert not set(leftovers) & set(generations(db))
                assert reference == usage(first), (kind, delay)
                assert total == value(first, "du_exporter_scan_entries", path=str(root))
                check = subprocess.Popen(
                    [sys.executable, "-m", "du_exporter", "db", "check",
                     "--db-path", str(db)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    env=clean_env(tmp_path),
                )
                if kind == "end":
                    until(lambda: units_written(db) == units)
                time.sleep(delay)
                workers = descendants(exp.proc.pid)
                exp.proc.kill()
                exp.proc.wait()
                orphans += wait_gone(workers)
                out, err = check.communicate(timeout=30)
            assert 0 == check.returncode, err
            assert list(db_check_statuses(out).values()).count("running") <= 1, out
            assert ["ok"] == integrity(db)
            gens = generations(db)
            assert any(g[1] == "complete" for g in gens), "lost the last scan"
            # At most the generation this run was writing: start-up had
            # dropped the one the previous kill left.
            leftovers = [g for g in gens if g[1] == "running"]
            assert len(leftovers) <= 1
            if leftovers:
                conn = sqlite3.connect(db)
                rows = conn.execute(
                    "SELECT count(*) FROM units WHERE gen = ?", leftovers[0][:1]
                ).fetchone()[0]
                conn.close()
                hit["all-units-written" if rows == units else "mid-scan"] += 1
            else:
                hit["between-scans"] += 1
        assert [] == orphans, "workers outlived the killed exporter"
        assert hit["mid-scan"] >= 10, hit
        assert hit["all-units-written"] + hit["between-scans"] >= 1, hit

        with Exporter(tmp_path, *args) as exp:
            assert reference == usage(exp.scrape())
            exp.wait_event("scan_completed")
            samples = exp.scrape()
        assert du_labels(root, "-B1", "--max-depth=2") == sizes(samples)
        assert reference == usage(samples)
        assert ["ok"] == integrity(db)

    def test_sigkill_during_completion(self, tmp_path: Path) -> None:
        """Kill inside the big completion transaction: old or new, no mix.

        A generation of 40,000 units takes a noticeable time to sum and
        publish (and prunes the previous one, ``keep=1``, in the same
        transaction); kill the writer at moments spread over it.
        """
        template = tmp_path / "template.db"
        subprocess.run(
            [sys.executable, "-c", COMPLETION_SCRIPT, str(template), "setup"],
            check=True, timeout=120,
        )
        old = {r.path: r.disk for r in Reader(template).snapshot().rows}
        assert 101 == len(old)

        def attempt(delay: float | None) -> tuple[float, dict[bytes, int]]:
            db = tmp_path / "kill.db"
            db.write_bytes(template.read_bytes())
            proc = subprocess.Popen(
                [sys.executable, "-c", COMPLETION_SCRIPT, str(db), "complete"],
                stdout=subprocess.PIPE, text=True,
            )
            assert proc.stdout is not None
            assert "ready\n" == proc.stdout.readline()
            started = time.monotonic()
            if delay is None:
                assert "done\n" == proc.stdout.readline()
            else:
                time.sleep(delay)
                proc.kill()
            proc.wait()
            proc.stdout.close()
            took = time.monotonic() - started
            assert ["ok"] == integrity(db)
            from du_exporter.store.writer import Store

            Store.open(db).close()  # start-up drops the partial generation
            assert {"complete"} == {g[1] for g in generations(db)}
            return took, {r.path: r.disk for r in Reader(db).snapshot().rows}

        took, new = attempt(None)
        assert {p: 2 * s for p, s in old.items()} == new
        outcomes = [attempt(took * f / 10)[1] for f in range(10)]
        assert all(o in (old, new) for o in outcomes)
        assert outcomes.count(old) >= 5, "no kill landed inside the transaction"


COMPLETION_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from du_exporter.store.db import connect
    from du_exporter.store.rows import UnitRow
    from du_exporter.store.writer import Store

    path, action = Path(sys.argv[1]), sys.argv[2]

    def units(scale):
        rows = [UnitRow(0, None, 0, b"/r", b"/r", 0, 4096 * scale, 1, 0, 0, 1.0)]
        links = []
        for i in range(100):
            a = len(rows)
            rows.append(UnitRow(a, 0, 1, b"/r/%d" % i, b"/r", 1,
                                4096 * scale, 1, 1, 0, 1.0))
            for j in range(400):
                u = len(rows)
                rows.append(UnitRow(u, a, 2, b"/r/%d/%d" % (i, j), None, None,
                                    4096 * scale, 1, 1, 0, 1.0))
                links.append((u, scale, u, b"%08d" % u, 512 * scale, 1, 0))
        return rows, links

    def write(store, scale):
        gen = store.begin_generation(b"/r", 1.0)
        rows, links = units(scale)
        for k in range(0, len(rows), 5000):
            store.write_batch(gen, rows[k:k + 5000], links[k:k + 5000])
        return gen

    def complete(store, gen):
        store.complete_generation(gen, finished=2.0, entries=1, unreadable=0,
                                  histogram=[], histogram_sum=0, keep=1)

    if action == "setup":
        store = Store.open(path)
        complete(store, write(store, 1))
        write(store, 2)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close()
    else:
        # What a writer mid-scan holds: the open database, no start-up.
        conn = connect(path, readonly=False)
        conn.execute("PRAGMA journal_mode = WAL")
        store = Store(path, conn)
        gen = conn.execute(
            "SELECT id FROM generations WHERE status = 'running'"
        ).fetchone()[0]
        print("ready", flush=True)
        complete(store, gen)
        print("done", flush=True)
    """
)


class TestSignals:
    """SIGTERM and SIGINT abandon the scan: nothing half-visible."""

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
    def test_stop_mid_scan(self, tmp_path: Path, sig: signal.Signals) -> None:
        root = make_tree(tmp_path / "t", dirs=20)
        db = tmp_path / "state" / "du.db"
        # Slower than CRASH_ARGS: a scan must outlast the self metrics'
        # 1 s reuse, or its progress may never be seen above 20.
        args = (*CRASH_ARGS[:4], "--max-iops", "150", *CRASH_ARGS[6:])
        with Exporter(tmp_path, "--analyzed-path", str(root), *args) as exp:
            exp.wait_event("scan_completed")
            before = usage(exp.scrape())
            exp.wait_event("scan_started", 2)
            exp.wait_for(lambda s: (value(
                s, "du_exporter_scan_progress_entries", path=str(root)
            ) or 0) > 20)
            workers = descendants(exp.proc.pid)
            assert len(workers) >= 2
            exp.signal(sig)
            assert 0 == exp.proc.wait(10)
            assert [] == wait_gone(workers, timeout=3)
            exp.wait_event("stopped")
            exp.wait_event("scan_aborted")
        assert "Traceback" not in "".join(exp.lines)
        assert not Path(f"{db}-wal").exists(), "not closed cleanly"
        assert {"complete"} == {g[1] for g in generations(db)}
        check = run(tmp_path, "db", "check", "--db-path", db)
        assert 0 == check.returncode, check.stderr
        assert "running" not in check.stdout
        snap = Reader(db).snapshot()
        assert sizes(before) == {label_path(r.path): r.disk for r in snap.rows}


def corrupt(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(os.urandom(8192))


def newer(db: Path) -> None:
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")  # as du-exporter writes it
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


def directory(db: Path) -> None:
    db.mkdir(parents=True)


def parent_is_file(db: Path) -> None:
    db.parent.parent.mkdir(parents=True, exist_ok=True)
    db.parent.write_text("")


BAD_DATABASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt": (corrupt, "not a SQLite database"),
    "newer-schema": (newer, f"schema version {SCHEMA_VERSION + 1} is newer"),
    "is-a-directory": (directory, "cannot open the database"),
    "parent-is-a-file": (parent_is_file, "cannot create its directory"),
}


class TestDatabaseFaults:
    """A bad database is one clear line on stderr and exit code 1."""

    @pytest.mark.parametrize("mode", ["http", "file"])
    @pytest.mark.parametrize("case", sorted(BAD_DATABASES))
    def test_bad_database(self, tmp_path: Path, case: str, mode: str) -> None:
        make_db, reason = BAD_DATABASES[case]
        root = make_tree(tmp_path / "t", dirs=2)
        db = tmp_path / "state" / "sub" / "du.db"
        make_db(db)
        before = db.read_bytes() if db.is_file() else None
        proc = run(
            tmp_path, "--mode", mode, "--analyzed-path", root, "--db-path", db,
            "--bind-address", "127.0.0.1:0", "--output-file", tmp_path / "o.prom",
            timeout=30,
        )
        assert 1 == proc.returncode
        line = one_error_line(proc)
        assert reason in line
        if case != "newer-schema":  # that message names no path
            assert repr(str(db)) in line
        assert not (tmp_path / "o.prom").exists()
        if before is not None:
            assert before == db.read_bytes()

    @pytest.mark.parametrize("command", [["top"], ["db", "check"], ["db", "backup", "b.db"]])
    def test_corrupt_database_commands(self, tmp_path: Path, command: list[str]) -> None:
        db = tmp_path / "state" / "du.db"
        corrupt(db)
        proc = run(tmp_path, *command, "--db-path", db)
        assert 1 == proc.returncode
        assert "not a database" in one_error_line(proc)

    @pytest.mark.parametrize("mode", ["http", "file"])
    def test_read_only_directory(self, tmp_path: Path, mode: str) -> None:
        root = make_tree(tmp_path / "t", dirs=2)
        locked = tmp_path / "locked"
        locked.mkdir()
        with immutable(locked):
            proc = run(
                tmp_path, "--mode", mode, "--analyzed-path", root,
                "--db-path", locked / "du.db", "--bind-address", "127.0.0.1:0",
                "--output-file", tmp_path / "o.prom",
            )
            nested = run(
                tmp_path, "--mode", mode, "--analyzed-path", root,
                "--db-path", locked / "state" / "du.db",
                "--bind-address", "127.0.0.1:0",
                "--output-file", tmp_path / "o.prom",
            )
        assert 1 == proc.returncode
        assert "cannot open the database" in one_error_line(proc)
        assert 1 == nested.returncode
        assert "cannot create its directory" in one_error_line(nested)
        assert [] == os.listdir(locked)

    def test_locked_briefly_is_waited_for(self, tmp_path: Path) -> None:
        """Another writer's transaction: wait for it (busy_timeout)."""
        root = make_tree(tmp_path / "t", dirs=2)
        db = tmp_path / "state" / "du.db"
        assert 0 == run(tmp_path, "--mode", "file", "--analyzed-path", root,
                        "--db-path", db).returncode
        with exclusive(db) as release:
            threading.Timer(1.5, release).start()
            started = time.monotonic()
            proc = run(tmp_path, "--mode", "file", "--analyzed-path", root,
                       "--db-path", db, "--output-file", tmp_path / "o.prom")
        assert 0 == proc.returncode, proc.stderr
        assert time.monotonic() - started >= 1.4
        assert du_labels(root, "-B1", "--max-depth=2") == sizes(
            parse((tmp_path / "o.prom").read_text())
        )

    @pytest.mark.slow
    def test_locked_for_good(self, tmp_path: Path) -> None:
        """Held past busy_timeout (10 s): one line, exit 1, readers fine."""
        root = make_tree(tmp_path / "t", dirs=2)
        db = tmp_path / "state" / "du.db"
        assert 0 == run(tmp_path, "--mode", "file", "--analyzed-path", root,
                        "--db-path", db).returncode
        with exclusive(db):
            started = time.monotonic()
            proc = run(tmp_path, "--mode", "file", "--analyzed-path", root,
                       "--db-path", db, "--output-file", tmp_path / "o.prom")
            took = time.monotonic() - started
            top = run(tmp_path, "top", "--db-path", db, "--format", "json")
        assert 1 == proc.returncode
        assert "database is locked" in one_error_line(proc)
        # It waited out the busy timeout, then gave up (the lock is held
        # until after the run returns).
        assert 9 <= took
        assert 0 == top.returncode, top.stderr
        assert not (tmp_path / "o.prom").exists()


class exclusive:  # noqa: N801 - used like a function
    """``BEGIN EXCLUSIVE`` on ``db`` in this process until released."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.lock = threading.Lock()

    def release(self) -> None:
        with self.lock:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def __enter__(self) -> Callable[[], None]:
        self.conn.execute("BEGIN EXCLUSIVE")
        return self.release

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.conn.close()


@pytest.fixture(name="small_fs")
def _small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: the database's filesystem runs full."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True, check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr!r}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def grow(root: Path, dirs: int = 40, subdirs: int = 50) -> None:
    """Enough directories at dir-level 3 to need more than 256 KiB.

    Built aside and renamed in, so a scan sees all of them or none.
    """
    staging = root.parent / "staging"
    for i in range(dirs):
        for j in range(subdirs):
            (staging / f"b{i}" / f"e{j}").mkdir(parents=True)
    staging.rename(root / "big")


def disk_full(exp: Exporter, count: int = 1, timeout: float = 30) -> dict[str, object]:
    """The ``count``-th error event about the full disk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [
            e for e in exp.events
            if e.get("level") == "error" and "disk is full" in str(e.get("error"))
        ]
        if len(found) >= count:
            return found[count - 1]
        time.sleep(0.02)
    msg = f"no disk-full error #{count}; stderr:\n{''.join(exp.lines)}"
    raise AssertionError(msg)


def completed(exp: Exporter) -> int:
    return sum(e.get("event") == "scan_completed" for e in exp.events)


class TestDiskFull:
    """The database's filesystem is full: keep serving, log, retry."""

    def full(self, tmp_path: Path, small_fs: Path) -> tuple[Exporter, Path, Samples]:
        root = make_tree(tmp_path / "t", dirs=3, subdirs=2)
        exp = Exporter(
            tmp_path, "--analyzed-path", str(root), "--dir-level", "3",
            "--db-path", str(small_fs / "du.db"),
            "--scan-interval-minutes", "0.01", "--batch-size", "100",
        )
        exp.wait_event("scan_completed")
        before = usage(exp.scrape())
        assert du_labels(root, "-B1", "--max-depth=3") == sizes(before)
        grow(root)
        disk_full(exp)
        return exp, root, before

    def test_keeps_serving_and_retries(self, tmp_path: Path, small_fs: Path) -> None:
        exp, root, before = self.full(tmp_path, small_fs)
        with exp:
            error = str(disk_full(exp)["error"])
            assert "database or disk is full" in error
            assert str(small_fs / "du.db") in error
            assert before == usage(exp.scrape())
            disk_full(exp, 2)  # retried on the next interval
            assert before == usage(exp.scrape())
            assert 200 == exp.get("/-/ready")[0]
            # Space comes back: the next scan completes.
            done = completed(exp)
            subprocess.run(
                ["mount", "-o", "remount,size=8m", str(small_fs)], check=True
            )
            exp.wait_event("scan_completed", done + 1)
            after = exp.scrape()
            gens = generations(small_fs / "du.db")
        assert du_labels(root, "-B1", "--max-depth=3") == sizes(after)
        assert not [line for line in exp.lines if not line.startswith("{")]
        assert ["ok"] == integrity(small_fs / "du.db")
        # The failed attempts left nothing behind (only a scan running now).
        last = max(g[0] for g in gens if g[1] == "complete")
        assert [] == [g for g in gens if g[1] != "complete" and g[0] < last]

    def test_failed_scan_is_counted(self, tmp_path: Path, small_fs: Path) -> None:
        exp, root, _ = self.full(tmp_path, small_fs)
        with exp:
            samples = exp.scrape()
        assert 1 <= (value(
            samples, "du_exporter_scans_total", path=str(root), result="error"
        ) or 0)
        assert str(root) == disk_full(exp)["root"]


class TestIoBudget:
    """``max-iops`` caps directory reads plus stats for the whole pool."""

    def test_small_units_stay_in_budget(self, tmp_path: Path) -> None:
        root = tmp_path / "t"
        for i in range(20):
            for j in range(20):
                write(root / f"d{i}" / f"e{j}" / "f1", 1)
                write(root / f"d{i}" / f"e{j}" / "f2", 1)
        out = tmp_path / "o.prom"
        proc = run(tmp_path, "--mode", "file", "--analyzed-path", root,
                   "--dir-level", "2", "--max-iops", "600", "--output-file", out)
        assert 0 == proc.returncode, proc.stderr
        samples = parse(out.read_text())
        seconds = value(samples, "du_exporter_scan_duration_seconds", path=str(root))
        stats = value(samples, "du_exporter_scan_entries", path=str(root))
        assert (seconds, stats) != (None, None)
        assert stats == 1220
        reads = 421
        assert (reads + stats) / (seconds or 1) <= 600 * 1.25
