"""``du-exporter diff``: growth per directory between two complete scans."""

from __future__ import annotations

import heapq
import itertools
import operator

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from du_exporter.config import Config
from du_exporter.errors import DuExporterError
from du_exporter.ops.report import machine
from du_exporter.ops.select import (
    abspath,
    not_scanned,
    require_database,
    under,
)
from du_exporter.paths import display, human_bytes, label_path, size_of, when
from du_exporter.store.reader import Reader, ReadSession
from du_exporter.store.rows import DirRow, Generation


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


def compare(
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
    require_database(reader.path)
    want = abspath(path) if path is not None else b"/"
    size = partial(size_of, config.size_mode)
    with reader.session() as session:
        by_root: dict[bytes, list[Generation]] = {}
        for g in session.complete_generations():
            by_root.setdefault(g.root, []).append(g)
        roots = [r for r in sorted(by_root) if under(r, want) or under(want, r)]
        if not roots:
            where = f" covers {label_path(want)!r}" if path is not None else ""
            msg = f"diff: no complete scan{where} in {str(reader.path)!r}"
            raise DuExporterError(msg)
        pairs = [(_baseline(by_root[r], since), by_root[r][-1]) for r in roots]
        every = (
            c
            for pair in pairs
            for c in _changes(
                session, pair, want if under(want, pair[1].root) else b"/", size
            )
        )
        changes = heapq.nlargest(count, every, key=lambda c: abs(c.change))
    if path is not None and not changes:
        raise not_scanned("diff", want, reader)
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
        return machine(records, DIFF_FIELDS, fmt)
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


def _signed(n: int) -> str:
    return ("+" if n > 0 else "-" if n < 0 else " ") + human_bytes(abs(n))
