"""The SQLite store on real files: generations, crashes, migrations."""

from __future__ import annotations

import os
import random
import sqlite3

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from du_exporter.errors import MigrationError, StoreError
from du_exporter.store import schema as migrations
from du_exporter.store.reader import Reader
from du_exporter.store.rows import UnitRow
from du_exporter.store.schema import SCHEMA_VERSION, migrate, user_version
from du_exporter.store.writer import Store
from helpers import immutable
from schemas import V1_SCHEMA, tables


ROOT = b"/data"

def units(root: bytes = ROOT, scale: int = 1) -> list[UnitRow]:
    """A small walked tree: root -> a -> a/deep (folded), root -> b.

    ``a/deep`` is below the exported level (``root`` is None): its sums
    fold into ``a`` and the row itself disappears on completion.
    """
    return [
        UnitRow(0, None, 0, root, root, 0, 4096 * scale, 10, 1, 2, 100.0),
        UnitRow(1, 0, 1, root + b"/a", root, 1, 8192 * scale, 20, 2, 1, 50.0),
        UnitRow(2, 1, 2, root + b"/a/deep", None, None, 512 * scale, 3, 4, 0, 300.0),
        UnitRow(3, 0, 1, root + b"/b", root, 1, 1024 * scale, 5, 1, 0, 75.0),
    ]


def complete(store: Store, gen: int, keep: int = 2) -> None:
    store.complete_generation(
        gen,
        finished=2.0,
        entries=8,
        unreadable=0,
        histogram=[(1024.0, 3), (float("inf"), 1)],
        histogram_sum=5000,
        keep=keep,
    )


def scan(
    store: Store, root: bytes = ROOT, scale: int = 1, keep: int = 2
) -> int:
    """A whole generation: begin, one batch per unit, complete."""
    gen = store.begin_generation(root, 1.0)
    for unit in units(root, scale):
        store.write_batch(gen, [unit], [])
    complete(store, gen, keep)
    return gen


def sizes(db: Path) -> dict[bytes, int]:
    return {r.path: r.disk for r in Reader(db).snapshot().rows}


def schema(db: Path) -> tuple[int, list[str]]:
    """user_version and the whole logical content, on a fresh connection."""
    conn = sqlite3.connect(db)
    try:
        return user_version(conn), list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture(name="db")
def _db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "du.db"


@pytest.fixture(name="store")
def _store(db: Path) -> Iterator[Store]:
    s = Store.open(db)
    yield s
    s.close()


