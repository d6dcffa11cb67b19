"""Unsigned 64-bit sizes and inode numbers through a real SQLite file.

SQLite's INTEGER is signed: values are stored as their two's complement
and summed by 32-bit halves, saturating at 2**64 - 1 like du.
"""

from __future__ import annotations

import sqlite3

from pathlib import Path

import pytest

from du_exporter.scan.model import U64_MAX
from du_exporter.store.completion import (
    from_sql,
    sql_add,
    sql_join,
    sql_sum,
    to_sql,
)
from du_exporter.store.reader import Reader
from du_exporter.store.rows import UnitRow
from du_exporter.store.writer import Store


EDGES = [0, 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 2, U64_MAX]
ROOT = b"/huge"


@pytest.mark.parametrize("value", EDGES)
def test_round_trip(value: int) -> None:
    stored = to_sql(value)
    assert -(2**63) <= stored < 2**63
    assert from_sql(stored) == value


def test_beyond_u64_saturates() -> None:
    assert from_sql(to_sql(2**64)) == U64_MAX
    assert from_sql(to_sql(2**70)) == U64_MAX


@pytest.mark.parametrize(
    ("values", "start"),
    [
        ([2**62, 2**62], 0),  # 2**63: past int64, not wrapped
        ([2**63 - 1, 2**63], 0),  # exactly 2**64 - 1
        ([2**63, 2**63], 0),  # saturates
        ([U64_MAX, 1], 0),
        ([2**32 - 1, 1, 2**32 - 1], 2**32 - 1),  # carries between halves
        ([2**63 - 1, 2**63 - 1], 1),  # 2**64 - 1 with the start
        ([2**63 - 1, 2**63 - 1], 2),  # one more: saturates
        ([5, 7], 2**63 + 3),
        (EDGES, 0),
    ],
)
def test_sql_sums_saturate(tmp_path: Path, values: list[int], start: int) -> None:
    conn = sqlite3.connect(tmp_path / "sums.db")
    conn.execute("CREATE TABLE t (x INTEGER NOT NULL)")
    conn.execute("CREATE TABLE acc (y INTEGER NOT NULL)")
    conn.executemany("INSERT INTO t VALUES (?)", [(to_sql(v),) for v in values])
    conn.execute("INSERT INTO acc VALUES (?)", (to_sql(start),))
    hi, lo = sql_sum("x")
    total = conn.execute(f"SELECT {sql_join(hi, lo)} FROM t").fetchone()[0]  # noqa: S608
    assert from_sql(total) == min(sum(values), U64_MAX)
    conn.execute(
        f"UPDATE acc SET y = {sql_add('acc.y', 's.h', 's.l')}"  # noqa: S608
        f" FROM (SELECT {hi} AS h, {lo} AS l FROM t) AS s"
    )
    added = conn.execute("SELECT y FROM acc").fetchone()[0]
    assert from_sql(added) == min(start + sum(values), U64_MAX)
    conn.close()


def test_huge_sizes_and_inodes_in_the_store(tmp_path: Path) -> None:
    """Units of 2**63 bytes, a hard link of inode 2**64 - 2 met twice."""
    db = tmp_path / "du.db"
    store = Store.open(db)
    try:
        gen = store.begin_generation(ROOT, 1.0)
        big = 2**63 - 1
        store.write_batch(
            gen,
            [
                UnitRow(0, None, 0, ROOT, ROOT, 0, 4096, 4096, 0, 2, 1.0),
                UnitRow(1, 0, 1, ROOT + b"/a", ROOT, 1, 2**62, 2**62, 2, 0, 1.0),
                UnitRow(2, 0, 1, ROOT + b"/b", ROOT, 1, 2**62 + 1, 2**62, 2, 0, 1.0),
            ],
            [
                (1, 2**64 - 5, 2**64 - 2, b"\x00\x00", big, big, 2**31),
                (2, 2**64 - 5, 2**64 - 2, b"\x00\x01", big, big, 2**31),
                (2, 2**64 - 5, 2**63, b"\x00\x01\x00", big, big, 2**31),
            ],
        )
        store.complete_generation(
            gen, finished=2.0, entries=6, unreadable=0,
            histogram=[(float("inf"), 3)], histogram_sum=3 * big, keep=2,
            owners={0: [2**63, 2**63]},
        )
    finally:
        store.close()
    snap = Reader(db).snapshot()
    rows = {r.path: r for r in snap.rows}
    assert rows[ROOT + b"/a"].disk == 2**62 + big  # the link, met first here
    assert rows[ROOT + b"/b"].disk == 2**62 + 1 + big  # the other inode only
    assert rows[ROOT].disk == U64_MAX  # saturated like du
    assert rows[ROOT].apparent == U64_MAX
    owners = {uid: (d, a) for uid, d, a in snap.generations[ROOT].owners}
    assert owners == {0: (2**63, 2**63), 2**31: (2 * big, 2 * big)}
