r"""The usage browser at ``/browse``: the last complete scan, by directory.

Like duc's web view, read from the store: ``/browse?path=P`` shows the
directory ``P`` of the latest complete generation (breadcrumbs, its
totals, its child directories by size with proportional bars, and the
growth since the previous complete generation when one is kept);
``/browse`` alone lists the roots.  ``path`` is the path as labels
render it (:func:`~du_exporter.collect.label_path`, ``\xNN`` for bytes
that are not UTF-8), percent-encoded in links.

A page is one read transaction of indexed lookups: the directory is
found by walking down from its root through the index on ``units
(gen, depth, parent)``, one probe per level, and its children are one
more probe.  Plain HTML and CSS, no JavaScript.
"""

from __future__ import annotations

import html
import re
import urllib.parse

from dataclasses import dataclass

from du_exporter.config import Config
from du_exporter.errors import NotFound
from du_exporter.paths import (
    OUTSIDE,
    depth_under,
    display,
    human_bytes,
    label_path,
    root_levels,
    size_of,
    unlabel_path,
    when,
)
from du_exporter.store.reader import Reader, ReadSession
from du_exporter.store.rows import DirRow, Generation
from du_exporter.web import sunburst


#: Child directories listed on one page; the rest are summed in one row.
MAX_ROWS = 1000


@dataclass(frozen=True)
class Child:
    """A child directory now, and in the previous generation (or None)."""

    row: DirRow
    before: DirRow | None


@dataclass(frozen=True)
class Listing:
    """What the page of one directory shows."""

    gen: Generation
    previous: Generation | None
    directory: DirRow
    before: DirRow | None
    #: Largest first.
    children: list[Child]
    #: Children in the previous generation that are gone now.
    gone: list[DirRow]
    #: Configured roots below that no child leads to (a directory
    #: between them has no row).
    nested: list[DirRow]
    #: The prefixes of the path, from the walked root, that have a row.
    crumbs: list[tuple[bytes, bool]]
    #: The configured dir-level of the root exporting the directory.
    level: int | None
    #: The subtree the sunburst draws: children and grandchildren.
    picture: sunburst.Node


def _join(parent: bytes, name: bytes) -> bytes:
    return parent.rstrip(b"/") + b"/" + name


def _latest(
    gens: list[Generation],
) -> dict[bytes, tuple[Generation, Generation | None]]:
    """Per walked root: the latest complete generation and the one before."""
    out: dict[bytes, tuple[Generation, Generation | None]] = {}
    for g in gens:  # oldest first
        before = out.get(g.root)
        out[g.root] = (g, before[0] if before else None)
    return out


def _locate(
    s: ReadSession, gen: int, top: bytes, path: bytes, nested: frozenset[bytes]
) -> tuple[tuple[int, DirRow] | None, list[tuple[bytes, bool]]]:
    """Walk down from ``top`` to ``path``, one index probe per level.

    Returns the directory (or None) and every prefix with whether it has
    a row.  A nested root below a directory without a row is searched
    by its depth.
    """
    found = s.find_dir(gen, 0, top)
    chain = [(top, found is not None)]
    cur = top
    rel = path[len(top):].strip(b"/")
    for depth, name in enumerate(rel.split(b"/") if rel else [], 1):
        cur = _join(cur, name)
        if found is not None:
            found = s.find_dir(gen, depth, cur, found[0])
        if found is None and cur in nested:
            found = s.find_dir(gen, depth, cur)
        chain.append((cur, found is not None))
    return found, chain


def listing(reader: Reader, config: Config, path: bytes) -> Listing:
    """The directory ``path`` of the last complete scan; :class:`NotFound`."""
    roots = root_levels(config.roots)
    with reader.session() as s:
        gens = _latest(s.complete_generations())
        tops = [t for t in gens if depth_under(path, t) < OUTSIDE]
        if not tops:
            msg = f"{label_path(path)!r} is in no complete scan"
            raise NotFound(msg)
        top = max(tops, key=len)
        gen, previous = gens[top]
        nested = frozenset(r for r in roots if 0 < depth_under(r, top) < OUTSIDE)
        found, chain = _locate(s, gen.id, top, path, nested)
        if found is None:
            msg = f"{label_path(path)!r} is not a directory of the last complete scan"
            raise NotFound(msg)
        uid, row = found
        depth = depth_under(row.path, top) + 1
        pairs = list(s.child_dirs(gen.id, depth, uid))
        kids = [r for _, r in pairs]
        # The sunburst's second ring: below the children wide enough for
        # one (36 at most, as each spans a tenth of a turn or more).
        whole = size_of(config.size_mode, row)
        grand = {
            r.path: [g for _, g in s.child_dirs(gen.id, depth + 1, u)]
            for u, r in pairs
            if r.dirs and size_of(config.size_mode, r) * 360 >= whole * sunburst.PARENT_DEGREES
        }
        before, old = None, {}
        if previous is not None:
            was = _locate(s, previous.id, top, path, nested)[0]
            if was is not None:
                before = was[1]
                old = {r.path: r for _, r in s.child_dirs(previous.id, depth, was[0])}
        below = _unreached(nested, path, kids)
        extra = [f[1] for f in (_locate(s, gen.id, top, r, nested)[0] for r in below) if f]
    kids.sort(key=lambda r: (-size_of(config.size_mode, r), r.path))
    now = {r.path for r in kids}
    gone = sorted(
        (r for p, r in old.items() if p not in now),
        key=lambda r: (-size_of(config.size_mode, r), r.path),
    )
    return Listing(
        gen=gen,
        previous=previous,
        directory=row,
        before=before,
        children=[Child(r, old.get(r.path)) for r in kids],
        gone=gone,
        nested=extra,
        crumbs=chain,
        level=roots.get(row.root),
        picture=sunburst.Node(row.path, size_of(config.size_mode, row), tuple(
            sunburst.Node(r.path, size_of(config.size_mode, r), tuple(
                sunburst.Node(g.path, size_of(config.size_mode, g))
                for g in grand.get(r.path, ())
            ))
            for r in kids
        )),
    )


