"""What an operator command is about: the database, a subtree, a time.

Everything in ``ops`` reads the scans already in the database; nothing
rescans.
"""

from __future__ import annotations

import datetime as dt
import os
import re

from pathlib import Path

from du_exporter.errors import DuExporterError, StoreError
from du_exporter.paths import label_path
from du_exporter.store.reader import Reader


def require_database(db_path: Path) -> None:
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


def abspath(path: str) -> bytes:
    return os.fsencode(os.path.abspath(path)).rstrip(b"/") or b"/"


def under(path: bytes, top: bytes) -> bool:
    """``path`` is ``top`` or below it."""
    return top in (b"/", path) or path.startswith(top + b"/")


def not_scanned(command: str, path: bytes, reader: Reader) -> DuExporterError:
    """``path`` has no row in the last complete scan: one line saying so."""
    msg = (
        f"{command}: {label_path(path)!r} is not a directory of the last "
        f"complete scan in {str(reader.path)!r} (outside every root, "
        f"below dir-level, ignored or not there when it ran)"
    )
    return DuExporterError(msg)
