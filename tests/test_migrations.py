"""Old databases, built from frozen schemas, are upgraded and keep serving."""

from __future__ import annotations

import sqlite3

from pathlib import Path

import pytest

from du_exporter.store.reader import Reader
from du_exporter.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    migrate,
    user_version,
)
from du_exporter.store.writer import Store
from schemas import FROZEN, create, tables


def v1_database(path: Path) -> None:
    """What du-exporter 0.1 (schema 1) left: one complete generation."""
    create(path, 1)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO generations (id, root, started, finished, status,"
        " entries, unreadable, histogram) VALUES (7, ?, 1.0, 2.0,"
        " 'complete', 3, 0, NULL)",
        (b"/data",),
    )
    conn.execute(
        "INSERT INTO units (gen, id, parent, depth, path, root, level,"
        " own_disk, own_apparent, own_files, own_dirs, own_mtime, disk,"
        " apparent, files, dirs, mtime) VALUES"
        " (7, 0, NULL, 0, ?, ?, 0, 4096, 4096, 2, 0, 5.0, 12288, 5000, 2, 0, 5.0)",
        (b"/data", b"/data"),
    )
    conn.close()


class TestUpgrade:
    def test_v1_is_upgraded_and_served(self, tmp_path: Path) -> None:
        db = tmp_path / "old.db"
        v1_database(db)
        assert 1 == user_version(sqlite3.connect(db))
        Store.open(db).close()
        conn = sqlite3.connect(db)
        assert SCHEMA_VERSION == user_version(conn)
        columns = {r[1] for r in conn.execute("PRAGMA table_info(links)")}
        assert "uid" in columns
        conn.close()
        snap = Reader(db).snapshot()
        assert 12288 == snap.rows[0].disk
        assert () == snap.generations[b"/data"].owners

    def test_current_schema_is_frozen(self, tmp_path: Path) -> None:
        """A fresh database has the newest frozen schema, exactly."""
        assert SCHEMA_VERSION in FROZEN, "freeze the new schema in schemas.py"
        Store.open(tmp_path / "fresh.db").close()
        create(tmp_path / "frozen.db", SCHEMA_VERSION)

        assert tables(tmp_path / "frozen.db") == tables(tmp_path / "fresh.db")

    @pytest.mark.parametrize("version", sorted(FROZEN))
    def test_each_release_upgrades_to_the_current_schema(
        self, tmp_path: Path, version: int
    ) -> None:
        """Migrating a frozen old schema gives what a fresh database has."""
        old = tmp_path / "old.db"
        create(old, version)
        Store.open(old).close()
        Store.open(tmp_path / "fresh.db").close()

        assert SCHEMA_VERSION == user_version(sqlite3.connect(old))
        assert tables(tmp_path / "fresh.db") == tables(old)

    def test_every_step_bumps_the_version_once(self, tmp_path: Path) -> None:
        conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
        for version in range(1, SCHEMA_VERSION + 1):
            assert 1 == migrate(conn, MIGRATIONS[:version])
            assert version == user_version(conn)
        assert 0 == migrate(conn)


class TestWatchTable:
    def test_v1_and_v2_gain_the_watch_table_and_keep_serving(
        self, tmp_path: Path
    ) -> None:
        for version in (1, 2):
            db = tmp_path / f"v{version}.db"
            v1_database(db)
            conn = sqlite3.connect(db, isolation_level=None)
            migrate(conn, MIGRATIONS[:version])
            conn.close()
            Store.open(db).close()
            conn = sqlite3.connect(db)
            assert SCHEMA_VERSION == user_version(conn)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(watch_dirs)")}
            assert {"walk", "path", "own_disk", "own_mtime", "links"} <= columns
            conn.close()
            assert 12288 == Reader(db).snapshot().rows[0].disk
