"""What a walk is made of: the plan, units, their rows, size buckets.

Shared by the parent and the worker processes, so it imports nothing
but the standard library, and not ``dataclasses`` either: it pulls in
``inspect`` (with ``ast``, ``dis`` and ``tokenize``), 1.5 MiB in every
worker.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from du_exporter.paths import export_of


#: Upper bounds (bytes, apparent size) of the file-size histogram.
SIZE_BUCKETS: tuple[int, ...] = tuple(4**k * 1024 for k in range(13))
#: How many unreadable paths one unit reports by name (the rest counted).
MAX_ERRORS = 20
#: A worker sends a message once it holds this many finished rows and
#: possible duplicates (links), so that its memory and the parent's stay
#: bounded however many exported directories or hard links a unit holds.
ROWS_PER_MESSAGE = 1_000
#: The rows of the unit with task number t get ids ``t << ROW_ID_BITS``,
#: ``+ 1``, ...: unique over the walk without asking the parent.
ROW_ID_BITS = 32
#: du's sums stop here (it prints "Infinity"); sizes, devices and inode
#: numbers are unsigned 64-bit.
U64_MAX = 2**64 - 1
#: du computes ``st_blocks * 512`` in 64 bits (``st_blocks`` unsigned), so
#: only the low 55 bits of ``st_blocks`` count.
DU_BLOCKS_WRAP = 2**55


def saturate(value: int) -> int:
    """A sum as du keeps it: at most 2**64 - 1."""
    return min(value, U64_MAX)


def du_blocks(st_blocks: int) -> int:
    """The 512-byte blocks du counts for ``st_blocks`` (which os.stat
    reports negative from 2**63 on); times 512 they are du's bytes."""
    return st_blocks % DU_BLOCKS_WRAP


class Hunger(Protocol):
    """How many idle workers want work; a worker takes one to give away."""

    def take(self) -> bool: ...


class Plan(NamedTuple):
    """What every worker needs to know about one walked (top) root.

    Pickled with every task: a tuple of its values.
    """

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
    #: ``auto`` (the C reader when built, else scandir-rs), ``c``,
    #: ``scandir-rs`` or ``python``.
    engine: str = "auto"
    #: Sum usage per owner (uid) too.
    owner_usage: bool = False
    #: Threads per worker reading directories and stat'ing entries (the C
    #: reader; ``scan-threads``).
    threads: int = 1

    def export_of(self, path: bytes) -> tuple[bytes, int] | None:
        """The innermost root exporting ``path``, and its level below it."""
        return export_of(self.exports, path)

    def holds_root(self, path: bytes) -> bool:
        """``path`` is above a nested root (so it needs a row to hang the
        nested root's rows on, exported or not)."""
        prefix = path + b"/"
        return any(root.startswith(prefix) for root, _ in self.exports[1:])


class Unit(NamedTuple):
    """A directory to walk, with its own inode's numbers already known.

    A named tuple: one is made per directory walked, in the hot loop.
    """

    path: bytes
    #: Order key: the listing positions from the walked root, 4 bytes each.
    key: bytes
    disk: int
    apparent: int
    mtime: float
    #: (dev, ino) of the directories above it, for cycle detection (bind
    #: mounts of an ancestor; symlink loops when following symlinks).
    ancestors: tuple[tuple[int, int], ...] = ()
    #: The inode itself goes through the once-per-inode table (always, when
    #: following symlinks).
    linked: bool = False
    #: Reached through a followed symlink: loses to a direct path.
    via_symlink: bool = False
    #: Identity when listed: the directory is read only if it still has it.
    dev: int = 0
    ino: int = 0
    uid: int = 0
    #: Below the walked root.
    depth: int = 0


#: One directory with a row (exported, holding a nested root, or the top
#: of a unit) and what it counted itself, its subdirectories with rows
#: excluded: (id, parent id, depth below the walked root, path, exporting
#: root, level below it, disk, apparent, files, dirs, mtime).  The store
#: sums the subtrees when the walk is complete.
Row = tuple[
    int, int | None, int, bytes, bytes | None, int | None,
    int, int, int, int, float,
]
#: An inode that may be met twice: (row id, dev, ino, order key, disk,
#: apparent, uid); the store counts it once, where du meets it first.
Link = tuple[int, int, int, bytes, int, int, int]


