"""Re-reading what events name, one directory at a time, like du.

Events are hints: each named directory is read again with fresh stats
by the scan's own walker (one directory per read: every subdirectory is
handed back instead of walked), its own sums replace the old ones, and
subdirectories that appeared are walked whole while those that vanished
leave the tree.  No number ever comes from an event.

Hard links are counted where du meets an inode first: the smallest
order key (the walker's: listing positions from the top) among the
directories holding a name of it.  Every read records the names of
multiply-linked inodes it met with their listing positions; after the
reads of an update, each inode whose names, positions or sizes changed
is placed again, with no further read for the placing itself.  What
each name adds to its own directory (a histogram entry, the newest
mtime) changes with the inode and no event names the other names'
directories: a directory an event named has those read too, once each
(no further: their own links are not followed).  Positions are kept relative to
their directory, and a directory whose listing order changed passes its
new key down to its subtree in memory, so names elsewhere compare right
whatever a create or delete did to a listing's order (ext4 re-hashes a
directory growing past one block; tmpfs lists the newest first).

One case needs what no read of the named directories tells: a file of
one link gets a second name (``ln``), and only the new name's directory
raises an event.  The old name was counted as a plain file where it is;
when an inode first seen in an update has more links than names found,
the update asks for a full rescan instead (:class:`NeedsRescan`).
"""

from __future__ import annotations

import heapq
import os
import stat

from dataclasses import dataclass, field

from du_exporter.paths import Walk, depth_under
from du_exporter.scan.budget import Throttle
from du_exporter.scan.fs import open_listed
from du_exporter.scan.model import DirRead, Plan, Unit
from du_exporter.scan.walker import unit_reader
from du_exporter.watch.state import Dir, Inode, Own, Sizes, Tree, subtree


class OneDir(Plan):
    """The plan of a watched walk: the scan's rules, read one directory
    at a time (``unit_reader``)."""


