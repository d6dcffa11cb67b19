"""The scan worker: walk one unit (a directory subtree) and sum it like du.

This module runs inside the worker processes, so it imports nothing but
the standard library.  A unit is a directory and everything below it;
the worker walks it depth-first with ``os.scandir`` and one ``lstat``
per entry (or with the C reader: in C, the whole loop included, where
``walks_in_c``).  Every directory that needs a row (exported, or above a
nested root) gets one, with what it holds itself; the other directories
are folded into the row above them.  Finished rows go to the parent in
messages of ``ROWS_PER_MESSAGE``, so a unit of a million exported
directories streams; only the directories it gives away to idle workers
come back as separate units.

Sizes are exact like GNU du: ``st_blocks * 512`` (``du -B1``, in 64 bits
as du computes it) and ``st_size`` (``du -b``), a directory's own inode
included; the store saturates the sums at 2**64 - 1 as du does.  An inode
with more than one link is not summed here: it is reported with an
*order key* so that the parent counts it once, in the directory where du
would meet it first (depth first, entries in the order the filesystem
lists them, sorted by inode number in directories of more than 10,000
entries on the filesystems where GNU fts does that).
"""
from __future__ import annotations

import errno
import os

from bisect import bisect_left
from collections.abc import Callable
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import TYPE_CHECKING, Any, NamedTuple

from du_exporter.scan.budget import Throttle
from du_exporter.scan.fs import (
    FTS_INODE_SORT_THRESHOLD,
    LONG_PATH,
    NO_INODE_SORT,
    fs_type,
    fts_order,
    open_listed,
)
from du_exporter.scan.ignore import Ignore
from du_exporter.scan.model import (
    DU_BLOCKS_WRAP,
    ROWS_PER_MESSAGE,
    SIZE_BUCKETS,
    DirRead,
    Hunger,
    Plan,
    Row,
    Unit,
    UnitResult,
    du_blocks,
    saturate,
)


if TYPE_CHECKING:
    from du_exporter.scan import _fastscan


_KEY_WIDTH = 4
_CYCLE = "circular directory structure: a directory containing itself"


#: Sends one message that is not the last of its unit.
Emit = Callable[[UnitResult], None]


def scan_unit(
    plan: Plan,
    unit: Unit,
    base: int = 0,
    parent: int | None = None,
    hunger: Hunger | None = None,
    throttle: Throttle | None = None,
    emit: Emit | None = None,
) -> UnitResult:
    """Walk one unit: what a worker process does per task.

    Its rows get the ids ``base``, ``base + 1``, ...; the unit's own row
    hangs on row ``parent``.  With ``emit``, finished rows are sent in
    messages along the way and the last message is returned; without,
    the returned message holds them all.  A worker passes the same
    ``throttle`` for every unit, so a stream of small units is held to the
    budget too.
    """
    walker = _Walker(plan, hunger, throttle or Throttle(plan.iops), emit)
    return walker.run(unit, base, parent)


class _Row:
    """A row being summed: its directory or one below it is still pending."""

    __slots__ = (
        "apparent", "depth", "dirs", "disk", "export", "files", "id",
        "mtime", "parent", "path", "pending",
    )

    def __init__(
        self,
        row_id: int,
        parent: int | None,
        d: Unit,
        export: tuple[bytes, int] | None,
    ) -> None:
        self.id = row_id
        self.parent = parent
        self.path = d.path
        self.depth = d.depth
        self.export = export
        self.disk = self.apparent = self.files = self.dirs = 0
        self.mtime = 0.0
        #: Directories still to read whose sums go here (the first: its own).
        self.pending = 1

    def row(self) -> Row:
        root, level = self.export or (None, None)
        return (self.id, self.parent, self.depth, self.path, root, level,
                saturate(self.disk), saturate(self.apparent), self.files,
                self.dirs, self.mtime)


#: A directory to read, the row its sums go to (for one with a row of its
#: own: the row above), whether it gets a row, and its export.
_Pending = tuple[Unit, _Row, bool, "tuple[bytes, int] | None"]


