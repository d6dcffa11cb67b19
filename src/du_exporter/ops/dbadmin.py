"""``du-exporter db check`` and ``db backup``."""

from __future__ import annotations

import sqlite3

from pathlib import Path

from du_exporter.errors import StoreError
from du_exporter.ops.select import require_database
from du_exporter.paths import label_path
from du_exporter.store.db import connect
from du_exporter.store.reader import Reader
from du_exporter.store.schema import SCHEMA_VERSION


def check(db_path: Path) -> tuple[bool, str]:
    """Integrity, schema version and generations, as a short report."""
    require_database(db_path)
    reader = Reader(db_path)
    integrity = reader.integrity()
    version = reader.schema_version()
    ok = integrity == ["ok"] and version == SCHEMA_VERSION
    lines = [
        f"integrity: {'; '.join(integrity)}",
        f"schema version: {version} (this du-exporter: {SCHEMA_VERSION})",
        "generations:",
    ]
    for gen_id, root, status, finished, rows in reader.generations():
        lines.append(
            f"  {gen_id}  {status:<8}  rows={rows:<8}  finished={finished}  "
            f"root={label_path(root)}"
        )
    lines.append("ok" if ok else "NOT OK")
    return ok, "\n".join(lines) + "\n"


def backup(db_path: Path, dest: Path) -> None:
    """Online backup to ``dest`` (written aside, then renamed)."""
    require_database(db_path)
    if dest.exists():
        msg = f"backup destination {str(dest)!r} exists; refusing to overwrite"
        raise StoreError(msg)
    tmp = dest.with_name(dest.name + ".partial")
    try:
        src = connect(db_path, readonly=True)
        try:
            dst = sqlite3.connect(tmp)
            with dst:
                src.backup(dst)
            dst.close()
        finally:
            src.close()
        tmp.replace(dest)
    except (sqlite3.Error, OSError) as e:
        tmp.unlink(missing_ok=True)
        msg = f"backup to {str(dest)!r} failed: {e}"
        raise StoreError(msg) from None
