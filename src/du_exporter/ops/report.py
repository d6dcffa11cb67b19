"""Machine-readable output of the operator tools: CSV or JSON records.

Paths are carried as the labels render them
(:func:`~du_exporter.paths.label_path`) and sizes as exact integer byte
counts; the aligned tables live with each tool.
"""

from __future__ import annotations

import csv
import io
import json

from typing import Any


def machine(records: list[dict[str, Any]], fields: list[str], fmt: str) -> str:
    """``records`` as a JSON array or as CSV with a header line."""
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()
