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
import mmap
import os
import re
import struct
import time

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import Any, NamedTuple, Protocol, TypeVar


#: Upper bounds (bytes, apparent size) of the file-size histogram.
SIZE_BUCKETS: tuple[int, ...] = tuple(4**k * 1024 for k in range(13))
#: How many unreadable paths one unit reports by name (the rest counted).
MAX_ERRORS = 20
#: A unit returns early once it holds this many possible duplicates.
MAX_LINKS = 50_000
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
    #: ``auto`` (the C reader when built), ``c`` or ``python``.
    engine: str = "auto"
    #: Sum usage per owner (uid) too.
    owner_usage: bool = False

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



_GLOB = re.compile(rb"[*?[]")


class Ignore:
    """``ignore-dirs`` compiled: which entries of a directory to skip.

    Exact paths and names are set lookups; globs (fnmatch, ``*`` also
    matches ``/``) are tried only in directories they can match in.
    """

    def __init__(self, patterns: tuple[bytes, ...]) -> None:
        self.names: set[bytes] = set()
        self.name_globs: list[re.Pattern[bytes]] = []
        self.paths: dict[bytes, set[bytes]] = {}
        self.path_globs: list[tuple[bytes, re.Pattern[bytes]]] = []
        for p in patterns:
            glob = _GLOB.search(p)
            if not p.startswith(b"/"):
                if glob:
                    self.name_globs.append(_compile(p))
                else:
                    self.names.add(p)
            elif glob:
                self.path_globs.append((p[: glob.start()], _compile(p)))
            else:
                parent, _, name = p.rpartition(b"/")
                self.paths.setdefault(parent or b"/", set()).add(name)

    def for_dir(self, path: bytes) -> Callable[[bytes, bytes], bool] | None:
        """A test ``(entry path, name) -> skip?`` for entries of ``path``."""
        names = self.names | self.paths.get(path, set())
        slash = path if path.endswith(b"/") else path + b"/"
        globs = [rx for lit, rx in self.path_globs
                 if slash.startswith(lit) or lit.startswith(slash)]
        name_globs = self.name_globs
        if not (names or globs or name_globs):
            return None

        def skip(entry_path: bytes, name: bytes) -> bool:
            return (
                name in names
                or any(rx.match(name) for rx in name_globs)
                or any(rx.match(entry_path) for rx in globs)
            )

        return skip


def _compile(pattern: bytes) -> re.Pattern[bytes]:
    return re.compile(os.fsencode(fnmatch.translate(os.fsdecode(pattern))))


#: Longer directory paths are opened piece by piece (PATH_MAX is 4096).
_LONG_PATH = 3072
_FTS_BATCH = 100_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def open_dir(path: bytes) -> int:
    """A descriptor of the directory ``path``, however long the path is."""
    if len(path) < _LONG_PATH:
        return os.open(path, _DIR_FLAGS)
    fd = os.open(b"/" if path.startswith(b"/") else b".", _DIR_FLAGS)
    try:
        rest = path.lstrip(b"/")
        while rest:
            cut = rest.rfind(b"/", 0, _LONG_PATH) if len(rest) >= _LONG_PATH else -1
            part, rest = (rest[:cut], rest[cut + 1:]) if cut > 0 else (rest, b"")
            new = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = new
    except BaseException:
        os.close(fd)
        raise
    return fd


T = TypeVar("T")


