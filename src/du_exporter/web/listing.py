"""What ``/browse`` shows, read from the store: a directory, the roots.

A directory is found by walking down from its root through the index on
``units (gen, depth, parent)``, one probe per level, and its children
are one more probe; a page is one read transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from du_exporter.config import Config
from du_exporter.errors import NotFound
from du_exporter.paths import (
    OUTSIDE,
    depth_under,
    label_path,
    root_levels,
    size_of,
)
from du_exporter.store.reader import Reader, ReadSession
from du_exporter.store.rows import DirRow, Generation
from du_exporter.web import sunburst


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
    dir_level: int | None
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
    s: ReadSession, gen_id: int, top: bytes, path: bytes, nested: frozenset[bytes]
) -> tuple[tuple[int, DirRow] | None, list[tuple[bytes, bool]]]:
    """Walk down from ``top`` to ``path``, one index probe per level.

    Returns the directory (or None) and every prefix with whether it has
    a row.  A nested root below a directory without a row is searched
    by its depth.
    """
    found = s.find_dir(gen_id, 0, top)
    chain = [(top, found is not None)]
    cur = top
    rel = path[len(top):].strip(b"/")
    for depth, name in enumerate(rel.split(b"/") if rel else [], 1):
        cur = _join(cur, name)
        if found is not None:
            found = s.find_dir(gen_id, depth, cur, found[0])
        if found is None and cur in nested:
            found = s.find_dir(gen_id, depth, cur)
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
        unit_id, row = found
        depth = depth_under(row.path, top) + 1
        pairs = list(s.child_dirs(gen.id, depth, unit_id))
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
        dir_level=roots.get(row.root),
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
