"""Operator tools over the store: top, diff, export, db check, db backup.

Everything here reads the scans already in the database; nothing
rescans.  Machine-readable output carries paths as the labels render
them (:func:`~du_exporter.collect.label_path`) and sizes as exact
integer byte counts.
"""

from __future__ import annotations

import csv
import datetime as dt
import heapq
import io
import itertools
import json
import operator
import os
import re
import sqlite3

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from du_exporter.config import Config
from du_exporter.errors import DuExporterError, StoreError
from du_exporter.paths import display, human_bytes, label_path, size_of, when
from du_exporter.store.db import connect
from du_exporter.store.reader import Reader, ReadSession
from du_exporter.store.rows import DirRow, Generation
from du_exporter.store.schema import SCHEMA_VERSION


def _require(db_path: Path) -> None:
    if not db_path.is_file():
        msg = f"db-path {str(db_path)!r}: no database there (has a scan run?)"
        raise StoreError(msg)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdwy])")


def parse_since(text: str, now: float) -> float:
    """A point in time: ``now`` minus a duration, or a timestamp.

    Durations are Prometheus-like (``90s``, ``12h``, ``1d12h``, ``2w``,
    ``365d``, ``1y`` = 365 days); timestamps are ISO 8601
    (``2026-11-20``, ``2026-11-20T08:00``, with or without an offset;
    without one, local time).  Raises :class:`ValueError`.
    """
    spec = text.strip()
    parts = _DURATION.findall(spec)
    if parts and "".join(n + u for n, u in parts) == spec:
        return now - sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        return dt.datetime.fromisoformat(spec).timestamp()
    except ValueError:
        msg = (
            f"{text!r} is neither a duration (30m, 12h, 1d, 2w, 365d) nor "
            f"a timestamp (2026-11-20, 2026-11-20T08:00)"
        )
        raise ValueError(msg) from None


def _abspath(path: str) -> bytes:
    return os.fsencode(os.path.abspath(path)).rstrip(b"/") or b"/"


def _under(path: bytes, top: bytes) -> bool:
    """``path`` is ``top`` or below it."""
    return top in (b"/", path) or path.startswith(top + b"/")





def _not_scanned(command: str, path: bytes, reader: Reader) -> DuExporterError:
    msg = (
        f"{command}: {label_path(path)!r} is not a directory of the last "
        f"complete scan in {str(reader.path)!r} (outside every root, "
        f"below dir-level, ignored or not there when it ran)"
    )
    return DuExporterError(msg)


def top_rows(
    reader: Reader,
    config: Config,
    path: str | None,
    count: int,
    stale_before: float | None = None,
) -> list[DirRow]:
    """The ``count`` largest directories at or below ``path``.

    With ``stale_before``, only those whose newest modification time
    in the whole subtree is older than that.
    """
    _require(reader.path)
    rows = reader.snapshot().rows
    if path is not None:
        want = _abspath(path)
        rows = [r for r in rows if _under(r.path, want)]
        if not rows:
            raise _not_scanned("top", want, reader)
    if stale_before is not None:
        rows = [r for r in rows if r.mtime < stale_before]
    size = partial(size_of, config.size_mode)
    rows.sort(key=lambda r: (-size(r), r.path))
    return rows[:count]


def _signed(n: int) -> str:
    return ("+" if n > 0 else "-" if n < 0 else " ") + human_bytes(abs(n))


