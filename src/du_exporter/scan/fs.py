"""Filesystem helpers of the walk: opening listed directories, GNU fts's order."""

from __future__ import annotations

import errno
import os

from collections.abc import Callable
from typing import TypeVar


#: GNU fts sorts a directory's entries by inode above this many entries...
FTS_INODE_SORT_THRESHOLD = 10_000
#: ...except on these filesystems, where it keeps the listing order.
NO_INODE_SORT = frozenset({"nfs", "nfs4", "tmpfs", "cifs", "smb3"})
#: Longer directory paths are opened piece by piece (PATH_MAX is 4096).
LONG_PATH = 3072
_FTS_BATCH = 100_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def open_listed(path: bytes, dev: int, ino: int, *, nofollow: bool) -> int:
    """A descriptor of the directory listed as ``path`` with ``(dev, ino)``.

    Like GNU fts: the directory opened must be the one listed, so one
    swapped for a symlink (``nofollow``: the last component is never
    followed) or for another directory since is never read; it is
    reported as vanished (``ENOENT``).  A directory cannot be hard-linked,
    so a matching identity proves that the components before it led back
    into the tree.
    """
    try:
        fd = open_dir(path, nofollow=nofollow)
    except OSError as e:
        if nofollow and e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _vanished(path) from None
        raise
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (dev, ino):
        os.close(fd)
        raise _vanished(path)
    return fd


def _vanished(path: bytes) -> OSError:
    return OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)


def open_dir(path: bytes, *, nofollow: bool = False) -> int:
    """A descriptor of the directory ``path``, however long the path is."""
    last = _DIR_FLAGS | os.O_NOFOLLOW if nofollow else _DIR_FLAGS
    if len(path) < LONG_PATH:
        return os.open(path, last)
    fd = os.open(b"/" if path.startswith(b"/") else b".", _DIR_FLAGS)
    try:
        rest = path.lstrip(b"/")
        while rest:
            cut = rest.rfind(b"/", 0, LONG_PATH) if len(rest) >= LONG_PATH else -1
            part, rest = (rest[:cut], rest[cut + 1:]) if cut > 0 else (rest, b"")
            new = os.open(part, last if not rest else _DIR_FLAGS, dir_fd=fd)
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
        if len(batch) > FTS_INODE_SORT_THRESHOLD:
            batch.sort(key=inode)
        out.extend(batch)
    return out



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

