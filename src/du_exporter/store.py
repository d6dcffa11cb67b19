"""The SQLite store: one writer, many readers, one generation per scan.

A scan writes its units into a new generation in batched transactions;
the generation becomes visible (``status = 'complete'``) in the same
transaction that computes its subtree totals, so a reader sees either
the previous generation or the new one, never a mix.  A crash leaves a
``running`` generation that :meth:`Store.open` deletes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from du_exporter.errors import MigrationError, StoreError
from du_exporter.migrations import SCHEMA_VERSION, migrate, user_version


@dataclass(frozen=True)
class UnitRow:
    """One walked unit as the writer stores it."""

    id: int
    parent: int | None
    depth: int
    path: bytes
    root: bytes | None
    level: int | None
    disk: int
    apparent: int
    files: int
    dirs: int
    mtime: float


#: (unit id, dev, ino, order key, disk, apparent, uid)
LinkRow = tuple[int, int, int, bytes, int, int, int]


@dataclass(frozen=True)
class Generation:
    """A complete scan of one walked root."""

    id: int
    root: bytes
    started: float
    finished: float
    entries: int
    unreadable: int
    histogram: tuple[tuple[float, int], ...]
    histogram_sum: int
    #: (uid, disk, apparent) over the walked root; empty unless
    #: owner-usage was on for this scan.
    owners: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class DirRow:
    """One exported directory of a complete generation."""

    gen: int
    path: bytes
    root: bytes
    level: int
    disk: int
    apparent: int
    files: int
    dirs: int
    mtime: float


@dataclass(frozen=True)
class Snapshot:
    """The latest complete generation of every root, read in one go."""

    generations: dict[bytes, Generation]
    rows: list[DirRow]

    @property
    def key(self) -> tuple[tuple[bytes, int], ...]:
        """The same as :meth:`Reader.generation_key` for this snapshot."""
        return tuple(sorted((root, g.id) for root, g in self.generations.items()))


_GEN_COLUMNS = (
    "id, root, started, finished, entries, unreadable, histogram, owners"
)
_ROW_COLUMNS = "gen, path, root, level, disk, apparent, files, dirs, mtime"


def _generation(row: tuple[Any, ...]) -> Generation:
    hist: dict[str, Any] = (
        json.loads(str(row[6])) if row[6] else {"buckets": [], "sum": 0}
    )
    return Generation(
        id=int(row[0]),
        root=bytes(row[1]),
        started=float(row[2]),
        finished=float(row[3]),
        entries=int(row[4]),
        unreadable=int(row[5]),
        histogram=tuple((float(le), int(n)) for le, n in hist["buckets"]),
        histogram_sum=int(hist["sum"]),
        owners=tuple(
            (int(uid), int(d), int(a))
            for uid, (d, a) in sorted(
                json.loads(str(row[7])).items() if row[7] else [],
                key=lambda item: int(item[0]),
            )
        ),
    )


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro"
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
    except sqlite3.Error as e:
        msg = f"db-path {str(path)!r}: cannot open the database: {e}"
        raise StoreError(msg) from None
    return conn


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        msg = f"db-path {str(path)!r}: cannot switch to WAL mode ({mode})"
        raise StoreError(msg)


class Store:
    """The writer's handle on the database (one per process)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

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
            _enable_wal(conn, path)
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

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE … COMMIT``; roll back on any error."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.Error as e:
            msg = f"db-path {str(self.path)!r}: write failed: {e}"
            raise StoreError(msg) from e

    def drop_incomplete(self) -> int:
        """Delete generations a crash or a failed scan left behind."""
        with self.atomic() as c:
            gens = [r[0] for r in c.execute(
                "SELECT id FROM generations WHERE status != 'complete'"
            )]
            self._delete(c, gens)
        return len(gens)

    @staticmethod
    def _delete(c: sqlite3.Connection, gens: Sequence[int]) -> None:
        for gen in gens:
            c.execute("DELETE FROM units WHERE gen = ?", (gen,))
            c.execute("DELETE FROM links WHERE gen = ?", (gen,))
            c.execute("DELETE FROM generations WHERE id = ?", (gen,))

    def begin_generation(self, root: bytes, started: float) -> int:
        with self.atomic() as c:
            cur = c.execute(
                "INSERT INTO generations (root, started) VALUES (?, ?)",
                (root, started),
            )
            return int(cur.lastrowid or 0)

    def write_batch(
        self, gen: int, units: Sequence[UnitRow], links: Sequence[LinkRow]
    ) -> None:
        """Store one batch of units and links in one transaction."""
        with self.atomic() as c:
            c.executemany(
                "INSERT INTO units (gen, id, parent, depth, path, root, level,"
                " own_disk, own_apparent, own_files, own_dirs, own_mtime)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (gen, u.id, u.parent, u.depth, u.path, u.root, u.level,
                     u.disk, u.apparent, u.files, u.dirs, u.mtime)
                    for u in units
                ],
            )
            c.executemany(
                "INSERT INTO links (gen, unit, dev, ino, key, disk, apparent,"
                " uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(gen, *link) for link in links],
            )

    def complete_generation(
        self,
        gen: int,
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
                _owners_with_links(c, gen, owners)
            )
            c.execute("UPDATE generations SET owners = ? WHERE id = ?", (owned, gen))
            _resolve_links(c, gen)
            _sum_subtrees(c, gen)
            c.execute("DELETE FROM links WHERE gen = ?", (gen,))
            c.execute("DELETE FROM units WHERE gen = ? AND root IS NULL", (gen,))
            c.execute(
                "UPDATE generations SET status = 'complete', finished = ?,"
                " entries = ?, unreadable = ?, histogram = ? WHERE id = ?",
                (finished, entries, unreadable, hist, gen),
            )
            root = c.execute(
                "SELECT root FROM generations WHERE id = ?", (gen,)
            ).fetchone()[0]
            old = [r[0] for r in c.execute(
                "SELECT id FROM generations WHERE root = ? AND status ="
                " 'complete' ORDER BY id DESC LIMIT -1 OFFSET ?",
                (root, keep),
            )]
            self._delete(c, old)

    def fail_generation(self, gen: int) -> None:
        with self.atomic() as c:
            self._delete(c, [gen])


