"""Completing a generation: hard links placed once, subtrees summed.

Runs inside the transaction that makes the generation visible.
"""

from __future__ import annotations

import sqlite3


def owners_with_links(
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


def resolve_links(c: sqlite3.Connection, gen: int) -> None:
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


def sum_subtrees(c: sqlite3.Connection, gen: int) -> None:
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
