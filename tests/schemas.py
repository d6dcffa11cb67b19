"""Frozen copies of every released database schema, as SQL text.

A migration test builds an old database from these, never from the live
migration steps, so a step edited by mistake cannot move its own
reference.  When a schema version is added, freeze it here.
"""

from __future__ import annotations

import sqlite3

from pathlib import Path


#: The version 1 schema exactly as du-exporter 0.1.0 created it, frozen
#: here so that a database from that release keeps opening after the
#: schema moves on.
V1_SCHEMA = """
CREATE TABLE generations (
    id INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'complete', 'failed')),
    entries INTEGER NOT NULL DEFAULT 0,
    unreadable INTEGER NOT NULL DEFAULT 0,
    histogram TEXT
);
CREATE INDEX generations_root ON generations (root, status, id);
CREATE TABLE units (
    gen INTEGER NOT NULL,
    id INTEGER NOT NULL,
    parent INTEGER,
    depth INTEGER NOT NULL,
    path BLOB NOT NULL,
    root BLOB,
    level INTEGER,
    own_disk INTEGER NOT NULL,
    own_apparent INTEGER NOT NULL,
    own_files INTEGER NOT NULL,
    own_dirs INTEGER NOT NULL,
    own_mtime REAL NOT NULL,
    disk INTEGER,
    apparent INTEGER,
    files INTEGER,
    dirs INTEGER,
    mtime REAL,
    PRIMARY KEY (gen, id)
) WITHOUT ROWID;
CREATE INDEX units_depth ON units (gen, depth, parent);
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


#: The version 2 schema (owner usage: ``links.uid``, ``generations.owners``)
#: as du-exporter creates it, frozen the same way.
V2_SCHEMA = """
CREATE TABLE generations (
    id INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'complete', 'failed')),
    entries INTEGER NOT NULL DEFAULT 0,
    unreadable INTEGER NOT NULL DEFAULT 0,
    histogram TEXT,
    owners TEXT
);
CREATE INDEX generations_root ON generations (root, status, id);
CREATE TABLE units (
    gen INTEGER NOT NULL,
    id INTEGER NOT NULL,
    parent INTEGER,
    depth INTEGER NOT NULL,
    path BLOB NOT NULL,
    root BLOB,
    level INTEGER,
    own_disk INTEGER NOT NULL,
    own_apparent INTEGER NOT NULL,
    own_files INTEGER NOT NULL,
    own_dirs INTEGER NOT NULL,
    own_mtime REAL NOT NULL,
    disk INTEGER,
    apparent INTEGER,
    files INTEGER,
    dirs INTEGER,
    mtime REAL,
    PRIMARY KEY (gen, id)
) WITHOUT ROWID;
CREATE INDEX units_depth ON units (gen, depth, parent);
CREATE TABLE links (
    gen INTEGER NOT NULL,
    unit INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    key BLOB NOT NULL,
    disk INTEGER NOT NULL,
    apparent INTEGER NOT NULL,
    uid INTEGER NOT NULL DEFAULT 0
);
"""

#: The version 3 schema (watch mode: ``watch_dirs``, every walked
#: directory's own sums), frozen the same way.
V3_SCHEMA = V2_SCHEMA + """
CREATE TABLE watch_dirs (
    walk BLOB NOT NULL,
    path BLOB NOT NULL,
    parent BLOB,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    key BLOB NOT NULL,
    own_disk INTEGER NOT NULL,
    own_apparent INTEGER NOT NULL,
    own_files INTEGER NOT NULL,
    own_dirs INTEGER NOT NULL,
    own_mtime REAL NOT NULL,
    links INTEGER NOT NULL,
    PRIMARY KEY (walk, path)
) WITHOUT ROWID;
"""

#: Each frozen schema by its ``user_version``.
FROZEN = {1: V1_SCHEMA, 2: V2_SCHEMA, 3: V3_SCHEMA}


def create(path: Path, version: int) -> None:
    """An empty database of a frozen schema version."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(FROZEN[version])
    conn.execute(f"PRAGMA user_version = {version:d}")
    conn.close()


def tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table, index and column, as SQLite reports them."""
    c = sqlite3.connect(path)
    names = [r[0] for r in c.execute(
        "SELECT name FROM sqlite_master ORDER BY name"
    )]
    out: dict[str, list[tuple[object, ...]]] = {
        "": c.execute(
            "SELECT type, name, tbl_name FROM sqlite_master ORDER BY name"
        ).fetchall()
    }
    out |= {n: c.execute(
        'SELECT name, type, "notnull", dflt_value, pk'
        " FROM pragma_table_xinfo(?)", (n,)
    ).fetchall() for n in names}
    c.close()
    return out