def _unreached(
    nested: frozenset[bytes], path: bytes, kids: list[DirRow]
) -> list[bytes]:
    """Nested roots below ``path`` that no child leads to, outermost only."""
    below = sorted(
        r for r in nested
        if 0 < depth_under(r, path) < OUTSIDE
        and not any(depth_under(r, k.path) < OUTSIDE for k in kids)
    )
    return [
        r for r in below
        if not any(0 < depth_under(r, o) < OUTSIDE for o in below)
    ]


@dataclass(frozen=True)
class RootEntry:
    """A configured or walked root and its row (None: no complete scan)."""

    path: bytes
    row: DirRow | None
    gen: Generation | None


def root_entries(reader: Reader, config: Config) -> list[RootEntry]:
    """Every walked root of the store and every configured root, by path."""
    roots = root_levels(config.roots)
    out: dict[bytes, RootEntry] = {}
    with reader.session() as s:
        gens = _latest(s.complete_generations())
        for top, (gen, _) in gens.items():
            nested = frozenset(
                r for r in roots if 0 < depth_under(r, top) < OUTSIDE
            )
            for root in [top, *nested]:
                found = _locate(s, gen.id, top, root, nested)[0]
                if found is not None or root in roots:
                    out[root] = RootEntry(root, found and found[1], gen)
    for root in roots:
        out.setdefault(root, RootEntry(root, None, None))
    return [out[p] for p in sorted(out)]


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

_STYLE = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d9dee3;--accent:#0b57d0;
--bar:#4a86e8;--bar-bg:#e9eef6;--up:#b42318;--down:#1a7f37}
*{box-sizing:border-box}
body{margin:0;background:#f6f8fa;color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",
"DejaVu Sans",sans-serif}
header{background:#1f2937;padding:.7em 2em;display:flex;gap:1.4em;
align-items:baseline}
header a{color:#e5e7eb;text-decoration:none}
header a.brand{color:#fff;font-weight:700;font-size:1.05em}
main{max-width:1180px;margin:1.4em auto;padding:0 2em}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
nav.crumbs{font-size:1.3em;margin:0 0 .9em;overflow-wrap:anywhere}
nav.crumbs .sep{color:var(--muted);margin:0 .15em}
nav.crumbs [aria-current]{color:var(--fg);font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:.7em;margin:0 0 .6em}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;
padding:.55em 1.1em;min-width:8.5em}
.card .k{color:var(--muted);font-size:.75em;text-transform:uppercase;
letter-spacing:.05em}
.card .v{font-size:1.3em;font-weight:600;font-variant-numeric:tabular-nums}
p.meta{color:var(--muted);margin:.2em 0 1.1em;font-size:.9em}
svg.sunburst{display:block;margin:0 auto 1.1em;max-width:100%;height:auto}
svg.sunburst a:hover path{opacity:.8}
table{width:100%;border-collapse:separate;border-spacing:0;background:#fff;
border:1px solid var(--line);border-radius:8px;overflow:hidden}
th{font-size:.75em;text-transform:uppercase;letter-spacing:.05em;
color:var(--muted);background:#f6f8fa;text-align:left;font-weight:600}
th,td{padding:.42em .9em;border-bottom:1px solid #eaeef2}
tr:last-child td{border-bottom:0}
tbody tr:hover{background:#f8fafc}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.name{overflow-wrap:anywhere;font-weight:500}
td.share{width:13em}
.bar{background:var(--bar-bg);border-radius:4px;height:.8em;overflow:hidden}
.bar span{display:block;height:100%;background:var(--bar);
border-radius:4px}
.up{color:var(--up)}.down{color:var(--down)}.same,.note{color:var(--muted)}
.new{background:#e8f0fe;color:var(--accent);border-radius:4px;
padding:.05em .45em;font-size:.85em;font-weight:600}
td.note{font-style:italic}
p.note{margin:1em 0}
"""


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


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · du-exporter</title><style>{_STYLE}</style>"
        '</head>\n<body><header><a class="brand" href="./">du-exporter</a>'
        '<a href="browse">usage browser</a><a href="metrics">metrics</a>'
        f"</header>\n<main>\n{body}\n</main></body></html>\n"
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


_HEAD = (
    '<table><thead><tr><th>{first}</th><th colspan="2">share</th>'
    '<th class="num">size</th>{change}<th class="num">files</th>'
    '<th class="num">dirs</th><th class="num">newest change</th>'
    "</tr></thead><tbody>"
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
        level = "" if lst.level is None else f" (dir-level {lst.level} of {_e(display(d.root))})"
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
        body.append(_HEAD.format(first="directory", change=change))
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
    head = _HEAD.format(first="root", change='<th class="num">last scan</th>')
    body = [
        '<nav class="crumbs"><a href="browse" aria-current="page">roots</a></nav>',
        (
            '<p class="meta">The last complete scan of every root; bars are '
            "relative to the largest. Pick a root to browse it.</p>"
        ),
        head, *rows, "</tbody></table>",
    ]
    return _page("roots", "\n".join(body))
