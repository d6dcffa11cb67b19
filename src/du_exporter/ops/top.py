"""``du-exporter top``: the largest directories of the last complete scan."""

from __future__ import annotations

from functools import partial

from du_exporter.config import Config
from du_exporter.ops.report import machine
from du_exporter.ops.select import (
    abspath,
    not_scanned,
    require_database,
    under,
)
from du_exporter.paths import display, human_bytes, label_path, size_of, when
from du_exporter.store.reader import Reader
from du_exporter.store.rows import DirRow


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
    require_database(reader.path)
    rows = reader.snapshot().rows
    if path is not None:
        want = abspath(path)
        rows = [r for r in rows if under(r.path, want)]
        if not rows:
            raise not_scanned("top", want, reader)
    if stale_before is not None:
        rows = [r for r in rows if r.mtime < stale_before]
    size = partial(size_of, config.size_mode)
    rows.sort(key=lambda r: (-size(r), r.path))
    return rows[:count]


TOP_FIELDS = ["path", "level", "bytes", "files", "dirs", "latest_mtime"]


def render_top(
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
        return machine(records, TOP_FIELDS, fmt)
    newest = f"  {'NEWEST MTIME':<19}" if stale else ""
    lines = [f"{'SIZE':>10}  {'FILES':>10}  {'DIRS':>8}{newest}  PATH"]
    for r in rows:
        newest = f"  {when(r.mtime)}" if stale else ""
        lines.append(
            f"{human_bytes(size(r)):>10}  {r.files:>10}  {r.dirs:>8}{newest}  "
            f"{display(r.path)}"
        )
    return "\n".join(lines) + "\n"
