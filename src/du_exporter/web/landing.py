"""The landing page at ``/``: what runs, what it scans, where to look."""

from __future__ import annotations

import html

import yaml

from du_exporter import __version__
from du_exporter.config import Config
from du_exporter.errors import StoreError
from du_exporter.paths import label_path, plan_walks, root_levels, when
from du_exporter.scan.status import ScanStatus
from du_exporter.store.reader import Reader


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>du-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;
text-align:left}}pre{{background:#f4f4f4;padding:1em}}</style></head>
<body><h1>du-exporter {version}</h1>
<p>Exact per-directory disk usage, scanned in the background.</p>
<ul><li><a href="metrics">/metrics</a></li>
<li><a href="browse">/browse</a>: the usage browser (directories by size)</li>
<li><a href="-/healthy">/-/healthy</a></li>
<li><a href="-/ready">/-/ready</a></li></ul>
<h2>Roots</h2>
<table><tr><th>root</th><th>dir-level</th><th>last complete scan (UTC)</th>
<th>state</th></tr>
{rows}</table>
<h2>Configuration</h2><pre>{config}</pre></body></html>
"""


def landing_page(config: Config, reader: Reader, status: ScanStatus) -> str:
    try:
        gens = reader.snapshot(with_rows=False).generations
    except StoreError as e:
        gens = {}
        error = str(e)
    else:
        error = ""
    live = status.view()
    rows = []
    levels = root_levels(config.roots)
    for walk in plan_walks(config.roots):
        gen = gens.get(walk.top)
        for root in walk.roots:
            st = live.get(root)
            state = "scanning" if st and st.in_progress else "idle"
            if st and st.last_error:
                state += f" (last error: {st.last_error})"
            label = label_path(root)
            rows.append(
                "<tr>" + "".join(
                    f"<td>{html.escape(cell)}</td>"
                    for cell in (
                        label,
                        str(levels.get(root, "")),
                        when(gen.finished if gen else None, none="none yet"),
                        state,
                    )
                ) + "</tr>"
            )
    summary = yaml.safe_dump(config.summary(), sort_keys=True)
    if error:
        summary = f"database error: {error}\n\n{summary}"
    return _PAGE.format(
        version=html.escape(__version__),
        rows="\n".join(rows),
        config=html.escape(summary),
    )
