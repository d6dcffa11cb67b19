"""``du-exporter export``: every exported directory of a scan, streamed."""

from __future__ import annotations

import csv
import json

from typing import TextIO

from du_exporter.errors import DuExporterError
from du_exporter.ops.select import require_database
from du_exporter.paths import label_path
from du_exporter.store.reader import Reader, ReadSession
from du_exporter.store.rows import Generation


EXPORT_FIELDS = [
    "generation", "root", "path", "level", "disk_bytes", "apparent_bytes",
    "files", "dirs", "latest_mtime",
]


def stream(
    reader: Reader, generation: int | None, fmt: str, out: TextIO
) -> int:
    """Write every exported row of one generation to ``out``; the count.

    By default the latest complete generation of every root.  Rows are
    written as they come off the cursor: memory stays constant.  CSV
    has a header line; JSON is JSON Lines, one object per row.
    """
    require_database(reader.path)
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
