"""Completing a generation: hard links placed once, subtrees summed.

Runs inside the transaction that makes the generation visible.

Sizes, device and inode numbers are unsigned 64-bit, SQLite's INTEGER
is signed: every such value is stored as its two's-complement
reinterpretation (:func:`to_sql`, read back with :func:`from_sql`), and
the SQL that adds them sums the high and low 32-bit halves apart (each
sum fits in 64 bits) and recombines them, saturating at 2**64 - 1 as du
does (:func:`sql_add`).
"""

from __future__ import annotations

import sqlite3

from du_exporter.scan.model import saturate


_HALF = 0xFFFFFFFF
#: Columns of ``units`` holding stored u64 values.
U64_COLUMNS = frozenset({"own_disk", "own_apparent", "disk", "apparent"})


def to_sql(value: int) -> int:
    """An unsigned 64-bit value (saturated) as the int64 SQLite stores."""
    value = saturate(value)
    return value - 2**64 if value >= 2**63 else value


def from_sql(value: int) -> int:
    """The unsigned value of a stored :func:`to_sql` number."""
    return int(value) % 2**64


def sql_unsigned(x: str) -> str:
    """SQL reading stored value ``x`` back as a number >= 0: an INTEGER
    below 2**63, else a REAL (rounded to float64, as exposed anyway)."""
    return f"(CASE WHEN {x} < 0 THEN {x} + 18446744073709551616.0 ELSE {x} END)"


def sql_halves(x: str) -> tuple[str, str]:
    """SQL for the unsigned high and low 32 bits of stored value ``x``."""
    return f"(({x} >> 32) & {_HALF})", f"({x} & {_HALF})"


def sql_join(hi: str, lo: str) -> str:
    """SQL storing ``hi * 2**32 + lo`` (sums of halves), saturated."""
    top = f"(({hi}) + (({lo}) >> 32))"
    return (
        f"(CASE WHEN {top} > {_HALF} THEN -1"
        f" ELSE ({top} << 32) | (({lo}) & {_HALF}) END)"
    )


def sql_sum(x: str) -> tuple[str, str]:
    """SQL aggregates: the sums of ``x``'s high and low halves."""
    hi, lo = sql_halves(x)
    return f"SUM({hi})", f"SUM({lo})"


def sql_add(x: str, hi_sum: str, lo_sum: str) -> str:
    """SQL storing ``x`` plus the sums of halves ``hi_sum``, ``lo_sum``."""
    hi, lo = sql_halves(x)
    return sql_join(f"{hi} + {hi_sum}", f"{lo} + {lo_sum}")


def owners_with_links(
    c: sqlite3.Connection, gen_id: int, owners: dict[int, list[int]]
) -> dict[int, list[int]]:
    """Add each link's inode once to its owner (where du meets it first)."""
    out = {uid: list(sums) for uid, sums in owners.items()}
    dh, dl = sql_sum("disk")
    ah, al = sql_sum("apparent")
    for uid, *halves in c.execute(
        f"SELECT uid, {dh}, {dl}, {ah}, {al} FROM"  # noqa: S608 - constant SQL
        " (SELECT uid, disk, apparent, row_number() OVER"
        "   (PARTITION BY dev, ino ORDER BY key) AS rn"
        "  FROM links WHERE gen = ?) WHERE rn = 1 GROUP BY uid",
        (gen_id,),
    ):
        sums = out.setdefault(int(uid), [0, 0])
        sums[0] += (halves[0] << 32) + halves[1]
        sums[1] += (halves[2] << 32) + halves[3]
    return {uid: [saturate(v) for v in sums] for uid, sums in out.items()}


def resolve_links(c: sqlite3.Connection, gen_id: int) -> None:
    """Count each (dev, ino) once, in the row where du meets it first
    (its own sums and its subtree's, which start out equal)."""
    dh, dl = sql_sum("disk")
    ah, al = sql_sum("apparent")
    c.execute(
        f"UPDATE units SET own_disk = {sql_add('own_disk', 'l.dh', 'l.dl')},"  # noqa: S608 - constant SQL
        f" own_apparent = {sql_add('own_apparent', 'l.ah', 'l.al')},"
        f" disk = {sql_add('disk', 'l.dh', 'l.dl')},"
        f" apparent = {sql_add('apparent', 'l.ah', 'l.al')}"
        f" FROM (SELECT unit, {dh} AS dh, {dl} AS dl, {ah} AS ah, {al} AS al"
        "   FROM (SELECT unit, disk, apparent, row_number() OVER"
        "     (PARTITION BY dev, ino ORDER BY key) AS rn"
        "    FROM links WHERE gen = ?) WHERE rn = 1 GROUP BY unit) AS l"
        " WHERE units.gen = ? AND units.id = l.unit",
        (gen_id, gen_id),
    )


def sum_subtrees(c: sqlite3.Connection, gen_id: int) -> None:
    """Fold every row into its parent, deepest first (the subtree columns
    were stored equal to the row's own, links included)."""
    depths = [r[0] for r in c.execute(
        "SELECT DISTINCT depth FROM units WHERE gen = ? AND depth > 0"
        " ORDER BY depth DESC",
        (gen_id,),
    )]
    dh, dl = sql_sum("disk")
    ah, al = sql_sum("apparent")
    for depth in depths:
        c.execute(
            f"UPDATE units SET disk = {sql_add('units.disk', 's.dh', 's.dl')},"  # noqa: S608 - constant SQL
            f" apparent = {sql_add('units.apparent', 's.ah', 's.al')},"
            " files = units.files + s.f,"
            " dirs = units.dirs + s.n, mtime = max(units.mtime, s.m)"
            f" FROM (SELECT parent, {dh} AS dh, {dl} AS dl, {ah} AS ah,"
            f"   {al} AS al, SUM(files) AS f, SUM(dirs) AS n, MAX(mtime) AS m"
            "   FROM units WHERE gen = ? AND depth = ? GROUP BY parent) AS s"
            " WHERE units.gen = ? AND units.id = s.parent",
            (gen_id, depth, gen_id),
        )
