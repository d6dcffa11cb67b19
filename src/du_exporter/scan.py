"""The scan worker: walk one unit (a directory subtree) and sum it like du.

This module runs inside the worker processes, so it imports nothing but
the standard library.  A unit is one directory; the worker walks it
depth-first with ``os.scandir`` and one ``lstat`` per entry, folds every
subdirectory into the unit's totals, and hands back as separate units
only the subdirectories that must get their own row (see
:class:`Plan`) or that it gives away to idle workers.

Sizes are exact like GNU du: ``st_blocks * 512`` (``du -B1``) and
``st_size`` (``du -b``), a directory's own inode included.  An inode
with more than one link is not summed here: it is reported with an
*order key* so that the parent counts it once, in the directory where du
would meet it first (depth first, entries in the order the filesystem
lists them, sorted by inode number in directories of more than 10,000
entries on the filesystems where GNU fts does that).
"""

from __future__ import annotations

import fnmatch
import os
import stat
import time

from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import Protocol


#: Upper bounds (bytes, apparent size) of the file-size histogram.
SIZE_BUCKETS: tuple[int, ...] = tuple(4**k * 1024 for k in range(13))
#: How many unreadable paths one unit reports by name (the rest counted).
MAX_ERRORS = 20
#: GNU fts sorts a directory's entries by inode above this many entries...
_FTS_INODE_SORT_THRESHOLD = 10_000
#: ...except on these filesystems, where it keeps the listing order.
_NO_INODE_SORT = frozenset({"nfs", "nfs4", "tmpfs", "cifs", "smb3"})
_KEY_WIDTH = 4


class Hunger(Protocol):
    """How many idle workers want work; a worker takes one to give away."""

    def take(self) -> bool: ...


@dataclass(frozen=True)
class Plan:
    """What every worker needs to know about one walked (top) root."""

    #: Every configured root inside this walk as (path, level), outermost
    #: first; a directory gets a row if some root asks for its depth.
    exports: tuple[tuple[bytes, int], ...]
    ignore: tuple[bytes, ...]
    one_file_system: bool
    follow_symlinks: bool
    #: Device of the walked root, for ``one_file_system``.
    root_dev: int
    #: Directory reads plus stats per second for this worker (0: no limit).
    iops: float = 0.0

    def exported(self, path: bytes) -> bool:
        return any(
            depth_under(path, root) <= level
            for root, level in self.exports
        )

    def must_split(self, path: bytes) -> bool:
        """A directory gets its own unit if it gets a row or holds a root."""
        if self.exported(path):
            return True
        prefix = path + b"/"
        return any(root.startswith(prefix) for root, _ in self.exports[1:])

    def ignored(self, path: bytes, name: bytes) -> bool:
        for pattern in self.ignore:
            if pattern.startswith(b"/"):
                if fnmatch.fnmatchcase(path, pattern):
                    return True
            elif fnmatch.fnmatchcase(name, pattern):
                return True
        return False


def depth_under(path: bytes, root: bytes) -> int:
    """Depth of ``path`` below ``root`` (0 for root), or a huge number."""
    if path == root:
        return 0
    prefix = root if root.endswith(b"/") else root + b"/"
    if not path.startswith(prefix):
        return 1 << 30
    return path[len(prefix):].count(b"/") + 1


@dataclass(frozen=True)
class Unit:
    """A directory to walk, with its own inode's numbers already known."""

    path: bytes
    #: Order key: the listing positions from the walked root, 4 bytes each.
    key: bytes
    disk: int
    apparent: int
    mtime: float
    #: (dev, ino) of the directories above it, for loop detection when
    #: following symlinks; empty otherwise.
    ancestors: tuple[tuple[int, int], ...] = ()
    #: The inode itself goes through the once-per-inode table (always, when
    #: following symlinks).
    linked: bool = False
    #: Reached through a followed symlink: loses to a direct path.
    via_symlink: bool = False
    dev: int = 0
    ino: int = 0


@dataclass
class UnitResult:
    """The sums over one unit, minus the subunits it handed back."""

    path: bytes
    disk: int = 0
    apparent: int = 0
    files: int = 0
    dirs: int = 0
    mtime: float = 0.0
    entries: int = 0
    unreadable: int = 0
    children: list[Unit] = field(default_factory=list)
    #: (dev, ino, key, disk, apparent) of inodes that may be seen twice.
    links: list[tuple[int, int, bytes, int, int]] = field(
        default_factory=list
    )
    errors: list[tuple[bytes, str]] = field(default_factory=list)
    histogram: list[int] = field(
        default_factory=lambda: [0] * (len(SIZE_BUCKETS) + 1)
    )
    histogram_sum: int = 0

    def error(self, path: bytes, err: OSError) -> None:
        self.unreadable += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((path, err.strerror or type(err).__name__))


class _Throttle:
    """Sleep so that operations stay under ``rate`` per second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.ops = 0

    def tick(self) -> None:
        if self.rate <= 0:
            return
        self.ops += 1
        ahead = self.ops / self.rate - (time.monotonic() - self.start)
        if ahead > 0.01:  # noqa: PLR2004 - sleep in chunks of >= 10 ms
            time.sleep(ahead)


class SharedHunger:
    """A counter in shared memory: how many workers are idle.

    The parent sets it; a busy worker that sees it above zero takes one
    and returns early, handing its pending directories back as units.
    """

    def __init__(self, value: Synchronized[int]) -> None:
        self.value = value

    def set(self, n: int) -> None:
        self.value.value = max(0, n)

    def take(self) -> bool:
        with self.value.get_lock():
            if self.value.value > 0:
                self.value.value -= 1
                return True
        return False


_state: dict[str, Hunger | None] = {}


def init_worker(hunger: Hunger | None) -> None:
    """Pool initializer: remember the shared hunger counter."""
    _state["hunger"] = hunger


def scan_unit(plan: Plan, unit: Unit) -> UnitResult:
    """Walk one unit; the worker pool's task function."""
    return _Walker(plan, _state.get("hunger")).run(unit)


