"""Watch publications: rows of the served generation rewritten in place.

A publication is one transaction on its own connection: the exported
rows that changed are updated, new ones inserted, vanished ones deleted,
the generation's histogram (and owners) replaced, and the directories'
own sums saved in ``watch_dirs``.  No generation is created, so
publications do not consume ``keep-generations``.  A reader sees the
rows before or after a publication, never a mix (WAL snapshot).
"""

from __future__ import annotations

import json
import sqlite3

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from du_exporter.store.db import atomic, connect


@dataclass(frozen=True)
class WatchRow:
    """An exported directory as a publication writes it."""

    id: int
    parent: int | None
    depth: int
    path: bytes
    root: bytes
    level: int
    own: tuple[int, int, int, int, float]
    disk: int
    apparent: int
    files: int
    dirs: int
    mtime: float


#: (path, parent path, dev, ino, key, own disk, apparent, files, dirs,
#: mtime, links)
WatchDirRow = tuple[bytes, bytes | None, int, int, bytes, int, int, int, int, float, int]


@dataclass(frozen=True)
class Publication:
    """Everything one publication changes for one walk."""

    walk: bytes
    gen: int
    upsert: Sequence[WatchRow]
    delete: Sequence[int]
    dirs: Sequence[WatchDirRow]
    gone_dirs: Sequence[bytes]
    histogram: Sequence[tuple[float, int]]
    histogram_sum: int
    owners: dict[int, list[int]] | None
    #: Replace every exported row and every watch_dirs row of the walk.
    replace: bool = False


class WatchRows:
    """The watch thread's own connection to the database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path, readonly=False)

    def close(self) -> None:
        self.conn.close()

    def _atomic(self) -> AbstractContextManager[sqlite3.Connection]:
        return atomic(self.conn, self.path, "watch publication")

    def served(self, walk: bytes) -> int | None:
        """The generation of ``walk`` that scrapes read now."""
        row = self.conn.execute(
            "SELECT max(id) FROM generations WHERE root = ? AND status = 'complete'",
            (walk,),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def publish(self, pub: Publication) -> bool:
        """Apply ``pub``; False (nothing written) if its generation is no
        longer the served one (a scan completed meanwhile)."""
        with self._atomic() as c:
            if self.served(pub.walk) != pub.gen:
                return False
            if pub.replace:
                c.execute(
                    "DELETE FROM units WHERE gen = ? AND root IS NOT NULL",
                    (pub.gen,),
                )
                c.execute("DELETE FROM watch_dirs WHERE walk = ?", (pub.walk,))
            c.executemany(
                "DELETE FROM units WHERE gen = ? AND id = ?",
                [(pub.gen, i) for i in pub.delete],
            )
            c.executemany(
                "INSERT OR REPLACE INTO units (gen, id, parent, depth, path,"
                " root, level, own_disk, own_apparent, own_files, own_dirs,"
                " own_mtime, disk, apparent, files, dirs, mtime) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (pub.gen, r.id, r.parent, r.depth, r.path, r.root, r.level,
                     *r.own, r.disk, r.apparent, r.files, r.dirs, r.mtime)
                    for r in pub.upsert
                ],
            )
            c.executemany(
                "DELETE FROM watch_dirs WHERE walk = ? AND path = ?",
                [(pub.walk, p) for p in pub.gone_dirs],
            )
            c.executemany(
                "INSERT OR REPLACE INTO watch_dirs (walk, path, parent, dev,"
                " ino, key, own_disk, own_apparent, own_files, own_dirs,"
                " own_mtime, links) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(pub.walk, *d) for d in pub.dirs],
            )
            hist = json.dumps(
                {"buckets": list(pub.histogram), "sum": pub.histogram_sum}
            )
            owners = None if pub.owners is None else json.dumps(pub.owners)
            c.execute(
                "UPDATE generations SET histogram = ?, owners = ? WHERE id = ?",
                (hist, owners, pub.gen),
            )
        return True

    def forget(self, walk: bytes) -> None:
        """Drop the walk's directory sums (watch off, or the tree lost)."""
        with self._atomic() as c:
            c.execute("DELETE FROM watch_dirs WHERE walk = ?", (walk,))

    def max_row_id(self, gen: int) -> int:
        row = self.conn.execute(
            "SELECT max(id) FROM units WHERE gen = ?", (gen,)
        ).fetchone()
        return -1 if row is None or row[0] is None else int(row[0])
