"""Forward-only schema migrations keyed on ``PRAGMA user_version``.

Each step runs in one transaction together with the ``user_version``
bump, so a failed step leaves the file exactly as it was.
"""

from __future__ import annotations

import sqlite3

from collections.abc import Callable

from du_exporter.errors import MigrationError


def _script(conn: sqlite3.Connection, script: str) -> None:
    """Run statements one by one: ``executescript`` would COMMIT first."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""


def _v1(conn: sqlite3.Connection) -> None:
    _script(
        conn,
        """
        CREATE TABLE generations (
            id INTEGER PRIMARY KEY,
            root BLOB NOT NULL,          -- the walked (outermost) root
            started REAL NOT NULL,       -- unix time
            finished REAL,
            status TEXT NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'complete', 'failed')),
            entries INTEGER NOT NULL DEFAULT 0,
            unreadable INTEGER NOT NULL DEFAULT 0,
            histogram TEXT               -- JSON [[le, count]...], sum
        );
        CREATE INDEX generations_root ON generations (root, status, id);
        -- One row per unit (a walked directory with its own sums).  Rows
        -- with a root are exported; the others are folded into their
        -- parent and deleted when the generation completes.
        CREATE TABLE units (
            gen INTEGER NOT NULL,
            id INTEGER NOT NULL,
            parent INTEGER,
            depth INTEGER NOT NULL,      -- below the walked root
            path BLOB NOT NULL,          -- raw bytes, never decoded
            root BLOB,                   -- the configured root exporting it
            level INTEGER,               -- depth below that root
            own_disk INTEGER NOT NULL,
            own_apparent INTEGER NOT NULL,
            own_files INTEGER NOT NULL,
            own_dirs INTEGER NOT NULL,
            own_mtime REAL NOT NULL,
            disk INTEGER,                -- subtree totals, set on completion
            apparent INTEGER,
            files INTEGER,
            dirs INTEGER,
            mtime REAL,
            PRIMARY KEY (gen, id)
        ) WITHOUT ROWID;
        CREATE INDEX units_depth ON units (gen, depth, parent);
        -- Inodes that may be met more than once (hard links, anything
        -- when following symlinks): counted once, where du meets them
        -- first (smallest order key).
        CREATE TABLE links (
            gen INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            dev INTEGER NOT NULL,
            ino INTEGER NOT NULL,
            key BLOB NOT NULL,
            disk INTEGER NOT NULL,
            apparent INTEGER NOT NULL
        );
        """
    )


def _v2(conn: sqlite3.Connection) -> None:
    """Usage per owner: the uid of each link, the sums per generation."""
    _script(
        conn,
        """
        ALTER TABLE links ADD COLUMN uid INTEGER NOT NULL DEFAULT 0;
        -- JSON {uid: [disk, apparent]} of the walked root, when
        -- owner-usage is on.
        ALTER TABLE generations ADD COLUMN owners TEXT;
        """,
    )


def _v3(conn: sqlite3.Connection) -> None:
    """Watch mode: the own sums of every walked directory of a root."""
    _script(
        conn,
        """
        -- One row per walked directory of a watched walk (all depths):
        -- what one read of it found, hard links placed where du meets
        -- them first.  Subtree totals are in units, for exported rows.
        CREATE TABLE watch_dirs (
            walk BLOB NOT NULL,          -- the walked (outermost) root
            path BLOB NOT NULL,
            parent BLOB,
            dev INTEGER NOT NULL,
            ino INTEGER NOT NULL,
            key BLOB NOT NULL,           -- du's order key
            own_disk INTEGER NOT NULL,
            own_apparent INTEGER NOT NULL,
            own_files INTEGER NOT NULL,
            own_dirs INTEGER NOT NULL,
            own_mtime REAL NOT NULL,
            links INTEGER NOT NULL,      -- holds multiply-linked inodes
            PRIMARY KEY (walk, path)
        ) WITHOUT ROWID;
        """,
    )


#: Index i brings a database from user_version i to i + 1.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3)
SCHEMA_VERSION = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(
    conn: sqlite3.Connection,
    steps: tuple[Callable[[sqlite3.Connection], None], ...] = MIGRATIONS,
) -> int:
    """Apply the pending steps; return the number applied.

    The connection must be in autocommit mode (``isolation_level=None``).
    """
    current = user_version(conn)
    if current > len(steps):
        msg = (
            f"database schema version {current} is newer than this "
            f"du-exporter supports ({len(steps)}); upgrade du-exporter"
        )
        raise MigrationError(msg)
    for version in range(current, len(steps)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            steps[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
        except BaseException as e:
            conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                msg = f"schema migration to version {version + 1} failed: {e}"
                raise MigrationError(msg) from e
            raise
        conn.execute("COMMIT")
    return len(steps) - current
