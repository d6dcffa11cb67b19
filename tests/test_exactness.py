"""Where trees get hostile or huge: every engine still equals GNU du.

Real mounts (tmpfs, bind mounts), real racing renames, real SQLite.
"""

from __future__ import annotations

import os
import threading
import time

from collections.abc import Mapping
from pathlib import Path

import pytest

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import fusefs

from du_exporter.expose.exposition import Exposition
from du_exporter.store.reader import Reader
from du_exporter.store.rows import DirRow
from helpers import Scanner, du, mounted, write


def sizes(rows: Mapping[bytes, DirRow], attr: str) -> dict[bytes, int]:
    return {p: int(getattr(r, attr)) for p, r in rows.items()}


class TestBindMountCycle:
    """``mount --bind a a/b``: du skips the cycle (FTS_DC) and counts a once."""

    def test_cycle_counted_once(self, scanner: Scanner, tmp_path: Path) -> None:
        root = tmp_path / "t"
        a = root / "a"
        write(a / "f", 5_000)
        (a / "b").mkdir()
        write(root / "c" / "g", 3_000)
        with mounted("--bind", a, a / "b"):
            for mode, flag in (("disk", "-B1"), ("apparent", "-b")):
                rows = scanner.scan(analyzed_path=str(root), dir_level=4,
                                    size_mode=mode)
                assert du(root, flag, "--max-depth=4") == sizes(rows, mode)
                assert os.fsencode(a / "b") not in rows


class TestOneFileSystemFiles:
    """du -x leaves out any entry of another filesystem, files too."""

    def test_file_bind_mounted_from_tmpfs(self, scanner: Scanner, tmp_path: Path) -> None:
        root = tmp_path / "t"
        write(root / "a" / "own", 7_000)
        write(root / "a" / "mnt-file", 0)
        mnt = tmp_path / "tmpfs"
        mnt.mkdir()
        with mounted("-t", "tmpfs", "tmpfs", mnt):
            write(mnt / "big", 200_000)
            with mounted("--bind", mnt / "big", root / "a" / "mnt-file"):
                for mode, flag in (("disk", "-xB1"), ("apparent", "-xb")):
                    rows = scanner.scan(analyzed_path=str(root), dir_level=1,
                                        size_mode=mode, one_file_system=True)
                    assert du(root, flag, "--max-depth=1") == sizes(rows, mode)
                rows = scanner.scan(analyzed_path=str(root), dir_level=1)
                assert du(root, "-B1", "--max-depth=1") == sizes(rows, "disk")


class TestHugeSizes:
    """Sums cover the unsigned 64-bit range and saturate like du's."""

    def test_sparse_files_of_2_to_the_62_and_63(self, scanner: Scanner, tmp_path: Path) -> None:
        mnt = tmp_path / "tmpfs"
        mnt.mkdir()
        with mounted("-t", "tmpfs", "tmpfs", mnt):
            root = mnt / "t"
            (root / "two").mkdir(parents=True)
            (root / "one").mkdir()
            (root / "linked").mkdir()
            for name in ("a", "b"):
                os.truncate(write(root / "two" / name, 0), 2**62)
            os.truncate(write(root / "one" / "c", 0), 2**63 - 1)
            os.truncate(write(root / "linked" / "d", 0), 2**63 - 1)
            os.link(root / "linked" / "d", root / "linked" / "d2")
            for mode, flag in (("apparent", "-b"), ("disk", "-B1")):
                for level in (0, 1):
                    rows = scanner.scan(analyzed_path=str(root), dir_level=level,
                                        size_mode=mode)
                    expected = du(root, flag, f"--max-depth={level}")
                    assert expected == sizes(rows, mode)
            apparent = du(root, "-b")
            assert apparent[os.fsencode(root / "two")] > 2**63  # not wrapped
            assert apparent[os.fsencode(root)] == 2**64 - 1  # saturated
            assert exported(scanner, root) == {
                p: float(v) for p, v in apparent.items()
            }


def exported(scanner: Scanner, root: Path) -> dict[bytes, float]:
    """/metrics' node_disk_usage_bytes of an apparent-size scan at level 1."""
    values = {"analyzed_path": str(root), "dir_level": 1, "size_mode": "apparent"}
    scanner.scan(**values)
    cfg = scanner.config(**values)
    exp = Exposition(Reader(cfg.db_path), lambda: cfg, CollectorRegistry())
    body, _, _ = exp.render("", False)
    return {
        os.fsencode(s.labels["path"]): s.value
        for f in text_string_to_metric_families(b"".join(body.pieces).decode())
        for s in f.samples
        if s.name == "node_disk_usage_bytes"
    }


