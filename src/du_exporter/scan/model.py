"""What a walk is made of: the plan, units, their results, size buckets.

Shared by the parent and the worker processes, so it imports nothing
but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from du_exporter.paths import depth_under


#: Upper bounds (bytes, apparent size) of the file-size histogram.
SIZE_BUCKETS: tuple[int, ...] = tuple(4**k * 1024 for k in range(13))
#: How many unreadable paths one unit reports by name (the rest counted).
MAX_ERRORS = 20
#: A unit returns early once it holds this many possible duplicates.
MAX_LINKS = 50_000
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
    #: ``auto`` (the C reader when built, else scandir-rs), ``c``,
    #: ``scandir-rs`` or ``python``.
    engine: str = "auto"
    #: Sum usage per owner (uid) too.
    owner_usage: bool = False
    #: Threads per worker reading directories and stat'ing entries (the C
    #: reader; ``scan-threads``).
    threads: int = 1

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




@dataclass(frozen=True)
class Unit:
    """A directory to walk, with its own inode's numbers already known."""

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