class TestGenerations:
    """A generation is visible only once complete, and all at once."""

    def test_sums_and_folding(self, store: Store, db: Path) -> None:
        """Subtrees are summed; the folded unit's row is not exported."""
        scan(store)
        rows = {r.path: r for r in Reader(db).snapshot().rows}
        assert [ROOT, ROOT + b"/a", ROOT + b"/b"] == sorted(rows)
        a = rows[ROOT + b"/a"]
        assert (8192 + 512, 23, 6, 1, 300.0) == (
            a.disk, a.apparent, a.files, a.dirs, a.mtime
        )
        top = rows[ROOT]
        assert 4096 + 8192 + 512 + 1024 == top.disk
        assert (38, 8, 3, 300.0) == (top.apparent, top.files, top.dirs, top.mtime)

    def test_invisible_until_complete(self, store: Store, db: Path) -> None:
        scan(store)
        before = sizes(db)
        gen = store.begin_generation(ROOT, 3.0)
        for unit in units(scale=2):
            store.write_batch(gen, [unit], [])
            assert before == sizes(db)
        assert before == sizes(db)
        complete(store, gen)
        assert {ROOT: 27648, ROOT + b"/a": 17408, ROOT + b"/b": 2048} == sizes(db)

    def test_nothing_visible_before_the_first(self, store: Store, db: Path) -> None:
        gen = store.begin_generation(ROOT, 1.0)
        store.write_batch(gen, units(), [])
        snap = Reader(db).snapshot()
        assert {} == snap.generations
        assert [] == snap.rows

    def test_reader_during_open_write_transaction(
        self, store: Store, db: Path
    ) -> None:
        """WAL: a scrape reads the last commit while a batch is open."""
        scan(store)
        before = sizes(db)
        gen = store.begin_generation(ROOT, 3.0)
        with store.atomic() as c:
            c.execute("UPDATE units SET disk = 1 WHERE gen < ?", (gen,))
            assert before == sizes(db)
        assert dict.fromkeys(before, 1) == sizes(db)

    def test_failed_batch_leaves_nothing(self, store: Store, db: Path) -> None:
        """One batch is one transaction: a failure rolls all of it back."""
        gen = store.begin_generation(ROOT, 1.0)
        bad_link = (0, 1, 2, None, 0, 0, 0)  # key is NOT NULL
        with pytest.raises(StoreError, match="write failed"):
            store.write_batch(gen, units(), [bad_link])  # type: ignore[list-item]
        conn = sqlite3.connect(db)
        assert (0,) == conn.execute("SELECT count(*) FROM units").fetchone()
        conn.close()

    def test_values_past_2_63_in_the_middle_of_a_batch(
        self, store: Store, db: Path
    ) -> None:
        """A batch is bound as the workers sent it; one value SQLite's
        signed INTEGER cannot hold, after rows already inserted, rolls
        the attempt back and the batch is stored whole, once, values
        intact (u64 sums and inode numbers)."""
        gen = store.begin_generation(ROOT, 1.0)
        rows = units()
        rows[3] = rows[3]._replace(disk=2**64 - 50, apparent=2**63)
        store.write_batch(
            gen, rows,
            [(1, 2**64 - 1, 2**63 + 7, b"\x00", 2**63, 1, 0),
             (3, 7, 2**64 - 1, b"\x01", 10, 1, 0)],
        )
        conn = sqlite3.connect(db)
        assert (4, 2) == (
            conn.execute("SELECT count(*) FROM units").fetchone()[0],
            conn.execute("SELECT count(*) FROM links").fetchone()[0],
        )
        conn.close()
        complete(store, gen)
        rows_read = {r.path: r for r in Reader(db).snapshot().rows}
        b = rows_read[ROOT + b"/b"]
        assert (2**64 - 40, 2**63 + 1) == (b.disk, b.apparent)
        assert 2**64 - 1 == rows_read[ROOT].disk  # saturated, as du
        assert 8192 + 512 + 2**63 == rows_read[ROOT + b"/a"].disk

    def test_hard_link_counted_once_where_met_first(
        self, store: Store, db: Path
    ) -> None:
        gen = store.begin_generation(ROOT, 1.0)
        store.write_batch(
            gen,
            units(),
            [
                (3, 7, 42, b"\x00\x02", 10_000, 100, 0),  # in b, met second
                (2, 7, 42, b"\x00\x01\x00", 10_000, 100, 0),  # in a/deep, first
                (3, 7, 43, b"\x00\x02\x01", 700, 7, 0),  # another inode
            ],
        )
        complete(store, gen)
        rows = {r.path: r for r in Reader(db).snapshot().rows}
        assert 8192 + 512 + 10_000 == rows[ROOT + b"/a"].disk
        assert 1024 + 700 == rows[ROOT + b"/b"].disk
        assert 4096 + 8192 + 512 + 1024 + 10_700 == rows[ROOT].disk


class TestCrashLeftovers:
    """Store.open deletes what a crash left behind."""

    def test_running_generation_dropped_on_open(self, db: Path) -> None:
        store = Store.open(db)
        scan(store)
        before = sizes(db)
        gen = store.begin_generation(ROOT, 5.0)
        store.write_batch(gen, units(scale=3), [(1, 1, 1, b"k", 1, 1, 0)])
        store.close()  # the process dies here
        statuses = [g[2] for g in Reader(db).generations()]
        assert ["complete", "running"] == statuses
        Store.open(db).close()
        assert ["complete"] == [g[2] for g in Reader(db).generations()]
        conn = sqlite3.connect(db)
        assert [] == conn.execute(
            "SELECT * FROM units WHERE gen = ? UNION ALL"
            " SELECT gen, unit, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0"
            " FROM links WHERE gen = ?",
            (gen, gen),
        ).fetchall()
        conn.close()
        assert before == sizes(db)

    def test_failed_generation_dropped_on_open(self, db: Path) -> None:
        store = Store.open(db)
        gen = store.begin_generation(ROOT, 5.0)
        store.write_batch(gen, units(), [])
        store.conn.execute(
            "UPDATE generations SET status = 'failed' WHERE id = ?", (gen,)
        )
        store.close()
        Store.open(db).close()
        assert [] == Reader(db).generations()

    def test_commit_persists_across_connections(self, db: Path) -> None:
        """A completed generation is on disk, not in a connection's cache."""
        store = Store.open(db)
        scan(store)
        expected = sizes(db)
        # Another connection sees it while the writer is still open ...
        conn = sqlite3.connect(db)
        assert 3 == conn.execute(
            "SELECT count(*) FROM units WHERE root IS NOT NULL"
        ).fetchone()[0]
        conn.close()
        store.close()
        # ... and a new process-like open after the writer is gone.
        store = Store.open(db)
        store.close()
        assert expected == sizes(db)
        assert "wal" == sqlite3.connect(db).execute(
            "PRAGMA journal_mode"
        ).fetchone()[0]


