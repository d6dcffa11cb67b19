r"""The usage browser at ``/browse``: the last complete scan, by directory.

Like duc's web view, read from the store: ``/browse?path=P`` shows the
directory ``P`` of the latest complete generation (breadcrumbs, its
totals, its child directories by size with proportional bars, and the
growth since the previous complete generation when one is kept);
``/browse`` alone lists the roots.  ``path`` is the path as labels
render it (:func:`~du_exporter.paths.label_path`, ``\xNN`` for bytes
that are not UTF-8), percent-encoded in links.

The data comes from :mod:`du_exporter.web.listing`; this module turns it
into HTML.  Plain HTML and CSS, no JavaScript: the style sheet
(``browse.css``) and the page and table frames (``templates/``) are
package data.
"""

from __future__ import annotations

import html
import re
import string
import urllib.parse

from importlib import resources

from du_exporter.config import Config
from du_exporter.errors import NotFound
from du_exporter.paths import (
    display,
    human_bytes,
    label_path,
    size_of,
    unlabel_path,
    when,
)
from du_exporter.store.reader import Reader
from du_exporter.store.rows import DirRow
from du_exporter.web import sunburst
from du_exporter.web.listing import Listing, RootEntry, listing, root_entries


#: Child directories listed on one page; the rest are summed in one row.
MAX_ROWS = 1000


def browse_page(config: Config, reader: Reader, query: str) -> str:
    """The full HTML page for the raw query string; :class:`NotFound`."""
    path = query_path(query)
    if path is None:
        return render_roots(root_entries(reader, config), config)
    return render_listing(listing(reader, config, path), config)


def query_path(query: str) -> bytes | None:
    """The ``path`` parameter as bytes, None without one; :class:`NotFound`."""
    try:
        values = urllib.parse.parse_qs(
            query, errors="strict", max_num_fields=16
        ).get("path")
    except ValueError:  # not UTF-8 once percent-decoded, too many fields
        msg = "the query string is not valid"
        raise NotFound(msg) from None
    if not values or not values[0]:
        return None
    try:
        path = unlabel_path(values[0])
    except ValueError as e:
        msg = f"path {values[0]!r} is not a path in label form: {e}"
        raise NotFound(msg) from None
    if not path.startswith(b"/"):
        msg = f"path {values[0]!r} is not absolute"
        raise NotFound(msg)
    return re.sub(rb"/+", b"/", path).rstrip(b"/") or b"/"


# --- HTML ---------------------------------------------------------------

def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _href(path: bytes) -> str:
    return "browse?path=" + urllib.parse.quote(label_path(path), safe="/")


def _link(path: bytes, text: str, *, current: bool = False) -> str:
    attr = ' aria-current="page"' if current else ""
    return f'<a href="{_e(_href(path))}"{attr}>{_e(text)}</a>'


def _bytes(n: int) -> str:
    """A humanized size, the exact byte count in its tooltip."""
    return f'<span title="{n:,} bytes">{human_bytes(n)}</span>'


def _change(now: int, before: int | None) -> str:
    if before is None:
        return '<span class="new">new</span>'
    diff = now - before
    if diff == 0:
        return '<span class="same" title="unchanged">±0</span>'
    cls, sign = ("up", "+") if diff > 0 else ("down", "&minus;")
    return (
        f'<span class="{cls}" title="{diff:+,} bytes">'
        f"{sign}{human_bytes(abs(diff))}</span>"
    )


def _bar(part: int, whole: int) -> str:
    share = 100.0 * part / whole if whole > 0 else 0.0
    share = min(100.0, max(0.0, share))
    return (
        f'<td class="share"><div class="bar"><span style="width:{share:.1f}%">'
        f'</span></div></td><td class="num">{share:.1f}%</td>'
    )


def _asset(name: str) -> str:
    """A file shipped in the package next to this module."""
    return resources.files(__package__).joinpath(name).read_text("utf-8")


def _page(title: str, body: str) -> str:
    return string.Template(_asset("templates/page.html")).substitute(
        title=_e(title), style=_asset("browse.css"), body=body
    )


def _crumbs(chain: list[tuple[bytes, bool]]) -> str:
    parts = ['<nav class="crumbs"><a href="browse">roots</a>']
    for i, (path, linked) in enumerate(chain):
        last = i == len(chain) - 1
        text = display(path) if i == 0 else display(path.rsplit(b"/", 1)[1])
        sep = "&rsaquo;" if i == 0 else "" if chain[i - 1][0] == b"/" else "/"
        if sep:
            parts.append(f'<span class="sep">{sep}</span>')
        parts.append(_link(path, text, current=last) if linked else _e(text))
    return "".join(parts) + "</nav>"


def _card(key: str, value: str) -> str:
    return f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{value}</div></div>'


def _head(first: str, change: str) -> str:
    """The table's opening and header row; ``change``: a column or ""."""
    return string.Template(_asset("templates/table_head.html")).substitute(
        first=first, change=change
    )


def _cells(
    name: str, size: int, whole: int, change: str | None, row: DirRow | None
) -> str:
    counts = (
        f'<td class="num">{row.files:,}</td><td class="num">{row.dirs:,}</td>'
        f'<td class="num">{_e(when(row.mtime))}</td>'
        if row is not None
        else '<td class="num"></td>' * 3
    )
    grew = "" if change is None else f'<td class="num">{change}</td>'
    return (
        f'<tr><td class="name">{name}</td>{_bar(size, whole)}'
        f'<td class="num">{_bytes(size)}</td>{grew}{counts}</tr>'
    )