def unit_reader(
    plan: Plan, throttle: Throttle | None = None
) -> Callable[[Unit], DirRead]:
    """Read many directories alone, one after the other, with one walker
    (what it learns about filesystems is kept across them)."""
    return _Walker(plan, None, throttle or Throttle(plan.iops), None).read_one


class _DirStat(NamedTuple):
    """The fields of a directory's stat that ``_Walker._dir`` reads."""

    st_dev: int
    st_ino: int
    st_blocks: int
    st_size: int
    st_mtime: float
    st_uid: int


#: (path, sort_big, owners, dev, ino, nofollow, one_fs, root_dev): see
#: ``_fastscan.c``.
ScanDir = Callable[
    [bytes, bool, bool, int, int, bool, bool, int], tuple[Any, ...] | None
]

#: ScanDir with the directory's ``ignore-dirs`` rules (``Ignore.rules``)
#: applied: the C reader.
ScanDirSkipping = Callable[
    [bytes, bool, bool, int, int, bool, bool, int, tuple[bytes, ...]],
    tuple[Any, ...],
]

#: (dirs, owners, one_fs, root_dev, threads, slow_ns), dirs as (path,
#: sort_big, dev, ino, nofollow, skip rules): ``_fastscan.scan_dirs``,
#: ScanDir's result for each.
ScanDirs = Callable[
    [list[tuple[bytes, bool, int, int, bool, tuple[bytes, ...]]], bool, bool,
     int, int, int],
    list[tuple[Any, ...]],
]

#: Directories handed to the C reader per call, per thread: enough to
#: keep every thread busy while the slowest directory of the batch is read.
BATCH_PER_THREAD = 4
#: A batch starts its other threads once it has taken more than this per
#: directory read or lstat (ns): a warm cache does one in 1-3 us, a cold
#: one in this VM (CPU-bound) in ~10, a disk, a network filesystem or FUSE
#: in 0.1-10 ms; a CPU-bound walk starts none (benchmarks/bench_storage.py).
SLOW_NS_PER_OP = 50_000
#: With ``max-iops``, a batch holds at most this many seconds of the
#: budget at one operation per directory (the tokens are paid after it).
BATCH_BUDGET_SECONDS = 0.05

#: The values of ``scan-engine``.
ENGINES = ("auto", "c", "scandir-rs", "python")


def _fast_engine(engine: str) -> ScanDir | None:
    """The per-directory reader of ``engine``; ``None``: the Python path.

    ``auto`` is the C reader when it is built, else scandir-rs.
    """
    if engine == "python":
        return None
    if engine in {"auto", "c"}:
        try:
            from du_exporter.scan import _fastscan  # noqa: PLC0415 - optional module
        except ImportError:
            if engine == "c":
                raise
        else:
            scan_dir: ScanDir = _fastscan.scan_dir
            return scan_dir
    try:
        from du_exporter.scan import engine_scandir  # noqa: PLC0415 - optional dependency
    except ImportError:
        if engine == "scandir-rs":
            raise
        return None
    return engine_scandir.scan_dir


def _batch_reader(engine: str) -> ScanDirs | None:
    """The C reader's many-directory call, when ``engine`` runs it."""
    if engine_name(engine) != "c":
        return None
    from du_exporter.scan import _fastscan  # noqa: PLC0415 - optional module

    scan_dirs: ScanDirs = _fastscan.scan_dirs
    return scan_dirs


def _walk_type(engine: str) -> type[_fastscan.Walk] | None:
    """The C walk of a whole unit, when ``engine`` runs the C reader."""
    if engine_name(engine) != "c":
        return None
    from du_exporter.scan import _fastscan  # noqa: PLC0415 - optional module

    return _fastscan.Walk


def walks_in_c(plan: Plan) -> bool:
    """Whether the units of ``plan`` are walked wholly in C
    (``_fastscan.Walk``): the C reader, no symlinks followed, no
    ``max-iops``; else the loop is Python's, reading batches with the
    same reader."""
    return (engine_name(plan.engine) == "c" and not plan.follow_symlinks
            and plan.iops <= 0)


