"""The readers' side of the store: scrapes and operator commands.

Each read opens its own read-only connection and runs in one
transaction, so it sees one consistent state from any thread.
"""

from __future__ import annotations

import os
import sqlite3

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from du_exporter.errors import StoreError
from du_exporter.store.completion import U64_COLUMNS, sql_unsigned
from du_exporter.store.db import connect
from du_exporter.store.rows import (
    GEN_COLUMNS,
    ROW_COLUMNS,
    DirRow,
    Generation,
    Snapshot,
    dir_row,
    generation,
)
from du_exporter.store.schema import user_version


_VALUE_COLUMNS = frozenset({"disk", "apparent", "files", "dirs", "mtime"})


class Reader:
    """Read-only access for scrapes and operator commands.

    Each call opens its own connection and reads inside one transaction,
    so it is safe from any thread and sees one consistent state.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = connect(self.path, readonly=True)
        try:
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            msg = f"db-path {str(self.path)!r}: read failed: {e}"
            raise StoreError(msg) from e
        finally:
            conn.close()

    def snapshot(self, *, with_rows: bool = True) -> Snapshot:
        with self._read() as c:
            gens = ReadSession(c).latest_generations()
            rows: list[DirRow] = []
            if with_rows:
                for g in gens.values():
                    rows.extend(
                        dir_row(r) for r in c.execute(
                            f"SELECT {ROW_COLUMNS} FROM units WHERE gen = ?"  # noqa: S608 - constant columns
                            " ORDER BY path",
                            (g.id,),
                        )
                    )
        return Snapshot(generations=gens, rows=rows)

    def generations(self) -> list[tuple[int, bytes, str, float | None, int]]:
        """Every generation: id, root, status, finished, exported rows."""
        with self._read() as c:
            return [
                (int(r[0]), bytes(r[1]), str(r[2]), r[3], int(r[4]))
                for r in c.execute(
                    "SELECT g.id, g.root, g.status, g.finished,"
                    " (SELECT count(*) FROM units u WHERE u.gen = g.id"
                    "  AND u.root IS NOT NULL)"
                    " FROM generations g ORDER BY g.id"
                )
            ]

    def generation_key(self) -> tuple[tuple[bytes, int], ...]:
        """(root, id) of the latest complete generation of every root.

        The cheap check a scrape makes before deciding whether what it
        rendered last time is still current.
        """
        with self._read() as c:
            return tuple(
                (bytes(root), int(gen)) for root, gen in c.execute(
                    "SELECT root, max(id) FROM generations"
                    " WHERE status = 'complete' GROUP BY root ORDER BY root"
                )
            )

    def schema_version(self) -> int:
        with self._read() as c:
            return user_version(c)

    def integrity(self) -> list[str]:
        with self._read() as c:
            return [str(r[0]) for r in c.execute("PRAGMA integrity_check")]

    @contextmanager
    def session(self) -> Iterator[ReadSession]:
        """Several reads in one transaction: one consistent state.

        A scan completing meanwhile (and pruning an old generation) is
        not seen until the session ends, so the generations listed are
        the ones whose rows are read.
        """
        with self._read() as c:
            yield ReadSession(c)

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with suppress(OSError):  # no WAL file between checkpoints
                total += os.path.getsize(str(self.path) + suffix)
        return total


class ReadSession:
    """Reads inside one :meth:`Reader.session` transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def latest_generations(self) -> dict[bytes, Generation]:
        """The latest complete generation of every root, oldest first."""
        return {
            g.root: g
            for g in map(generation, self.conn.execute(
                f"SELECT {GEN_COLUMNS} FROM generations WHERE id IN"  # noqa: S608 - constant columns
                " (SELECT max(id) FROM generations"
                "  WHERE status = 'complete' GROUP BY root) ORDER BY id"
            ))
        }

    def columns(
        self, gen: int, names: Sequence[str]
    ) -> Iterator[tuple[Any, ...]]:
        """(path, root, level, then the value ``names``) of every exported
        row of ``gen``, by path, straight off the cursor: no row object,
        memory constant however many rows there are.
        """
        if not set(names) <= _VALUE_COLUMNS:
            msg = f"not value columns: {names!r}"
            raise ValueError(msg)
        values = "".join(
            f", {sql_unsigned(name) if name in U64_COLUMNS else name}"
            for name in names
        )
        return self.conn.execute(
            f"SELECT path, root, level{values} FROM units"  # noqa: S608 - checked columns
            " WHERE gen = ? AND root IS NOT NULL ORDER BY path",
            (gen,),
        )

    def complete_generations(self) -> list[Generation]:
        """Every complete generation of every root, oldest first."""
        return [
            generation(r) for r in self.conn.execute(
                f"SELECT {GEN_COLUMNS} FROM generations"  # noqa: S608 - constant columns
                " WHERE status = 'complete' ORDER BY id"
            )
        ]

    def rows(self, gen: int, under: bytes = b"/") -> Iterator[DirRow]:
        """Exported rows of ``gen`` at or below ``under``, by path.

        Rows come straight off the cursor (memory stays constant however
        many there are); consume them before the session ends.  Paths
        sort bytewise, as Python sorts ``bytes``.
        """
        sql = (
            f"SELECT {ROW_COLUMNS} FROM units"  # noqa: S608 - constant columns
            " WHERE gen = ? AND root IS NOT NULL"
        )
        args: tuple[object, ...] = (gen,)
        if under != b"/":
            # Everything in [under + "/", under + "0"): "0" follows "/".
            sql += " AND (path = ? OR (path >= ? AND path < ?))"
            args += (under, under + b"/", under + b"0")
        for r in self.conn.execute(sql + " ORDER BY path", args):
            yield dir_row(r)

    def find_dir(
        self, gen: int, depth: int, path: bytes, parent: int | None = None
    ) -> tuple[int, DirRow] | None:
        """The exported directory ``path`` of ``gen`` and its unit id.

        ``depth`` is the depth below the walked root.  With ``parent``
        (the unit id of the directory above) this probes the index on
        ``(gen, depth, parent)``: only the parent's children are read.
        Without it the whole depth is searched (a nested root whose
        parent directory has no row).
        """
        sql = (
            f"SELECT id, {ROW_COLUMNS} FROM units"  # noqa: S608 - constant columns
            # Without statistics SQLite would rather scan the primary key
            # (gen, id): the whole generation.
            " INDEXED BY units_depth"
            " WHERE gen = ? AND depth = ? AND path = ? AND root IS NOT NULL"
        )
        args: tuple[object, ...] = (gen, depth, path)
        if parent is not None:
            sql += " AND parent = ?"
            args += (parent,)
        row = self.conn.execute(sql, args).fetchone()
        return None if row is None else (int(row[0]), dir_row(row[1:]))

    def child_dirs(
        self, gen: int, depth: int, parent: int
    ) -> list[tuple[int, DirRow]]:
        """Exported directories directly below unit ``parent``, at ``depth``.

        One probe of the index on ``(gen, depth, parent)``; unsorted.
        """
        return [
            (int(r[0]), dir_row(r[1:])) for r in self.conn.execute(
                f"SELECT id, {ROW_COLUMNS} FROM units"  # noqa: S608 - constant columns
                " INDEXED BY units_depth"
                " WHERE gen = ? AND depth = ? AND parent = ?"
                " AND root IS NOT NULL",
                (gen, depth, parent),
            )
        ]
