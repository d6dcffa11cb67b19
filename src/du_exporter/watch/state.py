"""Per-directory sums of one walked root, kept while it is watched.

Every walked directory is a :class:`Dir` holding its *own* sums (its
inode, its files; what the walker counts for one directory) and its
subtree *totals*.  Sums change by the difference between two fresh
reads; the newest mtime, a maximum, is recomputed from the children.

Multiply-linked inodes are counted once, where du meets them first: the
tree keeps, per inode, every directory holding a name of it with the
name's listing position there (:attr:`Dir.occ`), and the directory it
is placed in (:attr:`Tree.where`).  Its size is added to that
directory's own sums (:meth:`Tree.place`), so it moves without a read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from du_exporter.scan.model import SIZE_BUCKETS, DirRead


#: A multiply-linked inode: (dev, ino).
Inode = tuple[int, int]
#: What a placed inode adds: (disk, apparent, uid).
Sizes = tuple[int, int, int]


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
    #: Per owner: None without owner-usage.
    owners: dict[int, list[int]] | None = None
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
            owners={u: list(s) for u, s in res.owners.items()} if owners else None,
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
    #: Multiply-linked inodes named here: the smallest listing position
    #: of their names (the rest of du's key, after :attr:`key`) and how
    #: many names.  None when there is none (most directories: an empty
    #: dict per directory is 64 bytes).
    occ: dict[Inode, tuple[bytes, int]] | None = None
    #: Inodes counted in :attr:`own` because du meets them here first;
    #: None when there is none.
    placed: dict[Inode, Sizes] | None = None

    def names(self, inode: Inode) -> tuple[bytes, int]:
        """The :attr:`occ` entry of an inode named here."""
        if self.occ is None:
            raise KeyError(inode)
        return self.occ[inode]

    def placed_sizes(self, inode: Inode) -> Sizes | None:
        """What ``inode`` adds here if it is placed here."""
        return None if self.placed is None else self.placed.get(inode)


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
        for uid, (disk, apparent) in (own.owners or {}).items():
            sums = self.owners.setdefault(uid, [0, 0])
            sums[0] += sign * disk
            sums[1] += sign * apparent
            if sums == [0, 0]:
                del self.owners[uid]


class Tree:
    """Every walked directory of one walk, by path."""

    def __init__(self, top: bytes, *, owners: bool = False) -> None:
        self.top = top
        #: Sums per owner are kept (owner-usage).
        self.owners = owners
        self.dirs: dict[bytes, Dir] = {}
        self.totals = Totals()
        #: Every directory holding a name of each multiply-linked inode.
        self.holders: dict[Inode, set[Dir]] = {}
        #: Where each is counted, and its sizes as last read.
        self.where: dict[Inode, Dir] = {}
        self.sizes: dict[Inode, Sizes] = {}

    def set_occ(self, d: Dir, occ: dict[Inode, tuple[bytes, int]]) -> set[Inode]:
        """``d`` now names these linked inodes; the inodes whose holders
        or positions changed."""
        old = d.occ
        if old is None:
            if not occ:
                return set()
            old = {}
        touched = {i for i in old.keys() | occ.keys() if old.get(i) != occ.get(i)}
        for i in old.keys() - occ.keys():
            held = self.holders.get(i)
            if held is not None:
                held.discard(d)
        for i in occ.keys() - old.keys():
            self.holders.setdefault(i, set()).add(d)
        d.occ = occ or None
        return touched

    def place(self, d: Dir, inode: Inode, sizes: Sizes, sign: int) -> None:
        """Count (``sign`` 1) or stop counting (-1) ``inode`` in ``d``."""
        disk, apparent, _uid = sizes
        self._add_placed(d.own, sizes, sign)
        if self.owners:
            _add_owner(self.totals.owners, sizes, sign)
        if sign > 0:
            self._keep(d, inode, sizes)
        else:
            if d.placed is not None:
                del d.placed[inode]
                if not d.placed:
                    d.placed = None
            if self.where.get(inode) is d:
                del self.where[inode]
        self._ascend(d, sign * disk, sign * apparent, 0, 0)

    def preplace(self, d: Dir, inode: Inode, sizes: Sizes) -> None:
        """:meth:`place` in a directory not yet grafted (no totals)."""
        self._add_placed(d.own, sizes, 1)
        self._keep(d, inode, sizes)

    def _keep(self, d: Dir, inode: Inode, sizes: Sizes) -> None:
        if d.placed is None:
            d.placed = {}
        d.placed[inode] = sizes
        self.where[inode] = d

    def _add_placed(self, own: Own, sizes: Sizes, sign: int) -> None:
        own.disk += sign * sizes[0]
        own.apparent += sign * sizes[1]
        if self.owners:
            if own.owners is None:
                own.owners = {}
            _add_owner(own.owners, sizes, sign)

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
            for i in x.placed or ():
                if self.where.get(i) is x:
                    del self.where[i]
            x.placed = None
            for i in x.occ or ():  # x.occ stays: the caller re-places them
                held = self.holders.get(i)
                if held is not None:
                    held.discard(x)
        if d.parent is not None:
            d.parent.children.pop(d.path, None)
        self._ascend(d.parent, -d.disk, -d.apparent, -d.files, -d.dirs)
        return gone

    def set_own(self, d: Dir, own: Own) -> None:
        """A fresh read of ``d`` (links excluded): replace its own sums,
        keeping the inodes placed in it."""
        if d.placed is not None:
            for sizes in d.placed.values():
                self._add_placed(own, sizes, 1)
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
        return any(d.occ for d in self.dirs.values())


def _add_owner(owners: dict[int, list[int]], sizes: Sizes, sign: int) -> None:
    disk, apparent, uid = sizes
    sums = owners.setdefault(uid, [0, 0])
    sums[0] += sign * disk
    sums[1] += sign * apparent
    if sums == [0, 0]:
        del owners[uid]


def subtree(d: Dir) -> list[Dir]:
    """``d`` and every directory below it, parents first."""
    out, stack = [], [d]
    while stack:
        x = stack.pop()
        out.append(x)
        stack.extend(x.children.values())
    return out
