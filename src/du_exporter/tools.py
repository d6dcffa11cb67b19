"""Operator tools over the store: top, db check, db backup."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3

from pathlib import Path

from du_exporter.collect import label_path
from du_exporter.config import Config
from du_exporter.errors import StoreError
from du_exporter.migrations import SCHEMA_VERSION
from du_exporter.store import DirRow, Reader, connect


def _require(db_path: Path) -> None:
    if not db_path.is_file():
        msg = f"db-path {str(db_path)!r}: no database there (has a scan run?)"
        raise StoreError(msg)


def top_rows(
    reader: Reader, config: Config, path: str | None, count: int
) -> list[DirRow]:
    """The ``count`` largest directories at or below ``path``."""
    _require(reader.path)
    rows = reader.snapshot().rows
    if path is not None:
        want = os.fsencode(os.path.abspath(path)).rstrip(b"/") or b"/"
        prefix = want if want == b"/" else want + b"/"
        rows = [r for r in rows if r.path == want or r.path.startswith(prefix)]
    key = "disk" if config.size_mode == "disk" else "apparent"
    rows.sort(key=lambda r: (-getattr(r, key), r.path))
    return rows[:count]


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":  # noqa: PLR2004
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def render(rows: list[DirRow], config: Config, fmt: str) -> str:
    """Rows as an aligned table, CSV or JSON (sizes exact in CSV/JSON)."""
    size = "disk" if config.size_mode == "disk" else "apparent"
    records = [
        {
            "path": label_path(r.path),
            "level": r.level,
            "bytes": getattr(r, size),
            "files": r.files,
            "dirs": r.dirs,
            "latest_mtime": r.mtime,
        }
        for r in rows
    ]
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else ["path"])
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue()
    lines = [f"{'SIZE':>10}  {'FILES':>10}  {'DIRS':>8}  PATH"]
    lines += [
        f"{_human(int(r['bytes'])):>10}  {r['files']:>10}  {r['dirs']:>8}  {r['path']}"
        for r in records
    ]
    return "\n".join(lines) + "\n"


def check(db_path: Path) -> tuple[bool, str]:
    """Integrity, schema version and generations, as a short report."""
    _require(db_path)
    reader = Reader(db_path)
    integrity = reader.integrity()
    version = reader.schema_version()
    ok = integrity == ["ok"] and version == SCHEMA_VERSION
    lines = [
        f"integrity: {'; '.join(integrity)}",
        f"schema version: {version} (this du-exporter: {SCHEMA_VERSION})",
        "generations:",
    ]
    for gen, root, status, finished, rows in reader.generations():
        lines.append(
            f"  {gen}  {status:<8}  rows={rows:<8}  finished={finished}  "
            f"root={label_path(root)}"
        )
    lines.append("ok" if ok else "NOT OK")
    return ok, "\n".join(lines) + "\n"


def backup(db_path: Path, dest: Path) -> None:
    """Online backup to ``dest`` (written aside, then renamed)."""
    _require(db_path)
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