def _cards(lst: Listing, config: Config) -> str:
    d = lst.directory
    sizes = {"disk": ("disk usage", d.disk), "apparent": ("apparent size", d.apparent)}
    first = sizes.pop(config.size_mode)
    (second,) = sizes.values()
    cards = [
        _card(first[0], _bytes(first[1])),
        _card(second[0], _bytes(second[1])),
        _card("files", f"{d.files:,}"),
        _card("directories", f"{d.dirs:,}"),
        _card("newest change", _e(when(d.mtime))),
    ]
    if lst.previous is not None:
        old = None if lst.before is None else size_of(config.size_mode, lst.before)
        cards.append(_card("since previous scan", _change(first[1], old)))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _meta(lst: Listing, config: Config) -> str:
    g = lst.gen
    text = f"Scan {g.id} of {_e(display(g.root))}, finished {_e(when(g.finished))}"
    if lst.previous is not None:
        p = lst.previous
        text += f"; changes since scan {p.id}, finished {_e(when(p.finished))}"
    elif config.keep_generations < 2:  # noqa: PLR2004
        text += "; keep-generations 2 or more shows the growth since the previous scan"
    else:
        text += "; the growth since the previous scan shows after the next one"
    sort = "disk usage" if config.size_mode == "disk" else "apparent size"
    return f'<p class="meta">{text}. Sorted by {sort} (size-mode {config.size_mode}).</p>'


def _rows(lst: Listing, config: Config) -> list[str]:
    whole = size_of(config.size_mode, lst.directory)
    growth = lst.previous is not None
    rows = []
    for child in lst.children[:MAX_ROWS]:
        size = size_of(config.size_mode, child.row)
        old = None if child.before is None else size_of(config.size_mode, child.before)
        name = _link(child.row.path, display(child.row.path.rsplit(b"/", 1)[1]))
        rows.append(_cells(name, size, whole, _change(size, old) if growth else None, child.row))
    hidden = lst.children[MAX_ROWS:]
    if hidden:
        size = sum(size_of(config.size_mode, c.row) for c in hidden)
        text = f'<span class="note">{len(hidden):,} smaller directories</span>'
        rows.append(_cells(text, size, whole, "" if growth else None, None))
    rest = whole - sum(size_of(config.size_mode, c.row) for c in lst.children)
    if lst.children and rest > 0:
        change = None
        if growth and lst.before is not None:
            old_rest = size_of(config.size_mode, lst.before) - sum(
                size_of(config.size_mode, c.before) for c in lst.children if c.before
            ) - sum(size_of(config.size_mode, r) for r in lst.gone)
            change = _change(rest, old_rest)
        text = '<span class="note">(files directly in here)</span>'
        rows.append(_cells(text, rest, whole, change if growth else None, None))
    return rows


def _notes(lst: Listing) -> list[str]:
    d = lst.directory
    notes = []
    if not lst.children and d.dirs:
        level = "" if lst.dir_level is None else f" (dir-level {lst.dir_level} of {_e(display(d.root))})"
        notes.append(
            f"This is the deepest level stored{level}: the directories "
            f"below it ({d.dirs:,} in all) are counted in the totals above "
            "but have no rows of their own."
        )
    elif not lst.children:
        notes.append("No subdirectories.")
    if lst.nested:
        links = ", ".join(_link(r.path, display(r.path)) for r in lst.nested)
        notes.append(f"Roots further down: {links}.")
    if lst.gone:
        shown = ", ".join(
            _e(display(r.path.rsplit(b"/", 1)[1])) for r in lst.gone[:20]
        )
        more = f" and {len(lst.gone) - 20:,} more" if len(lst.gone) > 20 else ""  # noqa: PLR2004
        notes.append(f"Gone since the previous scan: {shown}{more}.")
    return [f'<p class="note">{n}</p>' for n in notes]


def render_listing(lst: Listing, config: Config) -> str:
    """The page of one directory."""
    body = [_crumbs(lst.crumbs), _cards(lst, config), _meta(lst, config)]
    if lst.picture.children:
        label = f"Sunburst of {display(lst.directory.path)}: subdirectories by size"
        body.append(sunburst.render(lst.picture, _href, label))
    rows = _rows(lst, config)
    if rows:
        change = '<th class="num">change</th>' if lst.previous else ""
        body.append(_head(first="directory", change=change))
        body.extend(rows)
        body.append("</tbody></table>")
    body.extend(_notes(lst))
    return _page(display(lst.directory.path), "\n".join(body))


def render_roots(entries: list[RootEntry], config: Config) -> str:
    """The page listing the roots."""
    biggest = max(
        (size_of(config.size_mode, e.row) for e in entries if e.row is not None), default=0
    )
    rows = []
    for e in entries:
        if e.row is None:
            name = _e(display(e.path))
            rows.append(
                f'<tr><td class="name">{name}</td><td colspan="7" class="note">'
                "no complete scan yet</td></tr>"
            )
            continue
        rows.append(_cells(
            _link(e.path, display(e.path)),
            size_of(config.size_mode, e.row),
            biggest,
            _e(when(e.gen.finished if e.gen else None)),
            e.row,
        ))
    head = _head(first="root", change='<th class="num">last scan</th>')
    body = [
        '<nav class="crumbs"><a href="browse" aria-current="page">roots</a></nav>',
        (
            '<p class="meta">The last complete scan of every root; bars are '
            "relative to the largest. Pick a root to browse it.</p>"
        ),
        head, *rows, "</tbody></table>",
    ]
    return _page("roots", "\n".join(body))
