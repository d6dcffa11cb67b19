"""Many directories in flight (``scan-threads``): the numbers stay du's."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

from pathlib import Path

import pytest

import fusefs

from du_exporter.scan.walker import engine_available
from helpers import Scanner, big_dir_with_link, du, write
from test_hostile import NO_DAC
from test_scan import rich_tree, sizes


def linked_farm(base: Path) -> Path:
    """Sibling directories read in one batch, hard links across them, and
    directories big enough that several threads stat their entries."""
    rich_tree(base / "rich")
    for i in range(12):
        write(base / "farm" / f"s{i:02d}" / "own", 1000 * (i + 1))
    write(base / "farm" / "s05" / "shared", 70_000)
    for i in (0, 3, 11):
        os.link(base / "farm" / "s05" / "shared", base / "farm" / f"s{i:02d}" / "again")
    for i in range(700):
        write(base / "wide" / f"w{i:03d}", i * 37)
    os.link(base / "farm" / "s05" / "shared", base / "wide" / "shared")
    os.link(base / "wide" / "w123", base / "farm" / "s07" / "w123")
    for i in range(20):
        (base / "wide" / f"sub{i:02d}").mkdir()
        write(base / "wide" / f"sub{i:02d}" / "f", 4096 * i)
    return base


class TestThreadsEqualDu:
    """Any thread count gives du's numbers on every engine."""

    @pytest.mark.parametrize("threads", [1, 3, 16])
    @pytest.mark.parametrize("level", [0, 1, 3])
    def test_linked_farm(self, scanner: Scanner, tmp_path: Path, threads: int, level: int) -> None:
        root = linked_farm(tmp_path / "t")
        for mode, flag in (("disk", "-B1"), ("apparent", "-b")):
            rows = scanner.scan(analyzed_path=str(root), dir_level=level,
                                size_mode=mode, scan_threads=threads)
            assert du(root, flag, f"--max-depth={level}") == sizes(rows, mode)

    @pytest.mark.parametrize("threads", [2, 16])
    def test_big_directory_inode_order(self, scanner: Scanner, tmp_path: Path, threads: int) -> None:
        """12,000 entries (sorted by inode like fts) stat'ed by many
        threads; a hard link into it from a sibling read in the same batch."""
        root = big_dir_with_link(tmp_path / "t")
        rows = scanner.scan(analyzed_path=str(root), dir_level=0, scan_threads=threads)
        assert du(root, "-B1", "--max-depth=0") == sizes(rows, "disk")


@pytest.mark.skipif(fusefs.unavailable() is not None,
                    reason=f"no FUSE: {fusefs.unavailable()}")
@pytest.mark.parametrize("level", [0, 2])
def test_latency_bound_storage(scanner: Scanner, tmp_path: Path, level: int) -> None:
    """On slow storage (FUSE, 0.2 ms per call) the batches start all their
    threads; still du's numbers, du run on the same mount."""
    src = linked_farm(tmp_path / "src")
    with fusefs.mounted(src, tmp_path / "mnt", delay_ms=0.2) as mnt:
        rows = scanner.scan(analyzed_path=str(mnt), dir_level=level, scan_threads=16)
        expected = du(mnt, "-B1", f"--max-depth={level}")
    assert expected == sizes(rows, "disk")


# Runs without CAP_DAC_* (root reads mode-000 directories otherwise): each
# directory alone by scan_dir, then all of them in one scan_dirs call.
_COMPARE = """
import json, sys
from du_exporter.scan import _fastscan
dirs = [(p.encode(), False, dev, ino, True) for p, dev, ino in json.loads(sys.argv[1])]
alone = [_fastscan.scan_dir(p, s, True, dev, ino, n, False, 0) for p, s, dev, ino, n in dirs]
batches = {t: _fastscan.scan_dirs(dirs, True, False, 0, t, 0) for t in (1, 2, 8)}
def plain(r):
    return json.loads(json.dumps(r, default=lambda b: b.decode()))
print(json.dumps({"alone": plain(alone), "batches": {t: plain(b) for t, b in batches.items()}}))
"""


@pytest.mark.skipif(not engine_available("c"), reason="the C reader is not built")
def test_batch_reports_like_one_at_a_time(tmp_path: Path) -> None:
    """An unreadable directory, one whose entries cannot be stat'ed, a
    vanished one, one swapped for another directory and one for a symlink
    after they were listed: one batch reports each as scan_dir does."""
    root = tmp_path / "t"
    for i in range(150):
        write(root / "ok" / f"f{i}", i * 100)
    (root / "ok" / "sub").mkdir()
    os.link(root / "ok" / "f7", root / "ok" / "f7-again")
    write(root / "locked" / "f", 1000)
    write(root / "nostat" / "f", 2000)
    write(root / "gone" / "f", 3000)
    write(root / "swapped" / "f", 4000)
    write(root / "other" / "g", 5000)
    write(root / "tolink" / "f", 6000)
    names = ["ok", "locked", "nostat", "gone", "swapped", "tolink", "ok"]
    listed = {n: os.lstat(root / n) for n in names}
    (root / "gone" / "f").unlink()
    (root / "gone").rmdir()
    (root / "swapped").rename(root / "swapped-old")
    (root / "other").rename(root / "swapped")
    (root / "tolink").rename(root / "tolink-old")
    (root / "tolink").symlink_to("ok")
    (root / "locked").chmod(0)
    (root / "nostat").chmod(0o400)
    arg = json.dumps([(str(root / n), listed[n].st_dev, listed[n].st_ino) for n in names])
    try:
        done = subprocess.run([*NO_DAC, sys.executable, "-c", _COMPARE, arg],
                              capture_output=True, text=True, check=False)
    finally:
        (root / "locked").chmod(0o700)
        (root / "nostat").chmod(0o700)
    if done.returncode != 0 and "setpriv" in done.stderr:
        pytest.skip(f"cannot drop CAP_DAC_*: {done.stderr}")
    assert 0 == done.returncode, done.stderr
    out = json.loads(done.stdout)
    alone = out["alone"]
    for threads, batch in out["batches"].items():
        assert alone == batch, f"threads={threads}"
    dir_errno = {n: r[10] for n, r in zip(names, alone, strict=True)}
    assert dir_errno == {"ok": 0, "locked": errno.EACCES, "nostat": 0,
                         "gone": errno.ENOENT, "swapped": errno.ENOENT,
                         "tolink": errno.ENOENT}
    assert [["f", errno.EACCES]] == alone[2][9]  # nostat: listed, not stat'ed
    assert 152 == alone[0][0]  # ok: 151 files and a subdirectory