def _machine(records: list[dict[str, Any]], fields: list[str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


TOP_FIELDS = ["path", "level", "bytes", "files", "dirs", "latest_mtime"]


def render(
    rows: list[DirRow], config: Config, fmt: str, *, stale: bool = False
) -> str:
    """Rows as an aligned table, CSV or JSON (sizes exact in CSV/JSON).

    ``stale`` adds the newest modification time to the table.
    """
    size = partial(size_of, config.size_mode)
    if fmt != "table":
        records = [
            {
                "path": label_path(r.path),
                "level": r.level,
                "bytes": size(r),
                "files": r.files,
                "dirs": r.dirs,
                "latest_mtime": r.mtime,
            }
            for r in rows
        ]
        return _machine(records, TOP_FIELDS, fmt)
    newest = f"  {'NEWEST MTIME':<19}" if stale else ""
    lines = [f"{'SIZE':>10}  {'FILES':>10}  {'DIRS':>8}{newest}  PATH"]
    for r in rows:
        newest = f"  {when(r.mtime)}" if stale else ""
        lines.append(
            f"{human_bytes(size(r)):>10}  {r.files:>10}  {r.dirs:>8}{newest}  "
            f"{display(r.path)}"
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Change:
    """One directory's size in two generations (None: not there)."""

    path: bytes
    level: int
    old: int | None
    new: int | None

    @property
    def change(self) -> int:
        return (self.new or 0) - (self.old or 0)

    @property
    def percent(self) -> float | None:
        if not self.old:  # new, or from nothing
            return None
        return round(100 * self.change / self.old, 2)

    @property
    def status(self) -> str:
        if self.old is None:
            return "new"
        if self.new is None:
            return "gone"
        return "grew" if self.change > 0 else "shrank" if self.change else "same"


@dataclass(frozen=True)
class Diff:
    """The biggest changes, and which generations were compared per root."""

    pairs: list[tuple[Generation, Generation]]
    changes: list[Change]


def _baseline(gens: list[Generation], since: float | None) -> Generation:
    """The generation to compare the newest of one root (``gens``) with."""
    latest, root = gens[-1], label_path(gens[-1].root)
    if since is None:
        if len(gens) < 2:  # noqa: PLR2004
            msg = (
                f"diff: root {root!r} has only one complete scan "
                f"(generation {latest.id}, finished {when(latest.finished)});"
                f" a diff needs two: run another scan (with keep-generations"
                f" of 2 or more the previous one is kept)"
            )
            raise DuExporterError(msg)
        return gens[-2]
    older = [g for g in gens if g.finished <= since]
    if not older:
        msg = (
            f"diff: root {root!r} has no complete scan finished at or before "
            f"{when(since)}; the oldest kept is generation {gens[0].id}, "
            f"finished {when(gens[0].finished)} (keep-generations sets how "
            f"many are kept)"
        )
        raise DuExporterError(msg)
    if older[-1] is latest:
        msg = (
            f"diff: root {root!r} has no complete scan finished after "
            f"{when(since)} (the latest is generation {latest.id}, "
            f"finished {when(latest.finished)}): nothing to compare"
        )
        raise DuExporterError(msg)
    return older[-1]


def _changes(
    session: ReadSession,
    pair: tuple[Generation, Generation],
    under: bytes,
    size: Callable[[DirRow], int],
) -> Iterator[Change]:
    """Merge the two generations' rows, both sorted by path, one by one."""
    old_rows, new_rows = (session.rows(g.id, under) for g in pair)
    merged = heapq.merge(
        ((r.path, 0, r) for r in old_rows), ((r.path, 1, r) for r in new_rows)
    )
    for path, group in itertools.groupby(merged, key=operator.itemgetter(0)):
        sides = {side: row for _, side, row in group}
        old, new = sides.get(0), sides.get(1)
        yield Change(
            path,
            next(iter(sides.values())).level,
            None if old is None else size(old),
            None if new is None else size(new),
        )


def diff(
    reader: Reader,
    config: Config,
    path: str | None,
    count: int,
    since: float | None = None,
) -> Diff:
    """Growth per directory between two complete scans of each root.

    The newest generation of each root is compared with the one before
    it, or with the newest finished at or before ``since``.  Only
    ``count`` changes are held in memory, whatever the tree's size.
    """
    _require(reader.path)
    want = _abspath(path) if path is not None else b"/"
    size = partial(size_of, config.size_mode)
    with reader.session() as session:
        by_root: dict[bytes, list[Generation]] = {}
        for g in session.complete_generations():
            by_root.setdefault(g.root, []).append(g)
        roots = [r for r in sorted(by_root) if _under(r, want) or _under(want, r)]
        if not roots:
            where = f" covers {label_path(want)!r}" if path is not None else ""
            msg = f"diff: no complete scan{where} in {str(reader.path)!r}"
            raise DuExporterError(msg)
        pairs = [(_baseline(by_root[r], since), by_root[r][-1]) for r in roots]
        every = (
            c
            for pair in pairs
            for c in _changes(
                session, pair, want if _under(want, pair[1].root) else b"/", size
            )
        )
        changes = heapq.nlargest(count, every, key=lambda c: abs(c.change))
    if path is not None and not changes:
        raise _not_scanned("diff", want, reader)
    return Diff(pairs, changes)


DIFF_FIELDS = [
    "path", "level", "status", "old_bytes", "new_bytes", "change_bytes",
    "change_percent",
]


def render_diff(result: Diff, fmt: str) -> str:
    """A diff as a table (with the generations compared), CSV or JSON."""
    records = [
        {
            "path": label_path(c.path),
            "level": c.level,
            "status": c.status,
            "old_bytes": c.old,
            "new_bytes": c.new,
            "change_bytes": c.change,
            "change_percent": c.percent,
        }
        for c in result.changes
    ]
    if fmt != "table":
        return _machine(records, DIFF_FIELDS, fmt)
    lines = [
        f"{display(new.root)}: generation {old.id} ({when(old.finished)})"
        f" -> generation {new.id} ({when(new.finished)})"
        for old, new in result.pairs
    ]
    lines.append(f"{'CHANGE':>11}  {'PERCENT':>8}  {'OLD':>10}  {'NEW':>10}  PATH")
    for c in result.changes:
        pct = c.status if c.status in {"new", "gone"} else (
            "-" if c.percent is None else f"{c.percent:+.1f}%" if c.change
            else "0.0%"
        )
        old = "-" if c.old is None else human_bytes(c.old)
        new = "-" if c.new is None else human_bytes(c.new)
        lines.append(
            f"{_signed(c.change):>11}  {pct:>8}  {old:>10}  {new:>10}  "
            f"{display(c.path)}"
        )
    return "\n".join(lines) + "\n"


EXPORT_FIELDS = [
    "generation", "root", "path", "level", "disk_bytes", "apparent_bytes",
    "files", "dirs", "latest_mtime",
]


def export(
    reader: Reader, generation: int | None, fmt: str, out: TextIO
) -> int:
    """Write every exported row of one generation to ``out``; the count.

    By default the latest complete generation of every root.  Rows are
    written as they come off the cursor: memory stays constant.  CSV
    has a header line; JSON is JSON Lines, one object per row.
    """
    _require(reader.path)
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    count = 0
    with reader.session() as session:
        gens = _export_generations(session, generation)
        if fmt == "csv":
            writer.writeheader()
        for gen in gens:
            for r in session.rows(gen.id):
                record = {
                    "generation": r.gen_id,
                    "root": label_path(r.root),
                    "path": label_path(r.path),
                    "level": r.level,
                    "disk_bytes": r.disk,
                    "apparent_bytes": r.apparent,
                    "files": r.files,
                    "dirs": r.dirs,
                    "latest_mtime": r.mtime,
                }
                if fmt == "json":
                    out.write(json.dumps(record) + "\n")
                else:
                    writer.writerow(record)
                count += 1
    return count


def _export_generations(
    session: ReadSession, generation: int | None
) -> list[Generation]:
    gens = session.complete_generations()
    if generation is None:
        latest = {g.root: g for g in gens}  # the last of each root wins
        return [latest[root] for root in sorted(latest)]
    chosen = [g for g in gens if g.id == generation]
    if not chosen:
        kept = ", ".join(str(g.id) for g in gens) or "none"
        msg = (
            f"export: no complete generation {generation} in the database "
            f"(complete generations: {kept}; see du-exporter db check)"
        )
        raise DuExporterError(msg)
    return chosen


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
