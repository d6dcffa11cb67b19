"""Row types of the store: what the writer stores and readers get back."""

from __future__ import annotations

import json

from dataclasses import dataclass
from typing import Any, NamedTuple

from du_exporter.scan.model import Link
from du_exporter.store.completion import from_sql


class UnitRow(NamedTuple):
    """One row as the writer stores it: a :data:`~du_exporter.scan.model.Row`
    with names (the scan sends plain tuples)."""

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


#: (row id, dev, ino, order key, disk, apparent, uid)
LinkRow = Link


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

    gen_id: int
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


GEN_COLUMNS = (
    "id, root, started, finished, entries, unreadable, histogram, owners"
)
ROW_COLUMNS = "gen, path, root, level, disk, apparent, files, dirs, mtime"


def dir_row(row: tuple[Any, ...]) -> DirRow:
    """A :data:`ROW_COLUMNS` row as read from the store."""
    gen, path, root, level, disk, apparent, files, dirs, mtime = row
    return DirRow(gen, path, root, level, from_sql(disk), from_sql(apparent),
                  files, dirs, mtime)


def generation(row: tuple[Any, ...]) -> Generation:
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