def fts_order(entries: list[T], inode: Callable[[T], int]) -> list[T]:
    """GNU fts's order: each batch of 100,000 entries read is sorted by
    inode when it holds more than 10,000 (the caller checks the
    filesystem)."""
    out: list[T] = []
    for start in range(0, len(entries), _FTS_BATCH):
        batch = entries[start:start + _FTS_BATCH]
        if len(batch) > _FTS_INODE_SORT_THRESHOLD:
            batch.sort(key=inode)
        out.extend(batch)
    return out


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
    uid: int = 0


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
    #: (dev, ino, key, disk, apparent, uid) of inodes that may be seen
    #: twice.
    links: list[tuple[int, int, bytes, int, int, int]] = field(
        default_factory=list
    )
    #: uid -> [disk, apparent] of what this unit counted itself (the
    #: links are counted once, later, by the parent).
    owners: dict[int, list[int]] = field(default_factory=dict)
    errors: list[tuple[bytes, str]] = field(default_factory=list)
    histogram: list[int] = field(
        default_factory=lambda: [0] * (len(SIZE_BUCKETS) + 1)
    )
    histogram_sum: int = 0

    def own(self, uid: int, disk: int, apparent: int) -> None:
        sums = self.owners.setdefault(uid, [0, 0])
        sums[0] += disk
        sums[1] += apparent

    def error(self, path: bytes, err: OSError) -> None:
        self.unreadable += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((path, err.strerror or type(err).__name__))


class _Throttle:
    """A token bucket: operations stay under ``rate`` per second.

    One per worker process (not per unit), so a stream of small units is
    held to the budget too; at most 10 ms of unused budget is saved up,
    and sleeps are at least 10 ms long.
    """

    BURST = 0.01

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.last = clock()
        self.allowance = rate * self.BURST

    def tick(self, n: int = 1) -> None:
        if self.rate <= 0:
            return
        now = self.clock()
        self.allowance = min(
            self.rate * self.BURST,
            self.allowance + (now - self.last) * self.rate,
        ) - n
        self.last = now
        if self.allowance < -self.rate * self.BURST:
            time.sleep(-self.allowance / self.rate)


_throttles: dict[float, _Throttle] = {}


def _throttle(rate: float) -> _Throttle:
    """This process's throttle for ``rate`` (kept across units)."""
    if rate not in _throttles:
        _throttles.clear()
        _throttles[rate] = _Throttle(rate)
    return _throttles[rate]


class MappedHunger:
    """How many workers are idle, in a few bytes of memory shared by mmap.

    The parent writes it; a busy worker that sees it above zero takes one
    and returns early, handing its pending directories back.  Updates are
    not atomic across processes, on purpose: a lost or doubled decrement
    only moves work a little earlier or later, never changes a number.
    """

    SIZE = 8

    def __init__(self, fd: int) -> None:
        self.map = mmap.mmap(fd, self.SIZE)

    def set(self, n: int) -> None:
        struct.pack_into("q", self.map, 0, max(0, n))

    def take(self) -> bool:
        n: int = struct.unpack_from("q", self.map, 0)[0]
        if n > 0:
            struct.pack_into("q", self.map, 0, n - 1)
            return True
        return False


def scan_unit(plan: Plan, unit: Unit, hunger: Hunger | None = None) -> UnitResult:
    """Walk one unit: what a worker process does per task."""
    return _Walker(plan, hunger).run(unit)


class _DirStat(NamedTuple):
    """The fields of a directory's stat that ``_Walker._dir`` reads."""

    st_dev: int
    st_ino: int
    st_blocks: int
    st_size: int
    st_mtime: float
    st_uid: int


ScanDir = Callable[[bytes, bool], tuple[Any, ...]]


def _fast_engine(engine: str) -> ScanDir | None:
    """The C reader, unless ``engine`` is ``python`` or it is not built."""
    if engine == "python":
        return None
    try:
        from du_exporter import _fastscan  # noqa: PLC0415 - optional module
    except ImportError:
        if engine == "c":
            raise
        return None
    scan_dir: ScanDir = _fastscan.scan_dir
    return scan_dir


def engine_available(engine: str) -> bool:
    """Whether ``engine`` (``auto``, ``c``, ``python``) can run here."""
    try:
        _fast_engine(engine)
    except ImportError:
        return False
    return True