class _Walker:
    def __init__(self, plan: Plan, hunger: Hunger | None) -> None:
        self.plan = plan
        self.hunger = hunger
        self.throttle = _Throttle(plan.iops)
        self.sortable: dict[int, bool] = {}

    def run(self, unit: Unit) -> UnitResult:
        res = UnitResult(path=unit.path)
        stack: list[Unit] = [unit]
        while stack:
            if len(stack) > 1 and self.hunger and self.hunger.take():
                # Idle workers: hand every pending directory back.
                res.children.extend(stack)
                break
            self._read_dir(stack.pop(), res, stack)
        return res

    def _read_dir(self, d: Unit, res: UnitResult, stack: list[Unit]) -> None:
        plan = self.plan
        res.mtime = max(res.mtime, d.mtime)
        if d.linked:
            res.links.append(
                (d.dev, d.ino, self._key(d.key, d), d.disk, d.apparent)
            )
        else:
            res.disk += d.disk
            res.apparent += d.apparent
        self.throttle.tick()
        try:
            with os.scandir(d.path) as it:
                entries = list(it)
        except OSError as e:
            res.error(d.path, e)
            return
        if len(entries) > _FTS_INODE_SORT_THRESHOLD and self._sorts(d.path):
            entries.sort(key=lambda e: e.inode())
        ancestors = (
            (*d.ancestors, (d.dev, d.ino)) if plan.follow_symlinks else ()
        )
        for index, entry in enumerate(entries):
            path = entry.path
            if plan.ignore and plan.ignored(path, entry.name):
                continue
            self.throttle.tick()
            st, followed = self._stat(entry, res)
            if st is None:
                continue
            res.entries += 1
            key = d.key + index.to_bytes(_KEY_WIDTH, "big")
            via = d.via_symlink or followed
            if stat.S_ISDIR(st.st_mode):
                self._dir(path, key, st, (ancestors, via), res, stack)
            else:
                self._file(st, self._key(key, via=via), res)

    def _key(self, key: bytes, d: Unit | None = None, *, via: bool = False) -> bytes:
        """Order key; when following symlinks, direct paths win first."""
        if not self.plan.follow_symlinks:
            return key
        via = d.via_symlink if d is not None else via
        return (b"\x01" if via else b"\x00") + key

    def _stat(
        self, entry: os.DirEntry[bytes], res: UnitResult
    ) -> tuple[os.stat_result | None, bool]:
        """``lstat`` the entry; the target's stat for a followed symlink."""
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as e:
            res.error(entry.path, e)
            return None, False
        if self.plan.follow_symlinks and stat.S_ISLNK(st.st_mode):
            try:
                return os.stat(entry.path), True
            except OSError:  # dangling or looping: count the link itself
                return st, False
        return st, False

    def _dir(
        self,
        path: bytes,
        key: bytes,
        st: os.stat_result,
        context: tuple[tuple[tuple[int, int], ...], bool],
        res: UnitResult,
        stack: list[Unit],
    ) -> None:
        plan = self.plan
        ancestors, via = context
        if plan.one_file_system and st.st_dev != plan.root_dev:
            return  # like du -x: a mount point is neither walked nor counted
        if plan.follow_symlinks and (st.st_dev, st.st_ino) in ancestors:
            return  # a symlink loop: the directory is being walked already
        res.dirs += 1
        sub = Unit(
            path=path,
            key=key,
            disk=st.st_blocks * 512,
            apparent=st.st_size,
            mtime=st.st_mtime,
            ancestors=ancestors,
            linked=plan.follow_symlinks,
            via_symlink=via,
            dev=st.st_dev,
            ino=st.st_ino,
        )
        if plan.must_split(path):
            res.children.append(sub)
        else:
            stack.append(sub)

    def _file(self, st: os.stat_result, key: bytes, res: UnitResult) -> None:
        res.files += 1
        res.mtime = max(res.mtime, st.st_mtime)
        disk = st.st_blocks * 512
        if st.st_nlink > 1 or self.plan.follow_symlinks:
            res.links.append((st.st_dev, st.st_ino, key, disk, st.st_size))
        else:
            res.disk += disk
            res.apparent += st.st_size
        if stat.S_ISREG(st.st_mode):
            res.histogram[_bucket(st.st_size)] += 1
            res.histogram_sum += st.st_size

    def _sorts(self, path: bytes) -> bool:
        """Whether GNU fts would sort this big directory by inode."""
        try:
            dev = os.stat(path).st_dev
        except OSError:
            return False
        if dev not in self.sortable:
            self.sortable[dev] = fs_type(dev) not in _NO_INODE_SORT
        return self.sortable[dev]


def _bucket(size: int) -> int:
    for i, bound in enumerate(SIZE_BUCKETS):
        if size <= bound:
            return i
    return len(SIZE_BUCKETS)


def fs_type(dev: int, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The filesystem type of a device number, from ``mountinfo``."""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields_ = line.split()
                if len(fields_) > 2 and fields_[2] == want and " - " in line:  # noqa: PLR2004
                    return line.split(" - ", 1)[1].split()[0]
    except OSError:
        pass
    return "unknown"
