"""Opening the SQLite file: one place for connection settings."""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from du_exporter.errors import StoreError


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro"
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            # The daemon opens its writer in the main thread and scans in
            # another: one thread at a time, never two (daemon.py).
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False
            )
        conn.execute("PRAGMA busy_timeout = 10000")
    except sqlite3.Error as e:
        msg = f"db-path {str(path)!r}: cannot open the database: {e}"
        raise StoreError(msg) from None
    # Page cache (and in-memory sort) of at most 256 KiB instead of
    # SQLite's 2 MiB: a render sorts every row of a generation, and
    # beyond this the sort goes to a temporary file (TMPDIR), not to
    # resident memory; measured no slower at 100,000 rows.  It reads the
    # header: a file that is no database is reported by the caller's
    # first read, as before.
    with contextlib.suppress(sqlite3.DatabaseError):
        conn.execute("PRAGMA cache_size = -256")
        # The sort's temporary b-trees in a file even where SQLite was
        # built to keep them in memory by default (SQLITE_TEMP_STORE=2).
        conn.execute("PRAGMA temp_store = FILE")
    return conn


def enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        msg = f"db-path {str(path)!r}: cannot switch to WAL mode ({mode})"
        raise StoreError(msg)



@contextmanager
def atomic(
    conn: sqlite3.Connection, path: Path, what: str
) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE … COMMIT`` on ``conn``; roll back on any
    error.  A database error is a :class:`StoreError` naming db-path and
    ``what`` failed."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        msg = f"db-path {str(path)!r}: {what} failed: {e}"
        raise StoreError(msg) from e