class NeedsRescan(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The update cannot be made exactly here; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Change:
    """What one update did to a tree."""

    #: Directories whose totals changed (still in the tree).
    changed: set[Dir] = field(default_factory=set)
    #: Directories that left the tree.
    removed: list[Dir] = field(default_factory=list)
    #: Directories whose order key changed (their own sums did not).
    rekeyed: set[Dir] = field(default_factory=set)
    #: Directory entries read.
    entries: int = 0
    #: Subtrees walked whole (new or moved in): mount points may have
    #: come with them, which no mount event reports.
    walked: int = 0
    unreadable: list[tuple[bytes, str]] = field(default_factory=list)


def _inode(unit: Unit) -> tuple[int, int, float, int]:
    """What a directory's own inode adds to its sums."""
    return (unit.disk, unit.apparent, unit.mtime, unit.uid)


class Reader:
    """Reads directories of one walk with the walker's rules."""

    def __init__(self, walk: Walk, plan: Plan) -> None:
        self.walk = walk
        self.plan = plan
        self._read = unit_reader(plan, Throttle(plan.iops))

    def unit_of(
        self, path: bytes, key: bytes, ancestors: tuple[tuple[int, int], ...] = ()
    ) -> Unit | None:
        """A fresh stat of the directory itself (the top followed, as the
        scan does); None if it is gone or no longer a directory.

        ``ancestors`` are the (dev, ino) of the directories above it, top
        first, as the scan's units carry them: a subdirectory that is one
        of them (a bind mount of an ancestor into the tree) is a cycle,
        neither walked nor counted, as du does.
        """
        try:
            st = os.stat(path) if path == self.walk.top else os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        return Unit(
            path=path, key=key, disk=st.st_blocks * 512, apparent=st.st_size,
            mtime=st.st_mtime, dev=st.st_dev, ino=st.st_ino, uid=st.st_uid,
            ancestors=ancestors,
        )

    def own(self, res: DirRead) -> Own:
        return Own.of(res, owners=self.plan.owner_usage)

    def read(self, unit: Unit) -> DirRead:
        return self._read(unit)

    def walk_subtree(
        self, top: Unit, parent: Dir | None, change: Change
    ) -> tuple[list[Dir], list[tuple[Dir, tuple[int, int, bytes, int, int, int]]]]:
        """Every directory below and including ``top``, parents first, and
        the multiply-linked inodes met on the way."""
        out: list[Dir] = []
        links: list[tuple[Dir, tuple[int, int, bytes, int, int, int]]] = []
        stack: list[tuple[Unit, Dir | None]] = [(top, parent)]
        while stack:
            unit, above = stack.pop()
            res = self.read(unit)
            change.entries += res.entries
            change.unreadable.extend(res.errors)
            d = Dir(
                path=unit.path, parent=above, dev=unit.dev, ino=unit.ino,
                key=unit.key, own=self.own(res), inode=_inode(unit),
            )
            out.append(d)
            links.extend((d, link) for link in res.links)
            stack.extend((u, d) for u in reversed(res.children))
        return out, links


#: A read's multiply-linked inodes: position in the directory and
#: names there, and their sizes.
_Occ = tuple[dict[Inode, tuple[bytes, int]], dict[Inode, Sizes]]
_Links = list[tuple[int, int, bytes, int, int, int]]


def _occ(d: Dir, links: _Links) -> _Occ:
    occ: dict[Inode, tuple[bytes, int]] = {}
    sizes: dict[Inode, Sizes] = {}
    cut = len(d.key)
    for dev, ino, key, disk, apparent, uid in links:
        pos = key[cut:]
        seen = occ.get((dev, ino))
        occ[dev, ino] = (pos, 1) if seen is None else (min(seen[0], pos), seen[1] + 1)
        sizes[dev, ino] = (disk, apparent, uid)
    return occ, sizes


def _first(tree: Tree, inode: Inode) -> Dir | None:
    """The directory where du meets ``inode`` first."""
    held = tree.holders.get(inode)
    if not held:
        return None
    return min(held, key=lambda d: d.key + d.names(inode)[0])


def baseline(reader: Reader) -> tuple[Tree, Change]:
    """Read the whole walk: the tree updates start from."""
    walk = reader.walk
    change = Change()
    tree = Tree(walk.top, owners=reader.plan.owner_usage)
    top = reader.unit_of(walk.top, b"")
    if top is None:
        raise NeedsRescan("root")
    dirs, links = reader.walk_subtree(top, None, change)
    for d, found in _by_dir(links):
        occ, sizes = _occ(d, found)
        tree.set_occ(d, occ)
        tree.sizes.update(sizes)
    # Each inode once, where du meets it first (the smallest order key);
    # counted in its own sums before the tree is summed.
    for inode in tree.holders:
        first = _first(tree, inode)
        if first is not None:
            tree.preplace(first, inode, tree.sizes[inode])
    tree.graft(dirs[0], dirs)
    change.changed.update(dirs)
    return tree, change


def _by_dir(links: list[tuple[Dir, tuple[int, int, bytes, int, int, int]]]) -> list[tuple[Dir, _Links]]:
    out: dict[Dir, _Links] = {}
    for d, link in links:
        out.setdefault(d, []).append(link)
    return list(out.items())


def update(tree: Tree, reader: Reader, dirty: set[bytes]) -> Change:
    """Re-read the directories ``dirty`` names that the tree knows.

    A path the tree does not know is either below a directory that is
    new (its parent's event brings it in, walked whole after the event)
    or not walked at all (ignored, another filesystem under ``-x``).
    Raises :class:`NeedsRescan` when a hard link cannot be placed
    exactly; the tree is then partly updated and must be rebuilt.
    """
    change = Change()
    known = set(tree.holders)
    touched: set[Inode] = set()
    work = _Work(tree)
    for path in dirty:
        if path in tree.dirs:
            work.push(path, named=True)
    while work.heap:
        _depth, rank, path = heapq.heappop(work.heap)
        d = tree.dirs.get(path)
        if d is None:
            continue  # left with its parent
        if path in work.fresh:
            if rank == _NAMED:
                work.holders_of(d)  # read as a holder first: now named
            continue
        work.fresh.add(path)
        unit = reader.unit_of(path, d.key, _above(d))
        if unit is None or (unit.dev, unit.ino) != (d.dev, d.ino):
            if d.parent is None:
                raise NeedsRescan("root")
            # Replaced or gone: its parent's listing says what is there.
            work.fresh.discard(d.parent.path)
            work.push(d.parent.path, named=True)
            continue
        _reread(tree, reader, d, unit, change, work, touched)
        if rank == _NAMED:
            work.holders_of(d)
    _replace(tree, touched, known, change)
    return change


def _above(d: Dir) -> tuple[tuple[int, int], ...]:
    """(dev, ino) of the directories above ``d`` in the tree, top first."""
    out = []
    x = d.parent
    while x is not None:
        out.append((x.dev, x.ino))
        x = x.parent
    return tuple(reversed(out))


#: Heap ranks: a directory an event named (or whose listing must be read
#: again) before one read because it holds another name of a linked inode.
_NAMED, _HOLDER = 0, 1


class _Work:
    """The directories an update still reads, shallowest first."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.heap: list[tuple[int, int, bytes]] = []
        self.fresh: set[bytes] = set()
        self.followed: set[bytes] = set()

    def push(self, path: bytes, *, named: bool) -> None:
        depth = depth_under(path, self.tree.top)
        heapq.heappush(self.heap, (depth, _NAMED if named else _HOLDER, path))

    def holders_of(self, d: Dir) -> None:
        """A write through one name changes what every other name's
        directory counts for it (histogram, newest mtime) and no event
        names those directories: read them too, once."""
        if d.path in self.followed:
            return
        self.followed.add(d.path)
        for inode in d.occ or ():
            for h in self.tree.holders.get(inode, ()):
                if h is not d and h.path not in self.fresh:
                    self.push(h.path, named=False)


def _reread(
    tree: Tree,
    reader: Reader,
    d: Dir,
    unit: Unit,
    change: Change,
    work: _Work,
    touched: set[Inode],
) -> None:
    res = reader.read(unit)
    change.entries += res.entries
    change.unreadable.extend(res.errors)
    d.inode = _inode(unit)
    occ, sizes = _occ(d, res.links)
    touched.update(sizes)  # sizes may have changed even where not placed
    touched.update(tree.set_occ(d, occ))
    tree.sizes.update(sizes)
    tree.set_own(d, reader.own(res))
    change.changed.update(tree.ancestors(d))
    listed = {u.path: u for u in res.children}
    for path, child in list(d.children.items()):
        u = listed.get(path)
        if u is not None and (u.dev, u.ino) == (child.dev, child.ino):
            if u.key != child.key:
                _rekey(child, u.key, change, touched)
            if _inode(u) != child.inode and path not in work.fresh:
                work.push(path, named=True)
            continue
        gone = tree.remove(child)
        for x in gone:
            touched.update(x.occ or ())
        change.removed.extend(gone)
    for path, u in listed.items():
        if path in d.children:
            continue
        dirs, links = reader.walk_subtree(u, d, change)
        change.walked += 1
        for x, found in _by_dir(links):
            occ, sizes = _occ(x, found)
            touched.update(tree.set_occ(x, occ))
            tree.sizes.update(sizes)
        tree.graft(dirs[0], dirs)
        work.fresh.update(x.path for x in dirs)
        change.changed.update(dirs)
    change.changed.update(tree.ancestors(d))


def _rekey(d: Dir, key: bytes, change: Change, touched: set[Inode]) -> None:
    """``d`` moved in its parent's listing order: so did its subtree."""
    old = len(d.key)
    for x in subtree(d):
        x.key = key + x.key[old:]
        touched.update(x.occ or ())
        change.rekeyed.add(x)


def _replace(tree: Tree, touched: set[Inode], known: set[Inode], change: Change) -> None:
    """Count each touched inode where du now meets it first."""
    for inode in touched:
        old = tree.where.get(inode)
        win = _first(tree, inode)
        if win is None:
            tree.holders.pop(inode, None)
            tree.sizes.pop(inode, None)
        elif inode not in known:
            _check_names(tree, inode, change)
        sizes = tree.sizes.get(inode)
        was = None if old is None else old.placed_sizes(inode)
        if old is not None and was is not None and (old is not win or was != sizes):
            tree.place(old, inode, was, -1)
            change.changed.update(tree.ancestors(old))
        if (win is not None and sizes is not None
                and win.placed_sizes(inode) is None):
            tree.place(win, inode, sizes, 1)
            change.changed.update(tree.ancestors(win))


def _check_names(tree: Tree, inode: Inode, change: Change) -> None:
    """An inode new to the tree: every name of it must be in a directory
    read, or one counted as a plain file is somewhere no event named."""
    held = tree.holders[inode]
    names = sum(d.names(inode)[1] for d in held)
    d = next(iter(held))
    nlink = 0
    try:
        # Opened as the walker opens: the directory listed, no symlink.
        fd = open_listed(d.path, d.dev, d.ino, nofollow=d.parent is not None)
    except OSError:
        raise NeedsRescan("hardlink") from None
    try:
        with os.scandir(fd) as it:
            for entry in it:
                change.entries += 1
                if entry.inode() != inode[1] or nlink:
                    continue
                st = os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
                if (st.st_dev, st.st_ino) == inode:
                    nlink = st.st_nlink
    except OSError:
        nlink = 0
    finally:
        os.close(fd)
    if nlink == 0 or nlink > names:
        raise NeedsRescan("hardlink")