class TestPruning:
    """keep complete generations per root; other roots are untouched."""

    @pytest.mark.parametrize("keep", [1, 2, 3])
    def test_keep_per_root(self, store: Store, db: Path, keep: int) -> None:
        other = b"/other"
        other_gen = scan(store, other, keep=keep)
        gens = [scan(store, keep=keep) for _ in range(5)]
        running = store.begin_generation(ROOT, 9.0)
        complete_ids = [
            g[0] for g in Reader(db).generations() if g[2] == "complete"
        ]
        assert [other_gen, *gens[-keep:]] == complete_ids
        assert running == Reader(db).generations()[-1][0]
        conn = sqlite3.connect(db)
        in_units = {r[0] for r in conn.execute("SELECT DISTINCT gen FROM units")}
        conn.close()
        assert {other_gen, *gens[-keep:]} == in_units
        snap = Reader(db).snapshot()
        assert {ROOT: gens[-1], other: other_gen} == {
            root: g.id for root, g in snap.generations.items()
        }


def v1_database(path: Path) -> None:
    """A database as 0.1.0 wrote it: v1 schema, one complete scan."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_SCHEMA)
    conn.execute(
        "INSERT INTO generations VALUES (7, ?, 1.0, 2.0, 'complete', 3, 1,"
        " '{\"buckets\": [[1024.0, 2], [Infinity, 1]], \"sum\": 4000}')",
        (ROOT,),
    )
    conn.execute(
        "INSERT INTO units VALUES (7, 0, NULL, 0, ?, ?, 0, 4096, 10, 1, 1,"
        " 1.0, 12288, 30, 3, 1, 9.0)",
        (ROOT, ROOT),
    )
    conn.execute(
        "INSERT INTO units VALUES (7, 1, 0, 1, ?, ?, 1, 8192, 20, 2, 0,"
        " 9.0, 8192, 20, 2, 0, 9.0)",
        (ROOT + b"/a", ROOT),
    )
    conn.execute("INSERT INTO generations (root, started) VALUES (?, 3.0)", (ROOT,))
    conn.execute("PRAGMA user_version = 1")
    conn.close()


def failing_step(exc: BaseException) -> Callable[[sqlite3.Connection], None]:
    def step(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        conn.execute("INSERT INTO half_done VALUES (1)")
        conn.execute("ALTER TABLE units ADD COLUMN extra INTEGER")
        conn.execute("DROP INDEX units_depth")
        raise exc

    return step


class TestMigrations:
    """user_version drives forward-only migrations, one transaction each."""

    @pytest.mark.usefixtures("store")
    def test_fresh_database_gets_current_schema(self, db: Path) -> None:
        version, dump = schema(db)
        assert SCHEMA_VERSION == version
        assert any("CREATE TABLE generations" in line for line in dump)

    def test_v1_fixture_opens(self, db: Path) -> None:
        v1_database(db)
        Store.open(db).close()
        snap = Reader(db).snapshot()
        assert [7] == [g.id for g in snap.generations.values()]
        gen = snap.generations[ROOT]
        assert (3, 1, 4000) == (gen.entries, gen.unreadable, gen.histogram_sum)
        assert ((1024.0, 2), (float("inf"), 1)) == gen.histogram
        assert {ROOT: 12288, ROOT + b"/a": 8192} == sizes(db)
        # The crash leftover of that release is gone too.
        assert ["complete"] == [g[2] for g in Reader(db).generations()]
        assert SCHEMA_VERSION == schema(db)[0]

    def test_v1_fixture_matches_v1_migration(self, tmp_path: Path) -> None:
        """The frozen copy is what migration step 1 creates."""
        fixture = tmp_path / "fixture.db"
        conn = sqlite3.connect(fixture)
        conn.executescript(V1_SCHEMA)
        conn.close()
        migrated = tmp_path / "migrated.db"
        conn = sqlite3.connect(migrated, isolation_level=None)
        migrate(conn, migrations.MIGRATIONS[:1])
        conn.close()

        assert tables(fixture) == tables(migrated)

    def test_newer_version_refused(self, db: Path) -> None:
        Store.open(db).close()
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.close()
        before = schema(db)
        with pytest.raises(MigrationError) as info:
            Store.open(db)
        message = str(info.value)
        assert f"version {SCHEMA_VERSION + 1}" in message
        assert "newer" in message
        assert "upgrade du-exporter" in message
        assert before == schema(db)

    @pytest.mark.parametrize(
        "exc",
        [sqlite3.OperationalError("disk I/O error"), RuntimeError("bug"), KeyboardInterrupt()],
        ids=["sqlite-error", "bug", "interrupt"],
    )
    def test_failed_step_changes_nothing(
        self, db: Path, exc: BaseException
    ) -> None:
        """Step 2 does DDL and DML, then fails: the file is as it was."""
        v1_database(db)
        before = schema(db)
        steps = (migrations.MIGRATIONS[0], failing_step(exc))
        conn = sqlite3.connect(db, isolation_level=None)
        with pytest.raises(type(exc)) if not isinstance(
            exc, sqlite3.Error
        ) else pytest.raises(MigrationError, match="to version 2 failed"):
            migrate(conn, steps)
        assert not conn.in_transaction
        conn.close()
        assert before == schema(db)
        assert 1 == before[0]

    def test_failed_step_from_empty(self, tmp_path: Path) -> None:
        """Steps before the failing one stay applied, each on its own."""
        db = tmp_path / "new.db"
        conn = sqlite3.connect(db, isolation_level=None)
        steps = (migrations.MIGRATIONS[0], failing_step(sqlite3.Error("no")))
        with pytest.raises(MigrationError):
            migrate(conn, steps)
        conn.close()
        version, dump = schema(db)
        assert 1 == version
        assert not any("half_done" in line or "extra" in line for line in dump)
        assert any("units_depth" in line for line in dump)

    def test_migrate_applies_pending_only(self, db: Path) -> None:
        v1_database(db)
        calls: list[int] = []

        def step2(conn: sqlite3.Connection) -> None:
            calls.append(2)
            conn.execute("CREATE TABLE v2 (x INTEGER)")

        conn = sqlite3.connect(db, isolation_level=None)
        assert 1 == migrate(conn, (migrations.MIGRATIONS[0], step2))
        assert 0 == migrate(conn, (migrations.MIGRATIONS[0], step2))
        assert 2 == user_version(conn)
        conn.close()
        assert [2] == calls


class TestOpenErrors:
    """Unusable locations are a StoreError with a clear message."""

    def test_random_bytes(self, db: Path) -> None:
        db.parent.mkdir()
        db.write_bytes(os.urandom(64 * 1024))
        with pytest.raises(StoreError, match="not a SQLite database"):
            Store.open(db)
        with pytest.raises(StoreError, match=str(db)):
            Store.open(db)

    def test_text_file(self, db: Path) -> None:
        db.parent.mkdir()
        db.write_text("analyzed-path: /\n")
        with pytest.raises(StoreError, match="not a SQLite database"):
            Store.open(db)

    def test_corrupt_pages(self, db: Path) -> None:
        """A valid header over garbage pages: an error, not a crash."""
        store = Store.open(db)
        for _ in range(20):
            scan(store, keep=30)
        store.close()
        data = bytearray(db.read_bytes())
        assert len(data) > 4 * 4096
        data[2 * 4096:] = random.Random(5).randbytes(  # noqa: S311 - reproducible garbage
            len(data) - 2 * 4096
        )
        db.write_bytes(bytes(data))
        with pytest.raises(StoreError, match=r"malformed") as info:
            Store.open(db)
        assert str(db) in str(info.value)

    def test_parent_is_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(StoreError, match="cannot create its directory"):
            Store.open(tmp_path / "file" / "sub" / "du.db")

    def test_db_path_is_a_directory(self, db: Path) -> None:
        db.mkdir(parents=True)
        with pytest.raises(StoreError, match="cannot open the database"):
            Store.open(db)

    def test_read_only_directory(self, tmp_path: Path) -> None:
        locked = tmp_path / "locked"
        locked.mkdir()
        with immutable(locked):
            with pytest.raises(StoreError, match="cannot open the database"):
                Store.open(locked / "du.db")
            with pytest.raises(StoreError, match="cannot create its directory"):
                Store.open(locked / "missing" / "du.db")
        assert [] == os.listdir(locked)