def _swap(victim: Path, parked: Path, outside: Path, stop: threading.Event) -> int:
    """Swap ``victim`` for a symlink to ``outside`` and back until ``stop``.

    Each state lasts about a millisecond: long enough for a walk to list
    ``victim`` as a directory and then reach it as a symlink.
    """
    swaps = 0
    while not stop.is_set():
        victim.rename(parked)
        victim.symlink_to(outside)
        swaps += 1
        time.sleep(0.001)
        victim.unlink()
        parked.rename(victim)
        time.sleep(0.001)
    return swaps


class TestSymlinkSwap:
    """A directory swapped for a symlink mid-scan is never followed."""

    def test_racing_swaps_never_leak_outside(self, scanner: Scanner, tmp_path: Path) -> None:
        root = tmp_path / "t"
        victim = root / "v"
        for i in range(30):  # many queued directories, read after listing
            for j in range(10):
                write(root / f"s{i:02d}" / f"f{j}", 100)
            write(victim / f"sub{i:02d}" / "f", 100)
            write(victim / f"sub{i:02d}" / "deeper" / "f", 100)
        outside = tmp_path / "secret"
        for i in range(30):  # the same names, each holding 1 TiB (sparse)
            os.truncate(write(outside / f"sub{i:02d}" / "SECRET", 0), 1 << 40)
            os.truncate(write(outside / f"sub{i:02d}" / "deeper" / "SECRET", 0),
                        1 << 40)
            (outside / f"sub{i:02d}" / "deeper" / "SECRET-DIR").mkdir()
        os.truncate(write(outside / "SECRET", 0), 1 << 40)
        (outside / "SECRET-DIR").mkdir()
        bound = du(root, "-sb")[os.fsencode(root)] + 4096  # the symlink's size
        stop = threading.Event()
        swapper = threading.Thread(
            target=_swap, args=(victim, tmp_path / "parked", outside, stop)
        )
        swapper.start()
        try:
            for _ in range(60):
                rows = scanner.scan(analyzed_path=str(root), dir_level=4,
                                    size_mode="apparent")
                assert rows[os.fsencode(root)].apparent <= bound
                assert not [p for p in rows if b"SECRET" in p]
        finally:
            stop.set()
            swapper.join()
        rows = scanner.scan(analyzed_path=str(root), dir_level=4, size_mode="apparent")
        assert du(root, "-b", "--max-depth=4") == sizes(rows, "apparent")


@pytest.fixture(name="fuse_src")
def _fuse_src(tmp_path: Path) -> Path:
    """A tree with hard links across directories, served through FUSE."""
    if fusefs.unavailable():
        pytest.skip(str(fusefs.unavailable()))
    src = tmp_path / "src"
    write(src / "a" / "f", 5_000)
    write(src / "d" / "big", 100)
    write(src / "d" / "e" / "g", 10)
    os.link(src / "a" / "f", src / "d" / "e" / "f-again")
    os.link(src / "d" / "big", src / "a" / "big-again")
    return src


class TestFuse:
    """Values only a FUSE server reports: huge inodes and st_blocks."""

    def test_inodes_above_2_63_and_huge_blocks(
        self, scanner: Scanner, fuse_src: Path, tmp_path: Path
    ) -> None:
        huge = {"d/big": (2**62, 2**63 - 1), "d/e/g": (2**64 - 1, 1)}
        with fusefs.mounted(fuse_src, tmp_path / "mnt", inode_offset=2**63,
                            huge=huge) as m:
            for mode, flag in (("disk", "-B1"), ("apparent", "-b")):
                rows = scanner.scan(analyzed_path=str(m), dir_level=2,
                                    size_mode=mode)
                assert du(m, flag, "--max-depth=2") == sizes(rows, mode)

    def test_directory_turned_symlink_after_listing(
        self, scanner: Scanner, fuse_src: Path, tmp_path: Path
    ) -> None:
        """The fixture turns ``d`` into a symlink once its parent is read,
        so every walk (and du) sees the symlink already in its lstat: a
        guard, deterministic; the racing test above reaches the window
        between lstat and open."""
        outside = tmp_path / "secret"
        os.truncate(write(outside / "SECRET", 0), 1 << 40)
        (outside / "SECRET-DIR").mkdir()
        swap = {"d": str(outside), "d/e": str(outside)}
        with fusefs.mounted(fuse_src, tmp_path / "mnt",
                            swap_after_listing=swap) as m:
            rows = scanner.scan(analyzed_path=str(m), dir_level=3,
                                size_mode="apparent")
            assert not [p for p in rows if b"SECRET" in p]
            assert du(m, "-b", "--max-depth=3") == sizes(rows, "apparent")