class _Walker:
    def __init__(self, plan: Plan, hunger: Hunger | None) -> None:
        self.plan = plan
        self.hunger = hunger
        self.throttle = _throttle(plan.iops)
        self.ignore = Ignore(plan.ignore)
        self.sortable: dict[int, bool] = {}
        self.fast = _fast_engine(plan.engine)

    def run(self, unit: Unit) -> UnitResult:
        res = UnitResult(path=unit.path)
        stack: list[Unit] = [unit]
        while stack:
            if len(stack) > 1 and self.hunger and self.hunger.take():
                # Idle workers: hand every pending directory back.
                res.children.extend(stack)
                break
            if len(res.links) > MAX_LINKS:
                # Keep the worker's memory bounded on hard-link farms.
                res.children.extend(stack)
                break
            self._read_dir(stack.pop(), res, stack)
        return res

    def _list(
        self, d: Unit, res: UnitResult, fd: int
    ) -> list[os.DirEntry[str]] | None:
        self.throttle.tick()
        try:
            with os.scandir(fd) as it:  # names: str (surrogateescape)
                entries = list(it)
        except OSError as e:
            res.error(d.path, e)
            return None
        if len(entries) > _FTS_INODE_SORT_THRESHOLD and self._sorts(d.dev):
            entries = fts_order(entries, lambda e: e.inode())
        return entries

    def _read_fast(self, d: Unit, res: UnitResult, stack: list[Unit]) -> None:
        """``_read_dir`` by the C extension: same sums, no per-file objects."""
        assert self.fast is not None  # noqa: S101 - checked by the caller
        (count, files, blocks, apparent, mtime, hsum, hist, subdirs, links,
         errors, err, owners) = self.fast(d.path, self._sorts(d.dev))
        self.throttle.tick(count + 1)
        if err:
            res.error(d.path, OSError(err, os.strerror(err)))
            return
        prefix = d.path if d.path.endswith(b"/") else d.path + b"/"
        for name, errno in errors:
            res.error(prefix + name, OSError(errno, os.strerror(errno)))
        res.entries += count
        res.files += files
        res.disk += blocks * 512
        res.apparent += apparent
        res.mtime = max(res.mtime, mtime)
        res.histogram_sum += hsum
        for i, n in enumerate(hist):
            res.histogram[i] += n
        for uid, nblocks, size, _files in owners:
            res.own(uid, nblocks * 512, size)
        for dev, ino, index, nblocks, size, uid in links:
            key = d.key + index.to_bytes(_KEY_WIDTH, "big")
            res.links.append((dev, ino, key, nblocks * 512, size, uid))
        for name, index, dev, ino, nblocks, size, dmtime, uid in subdirs:
            key = d.key + index.to_bytes(_KEY_WIDTH, "big")
            stat = _DirStat(dev, ino, nblocks, size, dmtime, uid)
            self._dir(prefix + name, key, stat, d, d.via_symlink, res, stack)

    def _read_dir(self, d: Unit, res: UnitResult, stack: list[Unit]) -> None:
        """Sum one directory's entries into ``res``; queue its subdirectories.

        The hot loop: keep it to one ``lstat`` and a few local operations
        per entry.
        """
        plan = self.plan
        follow = plan.follow_symlinks
        res.mtime = max(res.mtime, d.mtime)
        if d.linked:
            key = self._key(d.key, d.via_symlink)
            res.links.append((d.dev, d.ino, key, d.disk, d.apparent, d.uid))
        else:
            res.disk += d.disk
            res.apparent += d.apparent
            res.own(d.uid, d.disk, d.apparent)
        skip = self.ignore.for_dir(d.path)
        short = len(d.path) < _LONG_PATH
        if self.fast is not None and skip is None and not follow and short:
            self._read_fast(d, res, stack)
            return
        try:
            fd = open_dir(d.path)
        except OSError as e:
            self.throttle.tick()
            res.error(d.path, e)
            return
        try:
            self._read_entries(d, fd, skip, res, stack)
        finally:
            os.close(fd)

    def _read_entries(
        self,
        d: Unit,
        fd: int,
        skip: Callable[[bytes, bytes], bool] | None,
        res: UnitResult,
        stack: list[Unit],
    ) -> None:
        """The Python hot loop: one ``lstat`` (``fstatat``) per entry."""
        plan = self.plan
        follow = plan.follow_symlinks
        entries = self._list(d, res, fd)
        if entries is None:
            return
        prefix = d.path if d.path.endswith(b"/") else d.path + b"/"
        tick = self.throttle.tick if plan.iops > 0 else None
        blocks = apparent = files = count = hsum = 0
        mtime = res.mtime
        hist, links = res.histogram, res.links
        # Consume the listing from the end of a reversed copy: each entry
        # (and the stat it caches) is freed once summed, so a directory of
        # 200,000 entries does not hold 200,000 stat results at once.
        entries.reverse()
        index = -1
        while entries:
            entry = entries.pop()
            index += 1
            name = os.fsencode(entry.name)  # the exact bytes
            path = prefix + name
            if skip is not None and skip(path, name):
                continue
            if tick is not None:
                tick()
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                res.error(path, e)
                continue
            mode = st.st_mode
            via = d.via_symlink
            if follow and S_ISLNK(mode):
                st, via = self._follow(name, fd, st, via)
                mode = st.st_mode
            count += 1
            if S_ISDIR(mode):
                key = d.key + index.to_bytes(_KEY_WIDTH, "big")
                self._dir(path, key, st, d, via, res, stack)
                continue
            files += 1
            mtime = max(mtime, st.st_mtime)
            if st.st_nlink > 1 or follow:
                key = self._key(d.key + index.to_bytes(_KEY_WIDTH, "big"), via)
                links.append((st.st_dev, st.st_ino, key, st.st_blocks * 512,
                              st.st_size, st.st_uid))
            else:
                blocks += st.st_blocks
                apparent += st.st_size
                res.own(st.st_uid, st.st_blocks * 512, st.st_size)
            if S_ISREG(mode):
                hist[bisect_left(SIZE_BUCKETS, st.st_size)] += 1
                hsum += st.st_size
        res.disk += blocks * 512
        res.apparent += apparent
        res.files += files
        res.entries += count
        res.histogram_sum += hsum
        res.mtime = mtime

    def _follow(
        self, name: bytes, fd: int, st: os.stat_result, via: bool
    ) -> tuple[os.stat_result, bool]:
        """The target's stat for a followed symlink; the link's if dangling."""
        try:
            return os.stat(name, dir_fd=fd), True
        except OSError:  # dangling or looping: count the link itself
            return st, via

    def _key(self, key: bytes, via: bool) -> bytes:
        """Order key; when following symlinks, direct paths win first."""
        if not self.plan.follow_symlinks:
            return key
        return (b"\x01" if via else b"\x00") + key

    def _dir(
        self,
        path: bytes,
        key: bytes,
        st: os.stat_result | _DirStat,
        parent: Unit,
        via: bool,
        res: UnitResult,
        stack: list[Unit],
    ) -> None:
        plan = self.plan
        if plan.one_file_system and st.st_dev != plan.root_dev:
            return  # like du -x: a mount point is neither walked nor counted
        ancestors: tuple[tuple[int, int], ...] = ()
        if plan.follow_symlinks:
            ancestors = (*parent.ancestors, (parent.dev, parent.ino))
            if (st.st_dev, st.st_ino) in ancestors:
                return  # a symlink loop: the directory is being walked
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
            uid=st.st_uid,
        )
        if plan.must_split(path):
            res.children.append(sub)
        else:
            stack.append(sub)

    def _sorts(self, dev: int) -> bool:
        """Whether GNU fts would sort a big directory on ``dev`` by inode."""
        if dev not in self.sortable:
            self.sortable[dev] = fs_type(dev) not in _NO_INODE_SORT
        return self.sortable[dev]


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
