"""Re-reading what events name, one directory at a time, like du.

Events are hints: each named directory is read again with fresh stats
by the scan's own walker (one directory per read: every subdirectory is
handed back instead of walked), its own sums replace the old ones, and
subdirectories that appeared are walked whole while those that vanished
leave the tree.  No number ever comes from an event.

Hard links are placed walk-wide (where du meets an inode first); a
directory that holds or held one is not re-placed here: the update
asks for a full rescan instead (:class:`NeedsRescan`).
"""

from __future__ import annotations

import heapq
import os
import stat

from dataclasses import dataclass, field

from du_exporter.paths import Walk, depth_under
from du_exporter.scan.budget import Throttle
from du_exporter.scan.model import DirRead, Plan, Unit
from du_exporter.scan.walker import unit_reader
from du_exporter.watch.state import Dir, Own, Tree


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
    #: Directory entries read.
    entries: int = 0
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

    def unit_of(self, path: bytes, key: bytes) -> Unit | None:
        """A fresh stat of the directory itself (the top followed, as the
        scan does); None if it is gone or no longer a directory."""
        try:
            st = os.stat(path) if path == self.walk.top else os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        return Unit(
            path=path, key=key, disk=st.st_blocks * 512, apparent=st.st_size,
            mtime=st.st_mtime, dev=st.st_dev, ino=st.st_ino, uid=st.st_uid,
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


def baseline(reader: Reader) -> tuple[Tree, Change]:
    """Read the whole walk: the tree updates start from."""
    walk = reader.walk
    change = Change()
    tree = Tree(walk.top)
    top = reader.unit_of(walk.top, b"")
    if top is None:
        raise NeedsRescan("root")
    dirs, links = reader.walk_subtree(top, None, change)
    # Each inode once, where du meets it first (the smallest order key).
    first: dict[tuple[int, int], tuple[bytes, Dir, int, int, int]] = {}
    for d, (dev, ino, key, disk, apparent, uid) in links:
        seen = first.get((dev, ino))
        if seen is None or key < seen[0]:
            first[dev, ino] = (key, d, disk, apparent, uid)
    for _key, d, disk, apparent, uid in first.values():
        d.own.disk += disk
        d.own.apparent += apparent
        sums = d.own.owners.setdefault(uid, [0, 0])
        sums[0] += disk
        sums[1] += apparent
    tree.graft(dirs[0], dirs)
    change.changed.update(dirs)
    return tree, change


def update(tree: Tree, reader: Reader, dirty: set[bytes]) -> Change:
    """Re-read the directories ``dirty`` names that the tree knows.

    A path the tree does not know is either below a directory that is
    new (its parent's event brings it in, walked whole after the event)
    or not walked at all (ignored, another filesystem under ``-x``).
    Raises :class:`NeedsRescan` when hard links are involved; the tree
    is then partly updated and must be rebuilt.
    """
    change = Change()
    heap: list[tuple[int, bytes]] = []
    for path in dirty:
        if path in tree.dirs:
            heapq.heappush(heap, (depth_under(path, tree.top), path))
    fresh: set[bytes] = set()
    while heap:
        _depth, path = heapq.heappop(heap)
        d = tree.dirs.get(path)
        if d is None or path in fresh:
            continue  # left with its parent, or already read
        fresh.add(path)
        unit = reader.unit_of(path, d.key)
        if unit is None or (unit.dev, unit.ino) != (d.dev, d.ino):
            if d.parent is None:
                raise NeedsRescan("root")
            # Replaced or gone: its parent's listing says what is there.
            fresh.discard(d.parent.path)
            heapq.heappush(heap, (_depth - 1, d.parent.path))
            continue
        _reread(tree, reader, d, unit, change, fresh, heap, _depth)
    return change


def _reread(
    tree: Tree,
    reader: Reader,
    d: Dir,
    unit: Unit,
    change: Change,
    fresh: set[bytes],
    heap: list[tuple[int, bytes]],
    depth: int,
) -> None:
    res = reader.read(unit)
    change.entries += res.entries
    change.unreadable.extend(res.errors)
    if res.links or d.own.links:
        raise NeedsRescan("hardlink")
    d.inode = _inode(unit)
    tree.set_own(d, reader.own(res))
    change.changed.update(tree.ancestors(d))
    listed = {u.path: u for u in res.children}
    for path, child in list(d.children.items()):
        u = listed.get(path)
        if u is not None and (u.dev, u.ino) == (child.dev, child.ino):
            child.key = u.key
            if _inode(u) != child.inode and path not in fresh:
                heapq.heappush(heap, (depth + 1, path))
            continue
        if any(x.own.links for x in _subtree(child)):
            raise NeedsRescan("hardlink")
        change.removed.extend(tree.remove(child))
    for path, u in listed.items():
        if path in d.children:
            continue
        dirs, links = reader.walk_subtree(u, d, change)
        if links:
            raise NeedsRescan("hardlink")
        tree.graft(dirs[0], dirs)
        fresh.update(x.path for x in dirs)
        change.changed.update(dirs)
    change.changed.update(tree.ancestors(d))


def _subtree(d: Dir) -> list[Dir]:
    out, stack = [], [d]
    while stack:
        x = stack.pop()
        out.append(x)
        stack.extend(x.children.values())
    return out