def _owners_with_links(
    c: sqlite3.Connection, gen: int, owners: dict[int, list[int]]
) -> dict[int, list[int]]:
    """Add each link's inode once to its owner (where du meets it first)."""
    out = {uid: list(sums) for uid, sums in owners.items()}
    for uid, disk, apparent in c.execute(
        "SELECT uid, SUM(disk), SUM(apparent) FROM"
        " (SELECT uid, disk, apparent, row_number() OVER"
        "   (PARTITION BY dev, ino ORDER BY key) AS rn"
        "  FROM links WHERE gen = ?) WHERE rn = 1 GROUP BY uid",
        (gen,),
    ):
        sums = out.setdefault(int(uid), [0, 0])
        sums[0] += int(disk)
        sums[1] += int(apparent)
    return out


def _resolve_links(c: sqlite3.Connection, gen: int) -> None:
    """Count each (dev, ino) once, in the unit where du meets it first."""
    c.execute(
        "UPDATE units SET own_disk = own_disk + l.d,"
        " own_apparent = own_apparent + l.a"
        " FROM (SELECT unit, SUM(disk) AS d, SUM(apparent) AS a FROM"
        "   (SELECT unit, disk, apparent, row_number() OVER"
        "     (PARTITION BY dev, ino ORDER BY key) AS rn"
        "    FROM links WHERE gen = ?) WHERE rn = 1 GROUP BY unit) AS l"
        " WHERE units.gen = ? AND units.id = l.unit",
        (gen, gen),
    )


