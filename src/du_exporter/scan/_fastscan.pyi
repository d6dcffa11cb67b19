from collections.abc import Callable
from typing import TypeAlias

#: What one directory read returns: entries, files, blocks, apparent,
#: newest mtime, histogram sum, histogram, subdirectories, links,
#: per-entry errors, the directory's own errno, per-owner sums.
DirResult: TypeAlias = tuple[
    int,
    int,
    int,
    int,
    float,
    int,
    list[int],
    list[tuple[bytes, int, int, int, int, int, float, int]],
    list[tuple[int, int, int, int, int, int]],
    list[tuple[bytes, int]],
    int,
    list[tuple[int, int, int, int]],
]

def scan_dir(
    path: bytes,
    sort_big: bool,
    owners: bool,
    dev: int,
    ino: int,
    nofollow: bool,
    one_fs: bool,
    root_dev: int,
    skip: tuple[bytes, ...] = (),
    /,
) -> DirResult: ...

def scan_dirs(
    dirs: list[tuple[bytes, bool, int, int, bool]]
    | list[tuple[bytes, bool, int, int, bool, tuple[bytes, ...]]],
    owners: bool,
    one_fs: bool,
    root_dev: int,
    threads: int,
    slow_ns: int,
    /,
) -> list[DirResult]: ...

#: A directory handed back (the fields of ``model.Unit``), with the row id
#: it hangs on.
Handed: TypeAlias = tuple[
    tuple[
        bytes, bytes, int, int, float, tuple[tuple[int, int], ...], bool,
        bool, int, int, int, int,
    ],
    int,
]

#: What one ``Walk.step`` gives: rows, links, hand-backs, errors as
#: (path, errno; negative: a directory cycle), unreadable, entries,
#: histogram, histogram sum, per-owner (uid, disk, apparent), done.
StepResult: TypeAlias = tuple[
    list[tuple[int, int | None, int, bytes, bytes | None, int | None, int, int,
               int, int, float]],
    list[tuple[int, int, int, bytes, int, int, int]],
    list[Handed],
    list[tuple[bytes, int]],
    int,
    int,
    list[int],
    int,
    list[tuple[int, int, int]],
    bool,
]

class Walk:
    def __init__(
        self,
        unit: tuple[object, ...],
        base: int,
        parent: int | None,
        export: tuple[bytes, int] | None,
        top: bytes,
        level: int,
        owners: bool,
        one_fs: bool,
        root_dev: int,
        threads: int,
        batch: int,
        slow_ns: int,
        sorts: Callable[[int], bool],
        skip: tuple[bytes, ...] | Callable[[bytes], tuple[bytes, ...]] = (),
        place: Callable[[bytes], tuple[tuple[bytes, int] | None, bool]]
        | None = None,
    ) -> None: ...
    def step(
        self, take: Callable[[], bool] | None, room: int, limit: int, /
    ) -> StepResult: ...
