"""The writer's side of the store: one writer, one generation per scan.

A scan writes its units into a new generation in batched transactions;
the generation becomes visible (``status = 'complete'``) in the same
transaction that computes its subtree totals, so a reader sees either
the previous generation or the new one, never a mix.  A crash leaves a
``running`` generation that :meth:`Store.open` deletes.
"""

from __future__ import annotations

import json
import sqlite3

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from du_exporter.errors import MigrationError, StoreError
from du_exporter.scan.model import Link, Row
from du_exporter.store.completion import (
    owners_with_links,
    resolve_links,
    sum_subtrees,
    to_sql,
)
from du_exporter.store.db import atomic, connect, enable_wal
from du_exporter.store.schema import SCHEMA_VERSION, migrate, user_version


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Store:
    """The writer's handle on the database (one per process)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self._identity = _identity(path)

    def replaced(self) -> bool:
        """The file at ``path`` is gone, or is not the one this store has
        open (deleted with its directory, or replaced): a cheap stat."""
        return _identity(self.path) != self._identity

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open or create the database, migrate it, drop partial scans."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            msg = f"db-path {str(path)!r}: cannot create its directory: {e.strerror}"
            raise StoreError(msg) from None
        conn = connect(path, readonly=False)
        try:
            # Refuse a newer schema before touching the file at all.
            if user_version(conn) > SCHEMA_VERSION:
                migrate(conn)  # raises, naming both versions
            enable_wal(conn, path)
            conn.execute("PRAGMA synchronous = NORMAL")
            # A small page cache: SQLite's default 2 MiB grows with the
            # database and took the process tree past its 64 MiB budget on
            # a 4M-entry tree; 256 KiB keeps it flat (+1.5 % from 1M to 4M)
            # and the writer is not the bottleneck (benchmarks/README.md).
            conn.execute("PRAGMA cache_size = -256")
            migrate(conn)
            store = cls(path, conn)
            store.drop_incomplete()
        except MigrationError as e:
            conn.close()
            msg = f"db-path {str(path)!r}: {e}"
            raise MigrationError(msg) from None
        except sqlite3.Error as e:
            conn.close()
            msg = f"db-path {str(path)!r}: {e}"
            if isinstance(e, sqlite3.DatabaseError) and "not a database" in str(e):
                msg = f"db-path {str(path)!r}: not a SQLite database (corrupt?)"
            raise StoreError(msg) from None
        except StoreError:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self.conn.close()

    def atomic(self) -> AbstractContextManager[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE … COMMIT``; roll back on any error."""
        return atomic(self.conn, self.path, "write")

    def drop_incomplete(self) -> int:
        """Delete generations a crash or a failed scan left behind."""
        with self.atomic() as c:
            gen_ids = [r[0] for r in c.execute(
                "SELECT id FROM generations WHERE status != 'complete'"
            )]
            self._delete(c, gen_ids)
        return len(gen_ids)

    @staticmethod
    def _delete(c: sqlite3.Connection, gen_ids: Sequence[int]) -> None:
        for gen_id in gen_ids:
            c.execute("DELETE FROM units WHERE gen = ?", (gen_id,))
            c.execute("DELETE FROM links WHERE gen = ?", (gen_id,))
            c.execute("DELETE FROM generations WHERE id = ?", (gen_id,))

    def begin_generation(self, root: bytes, started: float) -> int:
        with self.atomic() as c:
            cur = c.execute(
                "INSERT INTO generations (root, started) VALUES (?, ?)",
                (root, started),
            )
            return int(cur.lastrowid or 0)

    def write_batch(
        self, gen_id: int, units: Sequence[Row], links: Sequence[Link]
    ) -> None:
        """Store one batch of rows and links in one transaction.

        The workers' tuples are bound as they are, with no tuple rebuilt
        per row; only a batch holding a value from 2**63 on (SQLite's
        INTEGER is signed: a sparse giant, some inode numbers) is rolled
        back and written again with such values as :func:`to_sql` stores
        them.
        """
        try:
            self._write(gen_id, units, links)
        except OverflowError:
            self._write(
                gen_id,
                [(*u[:6], to_sql(u[6]), to_sql(u[7]), *u[8:]) for u in units],
                [(unit, to_sql(dev), to_sql(ino), key, to_sql(disk),
                  to_sql(apparent), uid)
                 for unit, dev, ino, key, disk, apparent, uid in links],
            )

    def _write(
        self,
        gen_id: int,
        units: Sequence[Sequence[object]],
        links: Sequence[Sequence[object]],
    ) -> None:
        gen = int(gen_id)
        with self.atomic() as c:
            # The subtree columns start as the row's own sums (most rows
            # have no row below them): completion then only adds.
            c.executemany(
                "INSERT INTO units (gen, id, parent, depth, path, root, level,"  # noqa: S608 - an int
                " own_disk, own_apparent, own_files, own_dirs, own_mtime,"
                f" disk, apparent, files, dirs, mtime) VALUES ({gen}, ?1, ?2,"
                " ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?7, ?8, ?9, ?10, ?11)",
                units,
            )
            if links:
                c.executemany(
                    "INSERT INTO links (gen, unit, dev, ino, key, disk,"  # noqa: S608 - an int
                    f" apparent, uid) VALUES ({gen}, ?, ?, ?, ?, ?, ?, ?)",
                    links,
                )

    def complete_generation(
        self,
        gen_id: int,
        *,
        finished: float,
        entries: int,
        unreadable: int,
        histogram: Sequence[tuple[float, int]],
        histogram_sum: int,
        keep: int,
        owners: dict[int, list[int]] | None = None,
    ) -> None:
        """Sum the subtrees, publish the generation, prune old ones.

        ``owners`` (uid -> [disk, apparent], links excluded) turns on the
        per-owner sums; the links are added here, once each.
        """
        hist = json.dumps({"buckets": list(histogram), "sum": histogram_sum})
        with self.atomic() as c:
            owned = None if owners is None else json.dumps(
                owners_with_links(c, gen_id, owners)
            )
            c.execute("UPDATE generations SET owners = ? WHERE id = ?", (owned, gen_id))
            resolve_links(c, gen_id)
            sum_subtrees(c, gen_id)
            c.execute("DELETE FROM links WHERE gen = ?", (gen_id,))
            c.execute("DELETE FROM units WHERE gen = ? AND root IS NULL", (gen_id,))
            c.execute(
                "UPDATE generations SET status = 'complete', finished = ?,"
                " entries = ?, unreadable = ?, histogram = ? WHERE id = ?",
                (finished, entries, unreadable, hist, gen_id),
            )
            root = c.execute(
                "SELECT root FROM generations WHERE id = ?", (gen_id,)
            ).fetchone()[0]
            old = [r[0] for r in c.execute(
                "SELECT id FROM generations WHERE root = ? AND status ="
                " 'complete' ORDER BY id DESC LIMIT -1 OFFSET ?",
                (root, keep),
            )]
            self._delete(c, old)

    def fail_generation(self, gen_id: int) -> None:
        with self.atomic() as c:
            self._delete(c, [gen_id])