def _sum_subtrees(c: sqlite3.Connection, gen: int) -> None:
    """Fold every unit into its parent, deepest first."""
    c.execute(
        "UPDATE units SET disk = own_disk, apparent = own_apparent,"
        " files = own_files, dirs = own_dirs, mtime = own_mtime"
        " WHERE gen = ?",
        (gen,),
    )
    depths = [r[0] for r in c.execute(
        "SELECT DISTINCT depth FROM units WHERE gen = ? AND depth > 0"
        " ORDER BY depth DESC",
        (gen,),
    )]
    for depth in depths:
        c.execute(
            "UPDATE units SET disk = units.disk + s.d,"
            " apparent = units.apparent + s.a, files = units.files + s.f,"
            " dirs = units.dirs + s.n, mtime = max(units.mtime, s.m)"
            " FROM (SELECT parent, SUM(disk) AS d, SUM(apparent) AS a,"
            "   SUM(files) AS f, SUM(dirs) AS n, MAX(mtime) AS m"
            "   FROM units WHERE gen = ? AND depth = ? GROUP BY parent) AS s"
            " WHERE units.gen = ? AND units.id = s.parent",
            (gen, depth, gen),
        )


class Reader:
    """Read-only access for scrapes and operator commands.

    Each call opens its own connection and reads inside one transaction,
    so it is safe from any thread and sees one consistent state.
    """

    def __init__(
        self, path: Path, tracer: Callable[[str], None] | None = None
    ) -> None:
        self.path = path
        #: Called with every SQL statement run (tests, benchmarks).
        self.tracer = tracer

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = connect(self.path, readonly=True)
        if self.tracer is not None:
            conn.set_trace_callback(self.tracer)
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
            gens = {
                g.root: g
                for g in map(_generation, c.execute(
                    f"SELECT {_GEN_COLUMNS} FROM generations WHERE id IN"  # noqa: S608 - constant columns
                    " (SELECT max(id) FROM generations"
                    "  WHERE status = 'complete' GROUP BY root)"
                ))
            }
            rows: list[DirRow] = []
            if with_rows:
                for g in gens.values():
                    rows.extend(
                        DirRow(*r) for r in c.execute(
                            f"SELECT {_ROW_COLUMNS} FROM units WHERE gen = ?"  # noqa: S608 - constant columns
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

    def complete_generations(self) -> list[Generation]:
        """Every complete generation of every root, oldest first."""
        return [
            _generation(r) for r in self.conn.execute(
                f"SELECT {_GEN_COLUMNS} FROM generations"  # noqa: S608 - constant columns
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
            f"SELECT {_ROW_COLUMNS} FROM units"  # noqa: S608 - constant columns
            " WHERE gen = ? AND root IS NOT NULL"
        )
        args: tuple[object, ...] = (gen,)
        if under != b"/":
            # Everything in [under + "/", under + "0"): "0" follows "/".
            sql += " AND (path = ? OR (path >= ? AND path < ?))"
            args += (under, under + b"/", under + b"0")
        for r in self.conn.execute(sql + " ORDER BY path", args):
            yield DirRow(*r)

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
            f"SELECT id, {_ROW_COLUMNS} FROM units"  # noqa: S608 - constant columns
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
        return None if row is None else (int(row[0]), DirRow(*row[1:]))

    def child_dirs(
        self, gen: int, depth: int, parent: int
    ) -> list[tuple[int, DirRow]]:
        """Exported directories directly below unit ``parent``, at ``depth``.

        One probe of the index on ``(gen, depth, parent)``; unsorted.
        """
        return [
            (int(r[0]), DirRow(*r[1:])) for r in self.conn.execute(
                f"SELECT id, {_ROW_COLUMNS} FROM units"  # noqa: S608 - constant columns
                " INDEXED BY units_depth"
                " WHERE gen = ? AND depth = ? AND parent = ?"
                " AND root IS NOT NULL",
                (gen, depth, parent),
            )
        ]


__all__ = [
    "SCHEMA_VERSION", "DirRow", "Generation", "ReadSession", "Reader",
    "Snapshot", "Store", "UnitRow",
]
