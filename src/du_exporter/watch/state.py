"""Per-directory sums of one walked root, kept while it is watched.

Every walked directory is a :class:`Dir` holding its *own* sums (its
inode, its files; what the walker counts for one directory) and its
subtree *totals*.  Sums change by the difference between two fresh
reads; the newest mtime, a maximum, is recomputed from the children.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from du_exporter.scan.model import SIZE_BUCKETS, DirRead


def _zeros() -> list[int]:
    return [0] * (len(SIZE_BUCKETS) + 1)


@dataclass(slots=True)
class Own:
    """What one read of one directory found (links excluded)."""

    disk: int = 0
    apparent: int = 0
    files: int = 0
    dirs: int = 0
    mtime: float = 0.0
    histogram: list[int] = field(default_factory=_zeros)
    histogram_sum: int = 0
    owners: dict[int, list[int]] = field(default_factory=dict)
    #: It holds inodes with more than one link (placed walk-wide).
    links: bool = False

    @classmethod
    def of(cls, res: DirRead, *, owners: bool) -> Own:
        """The sums of ``res``; per owner only if ``owners`` (memory)."""
        return cls(
            disk=res.disk,
            apparent=res.apparent,
            files=res.files,
            dirs=res.dirs,
            mtime=res.mtime,
            histogram=list(res.histogram),
            histogram_sum=res.histogram_sum,
            owners={u: list(s) for u, s in res.owners.items()} if owners else {},
            links=bool(res.links),
        )


@dataclass(eq=False, slots=True)
class Dir:
    path: bytes
    parent: Dir | None
    dev: int
    ino: int
    #: du's order key of the directory (listing positions from the top).
    key: bytes
    own: Own
    #: (disk, apparent, mtime, uid) of the directory's own inode, as
    #: last read.
    inode: tuple[int, int, float, int] = (0, 0, 0.0, 0)
    children: dict[bytes, Dir] = field(default_factory=dict)
    disk: int = 0
    apparent: int = 0
    files: int = 0
    dirs: int = 0
    mtime: float = 0.0
    #: Unit id of its exported row in the served generation, if any.
    row: int | None = None


@dataclass
class Totals:
    """Walk-wide sums that are not per directory."""

    histogram: list[int] = field(default_factory=_zeros)
    histogram_sum: int = 0
    owners: dict[int, list[int]] = field(default_factory=dict)

    def add(self, own: Own, sign: int) -> None:
        for i, n in enumerate(own.histogram):
            self.histogram[i] += sign * n
        self.histogram_sum += sign * own.histogram_sum
        for uid, (disk, apparent) in own.owners.items():
            sums = self.owners.setdefault(uid, [0, 0])
            sums[0] += sign * disk
            sums[1] += sign * apparent
            if sums == [0, 0]:
                del self.owners[uid]


class Tree:
    """Every walked directory of one walk, by path."""

    def __init__(self, top: bytes) -> None:
        self.top = top
        self.dirs: dict[bytes, Dir] = {}
        self.totals = Totals()

    def graft(self, top: Dir, subtree: list[Dir]) -> None:
        """Insert a whole new subtree (``top`` first, parents before
        children) and sum it bottom-up once."""
        for d in subtree:
            self.dirs[d.path] = d
            self.totals.add(d.own, 1)
            d.disk, d.apparent = d.own.disk, d.own.apparent
            d.files, d.dirs, d.mtime = d.own.files, d.own.dirs, d.own.mtime
            if d is not top and d.parent is not None:
                d.parent.children[d.path] = d
        for d in reversed(subtree):
            p = d.parent
            if d is top or p is None:
                continue
            p.disk += d.disk
            p.apparent += d.apparent
            p.files += d.files
            p.dirs += d.dirs
            p.mtime = max(p.mtime, d.mtime)
        if top.parent is not None:
            top.parent.children[top.path] = top
        self._ascend(top.parent, top.disk, top.apparent, top.files, top.dirs)

    def remove(self, d: Dir) -> list[Dir]:
        """Drop ``d`` and its subtree; the removed directories."""
        gone: list[Dir] = []
        stack = [d]
        while stack:
            x = stack.pop()
            gone.append(x)
            stack.extend(x.children.values())
            self.dirs.pop(x.path, None)
            self.totals.add(x.own, -1)
        if d.parent is not None:
            d.parent.children.pop(d.path, None)
        self._ascend(d.parent, -d.disk, -d.apparent, -d.files, -d.dirs)
        return gone

    def set_own(self, d: Dir, own: Own) -> None:
        """A fresh read of ``d``: replace its own sums."""
        old = d.own
        self.totals.add(old, -1)
        self.totals.add(own, 1)
        d.own = own
        self._ascend(
            d,
            own.disk - old.disk,
            own.apparent - old.apparent,
            own.files - old.files,
            own.dirs - old.dirs,
        )

    def _ascend(
        self, d: Dir | None, disk: int, apparent: int, files: int, dirs: int
    ) -> None:
        while d is not None:
            d.disk += disk
            d.apparent += apparent
            d.files += files
            d.dirs += dirs
            d.mtime = max(
                [d.own.mtime, *(c.mtime for c in d.children.values())]
            )
            d = d.parent

    def ancestors(self, d: Dir) -> list[Dir]:
        out = []
        x: Dir | None = d
        while x is not None:
            out.append(x)
            x = x.parent
        return out

    def links(self) -> bool:
        """Some directory holds an inode with more than one link."""
        return any(d.own.links for d in self.dirs.values())
