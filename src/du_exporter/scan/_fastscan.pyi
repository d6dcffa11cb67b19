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