def _skipping_reader(engine: str) -> ScanDirSkipping | None:
    """The C reader's call that skips ignored entries, when ``engine``
    runs it (scandir-rs leaves such directories to the Python path)."""
    if engine_name(engine) != "c":
        return None
    from du_exporter.scan import _fastscan  # noqa: PLC0415 - optional module

    scan_dir: ScanDirSkipping = _fastscan.scan_dir
    return scan_dir


def engine_available(engine: str) -> bool:
    """Whether ``engine`` (a value of ``scan-engine``) can run here."""
    try:
        _fast_engine(engine)
    except ImportError:
        return False
    return True


def engine_name(engine: str) -> str:
    """The engine ``scan-engine: engine`` runs: c, scandir-rs or python."""
    fast = _fast_engine(engine)
    if fast is None:
        return "python"
    return "c" if fast.__module__.endswith("_fastscan") else "scandir-rs"


class _Walker:
    def __init__(
        self,
        plan: Plan,
        hunger: Hunger | None,
        throttle: Throttle,
        emit: Emit | None,
    ) -> None:
        self.plan = plan
        self.hunger = hunger
        self.throttle = throttle
        self.emit = emit
        #: Only with nested roots can a directory need a row unexported.
        self.nested = len(plan.exports) > 1
        self.top, self.level = plan.exports[0]
        #: The id of the next row of the unit being walked.
        self.next_id = 0
        self.ignore = Ignore(plan.ignore)
        self.sortable: dict[int, bool] = {}
        self.fast = _fast_engine(plan.engine)
        self.batch = _batch_reader(plan.engine)
        self.walk = _walk_type(plan.engine) if walks_in_c(plan) else None
        self.skipping = _skipping_reader(plan.engine)
        threads = max(1, plan.threads)
        self.batch_size = threads * BATCH_PER_THREAD
        if plan.iops > 0:
            self.batch_size = max(1, min(
                self.batch_size, int(plan.iops * BATCH_BUDGET_SECONDS)))

    def run(self, unit: Unit, base: int, parent: int | None) -> UnitResult:
        if self.walk is not None:
            return self._run_c(self.walk, unit, base, parent)
        res = UnitResult(path=unit.path)
        top = _Row(base, parent, unit, self.plan.export_of(unit.path))
        self.next_id = base + 1
        stack: list[_Pending] = [(unit, top, False, None)]
        hunger = self.hunger
        while stack:
            if len(stack) > 1 and hunger and hunger.take():
                # Idle workers: hand every pending directory back, each to
                # get a row of its own hanging on the row it would join.
                for d, acc, split, _export in stack:
                    res.children.append((d, acc.id))
                    if not split:
                        self._pend_done(acc, res)
                break
            if self.batch is not None:
                self._read_batch(res, stack)
            else:
                d, acc = self._row_of(stack.pop())
                self._read_dir(d, acc, res, stack)
                self._pend_done(acc, res)
            if (self.emit is not None
                    and len(res.rows) + len(res.links) >= ROWS_PER_MESSAGE):
                self.emit(res)
                room = res.error_room - len(res.errors)
                res = UnitResult(path=unit.path, error_room=room)
        res.final = True
        return res

    def _run_c(
        self,
        walk: type[_fastscan.Walk],
        unit: Unit,
        base: int,
        parent: int | None,
    ) -> UnitResult:
        """``run`` with the whole loop in C (``_fastscan.Walk``): the same
        rows, links, messages and hand-backs.  Python runs per directory
        only to place it among nested roots (``_place``) and to give the
        ``ignore-dirs`` rules of a directory a path pattern can reach."""
        plan = self.plan
        same = self.ignore.same_below(unit.path)
        walker = walk(unit, base, parent, plan.export_of(unit.path), self.top,
                      self.level, plan.owner_usage, plan.one_file_system,
                      plan.root_dev, plan.threads, self.batch_size,
                      SLOW_NS_PER_OP, self._sorts,
                      self.ignore.rules if same is None else same,
                      self._place if self.nested else None)
        take = self.hunger.take if self.hunger else None
        limit = ROWS_PER_MESSAGE if self.emit is not None else 0
        res = UnitResult(path=unit.path)
        while True:
            (rows, links, children, errors, unreadable, entries, hist, hsum,
             owners, done) = walker.step(
                 take, res.error_room - len(res.errors), limit)
            res.rows += rows
            res.links += links
            res.children += [(Unit._make(d), acc) for d, acc in children]
            res.unreadable += unreadable
            res.errors += [
                (path, _CYCLE if code < 0 else os.strerror(code))
                for path, code in errors]
            res.entries += entries
            res.histogram = [a + b for a, b in zip(res.histogram, hist,
                                                   strict=True)]
            res.histogram_sum += hsum
            for uid, disk, apparent in owners:
                res.own(uid, disk, apparent)
            if (self.emit is not None and not children
                    and len(rows) + len(links) >= limit):
                self.emit(res)
                room = res.error_room - len(res.errors)
                res = UnitResult(path=unit.path, error_room=room)
            if done:
                break
        res.final = True
        return res

    def _row_of(self, item: _Pending) -> tuple[Unit, _Row]:
        """A popped directory and the row its sums go to (a new one if it
        gets a row of its own)."""
        d, acc, split, export = item
        if split:
            acc = _Row(self.next_id, acc.id, d, export)
            self.next_id += 1
        return d, acc

    def read_one(self, d: Unit) -> DirRead:
        """Read directory ``d`` alone: its sums and its subdirectories."""
        res = UnitResult(path=d.path)
        acc = _Row(0, None, d, None)
        stack: list[_Pending] = []
        self._read_dir(d, acc, res, stack)
        return DirRead(
            path=d.path, disk=acc.disk, apparent=acc.apparent,
            files=acc.files, dirs=acc.dirs, mtime=acc.mtime,
            entries=res.entries, unreadable=res.unreadable,
            children=[sub for sub, _acc, _split, _export in stack],
            links=[link[1:] for link in res.links], owners=res.owners,
            errors=res.errors, histogram=res.histogram,
            histogram_sum=res.histogram_sum,
        )

    @staticmethod
    def _pend_done(acc: _Row, res: UnitResult) -> None:
        """One directory summed into ``acc``: the last finishes its row."""
        acc.pending -= 1
        if not acc.pending:
            res.rows.append(acc.row())

    def _read_batch(self, res: UnitResult, stack: list[_Pending]) -> None:
        """``_read_dir`` for up to ``batch_size`` pending directories at
        once: one C call reads them with ``plan.threads`` threads.

        The sums are the same as one at a time: they do not depend on the
        order, and the order keys come from listing positions.  A directory
        the C reader cannot take (a path too long) is read here in its turn
        but counts in the batch: a chain of them still ends the round (and
        lets the message be cut) every ``batch_size`` directories, and the
        subdirectories are queued in the order ``_fastscan.Walk`` queues
        them.
        """
        assert self.batch is not None  # noqa: S101 - checked by the caller
        plan = self.plan
        popped: list[tuple[Unit, _Row, bool]] = []
        while stack and len(popped) < self.batch_size:
            d, acc = self._row_of(stack.pop())
            fast = self._fast_ok(d, ignores=False)
            if fast:
                self._count_own(d, acc, res)
            popped.append((d, acc, fast))
        rules = self.ignore.rules
        got = iter(self.batch(
            [(d.path, self._sorts(d.dev), d.dev, d.ino, self._nofollow(d),
              rules(d.path)) for d, _acc, fast in popped if fast],
            plan.owner_usage, plan.one_file_system, plan.root_dev, plan.threads,
            SLOW_NS_PER_OP) if any(fast for _d, _acc, fast in popped) else ())
        for d, acc, fast in popped:
            if fast:
                self._fold_fast(d, acc, next(got), res, stack)
            else:
                self._read_dir(d, acc, res, stack)
            self._pend_done(acc, res)

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
        if len(entries) > FTS_INODE_SORT_THRESHOLD and self._sorts(d.dev):
            entries = fts_order(entries, lambda e: e.inode())
        return entries

    def _read_fast(
        self, d: Unit, acc: _Row, res: UnitResult, stack: list[_Pending]
    ) -> bool:
        """``_read_dir`` by the C extension or scandir-rs: same sums, no
        per-file objects.  False: the engine left this directory to the
        exact Python path."""
        assert self.fast is not None  # noqa: S101 - checked by the caller
        plan = self.plan
        args = (d.path, self._sorts(d.dev), plan.owner_usage, d.dev, d.ino,
                self._nofollow(d), plan.one_file_system, plan.root_dev)
        rules = self.ignore.rules(d.path) if self.skipping else ()
        got = (self.skipping(*args, rules) if self.skipping and rules
               else self.fast(*args))
        if got is None:
            return False
        self._fold_fast(d, acc, got, res, stack)
        return True

    def _fold_fast(
        self,
        d: Unit,
        acc: _Row,
        got: tuple[Any, ...],
        res: UnitResult,
        stack: list[_Pending],
    ) -> None:
        """Add one directory read by a fast engine (its sums, errors,
        links and subdirectories) to its row ``acc`` and ``res``."""
        (count, files, blocks, apparent, mtime, hsum, hist, subdirs, links,
         errors, err, owners) = got
        self.throttle.tick(count + 1)
        if err:
            res.error(d.path, OSError(err, os.strerror(err)))
            return
        prefix = d.path if d.path.endswith(b"/") else d.path + b"/"
        for name, code in errors:
            res.error(prefix + name, OSError(code, os.strerror(code)))
        res.entries += count
        acc.files += files
        acc.disk += blocks * 512
        acc.apparent += apparent
        acc.mtime = max(acc.mtime, mtime)
        res.histogram_sum += hsum
        for i, n in enumerate(hist):
            res.histogram[i] += n
        for uid, nblocks, size, _files in owners:
            res.own(uid, nblocks * 512, size)
        row_id = acc.id
        for dev, ino, index, nblocks, size, uid in links:
            key = d.key + index.to_bytes(_KEY_WIDTH, "big")
            res.links.append((row_id, dev, ino, key, nblocks * 512, size, uid))
        for name, index, dev, ino, nblocks, size, dmtime, uid in subdirs:
            key = d.key + index.to_bytes(_KEY_WIDTH, "big")
            stat = _DirStat(dev, ino, nblocks, size, dmtime, uid)
            self._dir(prefix + name, key, stat, d, d.via_symlink, acc, res,
                      stack)

    def _read_dir(
        self, d: Unit, acc: _Row, res: UnitResult, stack: list[_Pending]
    ) -> None:
        """Sum one directory's entries into its row ``acc`` (and the
        message ``res``); queue its subdirectories.

        The hot loop: keep it to one ``lstat`` and a few local operations
        per entry.
        """
        self._count_own(d, acc, res)
        skip = self.ignore.for_dir(d.path)
        if (self._fast_ok(d, ignores=skip is not None)
                and self._read_fast(d, acc, res, stack)):
            return
        res.python_dirs += 1
        try:
            fd = open_listed(d.path, d.dev, d.ino, nofollow=self._nofollow(d))
        except OSError as e:
            self.throttle.tick()
            res.error(d.path, e)
            return
        try:
            self._read_entries(d, fd, skip, acc, res, stack)
        finally:
            os.close(fd)

    def _count_own(self, d: Unit, acc: _Row, res: UnitResult) -> None:
        """Count the directory's own inode (known since it was listed)."""
        acc.mtime = max(acc.mtime, d.mtime)
        if d.linked:
            key = self._key(d.key, d.via_symlink)
            res.links.append(
                (acc.id, d.dev, d.ino, key, d.disk, d.apparent, d.uid)
            )
        else:
            acc.disk += d.disk
            acc.apparent += d.apparent
            if self.plan.owner_usage:
                res.own(d.uid, d.disk, d.apparent)

    def _fast_ok(self, d: Unit, *, ignores: bool) -> bool:
        """Whether a fast engine may read ``d``: the C reader, or nothing
        ignored in it (``ignores``: scandir-rs does not skip); no symlinks
        followed; a path short enough to open in one call."""
        return (self.fast is not None and (self.skipping is not None or not ignores)
                and not self.plan.follow_symlinks and len(d.path) < LONG_PATH)

    def _nofollow(self, d: Unit) -> bool:
        """Whether ``d``'s last component must not be a symlink: always
        but for a root given as a symlink and when following symlinks."""
        return not self.plan.follow_symlinks and d.key != b""

    def _read_entries(
        self,
        d: Unit,
        fd: int,
        skip: Callable[[bytes, bytes], bool] | None,
        acc: _Row,
        res: UnitResult,
        stack: list[_Pending],
    ) -> None:
        """The Python hot loop: one ``lstat`` (``fstatat``) per entry."""
        plan = self.plan
        follow = plan.follow_symlinks
        only_dev = plan.root_dev if plan.one_file_system else None
        entries = self._list(d, res, fd)
        if entries is None:
            return
        prefix = d.path if d.path.endswith(b"/") else d.path + b"/"
        tick = self.throttle.tick if plan.iops > 0 else None
        own = res.own if plan.owner_usage else None
        blocks = apparent = files = count = hsum = 0
        mtime = acc.mtime
        row_id = acc.id
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
                self._dir(path, key, st, d, via, acc, res, stack)
                continue
            if only_dev is not None and st.st_dev != only_dev:
                continue  # like du -x: any entry of another filesystem
            files += 1
            mtime = max(mtime, st.st_mtime)
            if st.st_nlink > 1 or follow:
                key = self._key(d.key + index.to_bytes(_KEY_WIDTH, "big"), via)
                links.append((row_id, st.st_dev, st.st_ino, key,
                              du_blocks(st.st_blocks) * 512,
                              st.st_size, st.st_uid))
            else:
                nblocks = st.st_blocks % DU_BLOCKS_WRAP  # du_blocks, inlined
                blocks += nblocks
                apparent += st.st_size
                if own is not None:
                    own(st.st_uid, nblocks * 512, st.st_size)
            if S_ISREG(mode):
                hist[bisect_left(SIZE_BUCKETS, st.st_size)] += 1
                hsum += st.st_size
        acc.disk += blocks * 512
        acc.apparent += apparent
        acc.files += files
        res.entries += count
        res.histogram_sum += hsum
        acc.mtime = mtime

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
        acc: _Row,
        res: UnitResult,
        stack: list[_Pending],
    ) -> None:
        plan = self.plan
        if plan.one_file_system and st.st_dev != plan.root_dev:
            return  # like du -x: a mount point is neither walked nor counted
        ancestors = (*parent.ancestors, (parent.dev, parent.ino))
        if (st.st_dev, st.st_ino) in ancestors:
            # The directory is being walked: a symlink loop, or a bind
            # mount of an ancestor into the tree (du: "circular directory
            # structure", FTS_DC); counted nowhere, never entered.
            if not plan.follow_symlinks:
                res.error(path, OSError(errno.ELOOP, _CYCLE))
            return
        acc.dirs += 1
        sub = Unit(
            path=path,
            key=key,
            disk=du_blocks(st.st_blocks) * 512,
            apparent=st.st_size,
            mtime=st.st_mtime,
            ancestors=ancestors,
            linked=plan.follow_symlinks,
            via_symlink=via,
            dev=st.st_dev,
            ino=st.st_ino,
            uid=st.st_uid,
            depth=parent.depth + 1,
        )
        if self.nested:
            export, split = self._place(path)
        else:  # the walked root alone: its depth decides
            export = (self.top, sub.depth) if sub.depth <= self.level else None
            split = export is not None
        if split:
            stack.append((sub, acc, True, export))
        else:
            acc.pending += 1
            stack.append((sub, acc, False, None))

    def _place(self, path: bytes) -> tuple[tuple[bytes, int] | None, bool]:
        """With nested roots: the export of directory ``path``, and whether
        it gets a row (exported, or above a nested root to hang it on)."""
        export = self.plan.export_of(path)
        return export, export is not None or self.plan.holds_root(path)

    def _sorts(self, dev: int) -> bool:
        """Whether GNU fts would sort a big directory on ``dev`` by inode."""
        if dev not in self.sortable:
            self.sortable[dev] = fs_type(dev) not in NO_INODE_SORT
        return self.sortable[dev]