def _histogram() -> list[int]:
    """An empty file-size histogram: one count per bucket, plus +Inf."""
    return [0] * (len(SIZE_BUCKETS) + 1)


class DirRead:
    """One directory read alone (watch mode's re-reads): its own sums,
    links excluded, and its subdirectories, none of them walked."""

    __slots__ = (
        "apparent", "children", "dirs", "disk", "entries", "errors", "files",
        "histogram", "histogram_sum", "links", "mtime", "owners", "path",
        "unreadable",
    )

    def __init__(
        self,
        path: bytes,
        *,
        disk: int = 0,
        apparent: int = 0,
        files: int = 0,
        dirs: int = 0,
        mtime: float = 0.0,
        entries: int = 0,
        unreadable: int = 0,
        children: list[Unit] | None = None,
        links: list[tuple[int, int, bytes, int, int, int]] | None = None,
        owners: dict[int, list[int]] | None = None,
        errors: list[tuple[bytes, str]] | None = None,
        histogram: list[int] | None = None,
        histogram_sum: int = 0,
    ) -> None:
        self.path = path
        self.disk = disk
        self.apparent = apparent
        self.files = files
        self.dirs = dirs
        self.mtime = mtime
        self.entries = entries
        self.unreadable = unreadable
        self.children: list[Unit] = [] if children is None else children
        #: (dev, ino, key, disk, apparent, uid) of inodes that may be seen
        #: twice.
        self.links: list[tuple[int, int, bytes, int, int, int]] = (
            [] if links is None else links
        )
        self.owners: dict[int, list[int]] = {} if owners is None else owners
        self.errors: list[tuple[bytes, str]] = [] if errors is None else errors
        self.histogram = _histogram() if histogram is None else histogram
        self.histogram_sum = histogram_sum

    def __repr__(self) -> str:
        return f"DirRead({self.path!r}, disk={self.disk}, entries={self.entries})"


class UnitResult:
    """One message of a worker about its unit.

    A unit walks a whole subtree; every ``ROWS_PER_MESSAGE`` finished rows
    and links it sends them with ``final`` false, then one last message
    with the rest and the directories it handed back.  The
    counters cover what was walked since the previous message.
    """

    __slots__ = (
        "children", "entries", "error_room", "errors", "final", "histogram",
        "histogram_sum", "links", "owners", "path", "python_dirs", "rows",
        "unreadable",
    )

    def __init__(
        self, path: bytes, *, final: bool = False, error_room: int = MAX_ERRORS
    ) -> None:
        self.path = path
        self.final = final
        self.rows: list[Row] = []
        self.links: list[Link] = []
        #: Directories handed back to idle workers, each with the id of the
        #: row it hangs on.
        self.children: list[tuple[Unit, int]] = []
        self.entries = 0
        self.unreadable = 0
        #: Directories read by the exact Python loop, not a fast engine.
        self.python_dirs = 0
        #: uid -> [disk, apparent] of what this unit counted itself (the
        #: links are counted once, later, by the parent).
        self.owners: dict[int, list[int]] = {}
        self.errors: list[tuple[bytes, str]] = []
        #: How many more unreadable paths this unit may still name (its
        #: earlier messages named the others).
        self.error_room = error_room
        self.histogram = _histogram()
        self.histogram_sum = 0

    def __repr__(self) -> str:
        return (
            f"UnitResult({self.path!r}, final={self.final}, "
            f"rows={len(self.rows)}, entries={self.entries})"
        )

    def own(self, uid: int, disk: int, apparent: int) -> None:
        sums = self.owners.setdefault(uid, [0, 0])
        sums[0] += disk
        sums[1] += apparent

    def error(self, path: bytes, err: OSError) -> None:
        self.unreadable += 1
        if len(self.errors) < self.error_room:
            self.errors.append((path, err.strerror or type(err).__name__))
