"""The scandir-rs engine: one directory's entries stat'ed by scandir-rs.

The same per-directory contract as the C reader (see ``_fastscan.pyi``),
for installations without it.  scandir-rs reaches everything by path: it
resolves even a ``/proc/self/fd/N`` root to its path, opens that, and
stats every entry by path following symlinks.  So it is used only as a
source of stat fields, checked against the directory this module opened:
the names, their order and their inode numbers come from this module's
own listing of that descriptor, and an entry's fields are taken from
scandir-rs only when its device and inode are the listed ones (so they
describe the listed inode, whatever path scandir-rs took to it).  Every
other entry -- a symlink (scandir-rs reports its target), a name that
is not UTF-8 (scandir-rs reports an error), a mount point, an entry
scandir-rs missed or that changed in between -- is ``lstat``'ed here,
relative to the descriptor.  A directory that cannot be opened or read
is left to the walker's exact Python path (``None``), which reports it;
so is one that is not the directory listed (a symlink in its place, or
another device and inode: the walker reports it as vanished).
"""

from __future__ import annotations

import os

from bisect import bisect_left
from operator import itemgetter
from stat import S_ISDIR, S_ISREG
from typing import Any

from scandir_rs import ReturnType, Scandir

from du_exporter.scan.fs import fts_order, open_listed
from du_exporter.scan.model import SIZE_BUCKETS, du_blocks


def scan_dir(
    path: bytes,
    sort_big: bool,
    owners: bool,
    dev: int,
    ino: int,
    nofollow: bool,
    one_fs: bool,
    root_dev: int,
    /,
) -> tuple[Any, ...] | None:
    """``_fastscan.scan_dir`` by scandir-rs; ``None``: read it exactly."""
    try:
        fd = open_listed(path, dev, ino, nofollow=nofollow)
    except OSError:
        return None
    try:
        return _scan_fd(fd, dev, sort_big, owners, root_dev if one_fs else None)
    finally:
        os.close(fd)


def _scan_fd(
    fd: int, dir_dev: int, sort_big: bool, owners: bool, only_dev: int | None
) -> tuple[Any, ...] | None:
    try:
        with os.scandir(fd) as it:
            listing = [(os.fsencode(e.name), e.inode()) for e in it]
    except OSError:
        return None
    if sort_big:
        listing = fts_order(listing, itemgetter(1))
    # Ext entries (DirEntryExt, which the stubs name but the module
    # does not export).
    try:
        ext: list[Any] = Scandir(
            f"/proc/self/fd/{fd}", max_depth=1, return_type=ReturnType.Ext
        ).collect()[0]
    except Exception:  # noqa: BLE001 - scandir-rs raises a bare Exception too
        # Its path to the descriptor vanished (renamed, swapped for a
        # symlink): leave the directory to the exact Python path.
        return None
    stats = {e.path: e for e in ext
             if not e.is_symlink and e.st_dev == dir_dev}
    count = files = blocks = apparent = hsum = 0
    mtime = 0.0
    hist = [0] * (len(SIZE_BUCKETS) + 1)
    subdirs: list[tuple[bytes, int, int, int, int, int, float, int]] = []
    links: list[tuple[int, int, int, int, int, int]] = []
    errors: list[tuple[bytes, int]] = []
    per_owner: dict[int, list[int]] = {}
    for index, (name, d_ino) in enumerate(listing):
        e = stats.get(os.fsdecode(name))
        if e is not None and e.st_ino == d_ino:
            mode, nlink, ino, dev = e.st_mode, e.st_nlink, e.st_ino, e.st_dev
            nblocks, size, m, uid = e.st_blocks, e.st_size, e.mtime, e.st_uid
        else:
            try:
                st = os.lstat(name, dir_fd=fd)
            except OSError as err:
                errors.append((name, err.errno or 0))
                continue
            mode, nlink, ino, dev = st.st_mode, st.st_nlink, st.st_ino, st.st_dev
            nblocks, size, m, uid = st.st_blocks, st.st_size, st.st_mtime, st.st_uid
        count += 1
        nblocks = du_blocks(nblocks)
        if S_ISDIR(mode):
            subdirs.append((name, index, dev, ino, nblocks, size, m, uid))
            continue
        if only_dev is not None and dev != only_dev:
            continue  # like du -x: any entry of another filesystem
        files += 1
        mtime = max(mtime, m)
        if S_ISREG(mode):
            hist[bisect_left(SIZE_BUCKETS, size)] += 1
            hsum += size
        if nlink > 1:
            links.append((dev, ino, index, nblocks, size, uid))
            continue
        blocks += nblocks
        apparent += size
        if owners:
            sums = per_owner.setdefault(uid, [0, 0, 0])
            sums[0] += nblocks
            sums[1] += size
            sums[2] += 1
    owner_list = [(uid, b, a, n) for uid, (b, a, n) in per_owner.items()]
    return (count, files, blocks, apparent, mtime, hsum, hist, subdirs,
            links, errors, 0, owner_list)
