"""The fanotify reader: real marks on private filesystems."""

from __future__ import annotations

import os

from pathlib import Path

import pytest

from du_exporter.errors import WatchUnavailableError
from du_exporter.watch.fanotify import FanotifyGroup, parse
from watchfs import private_fs


class Collected:
    def __init__(self) -> None:
        self.dirs: set[bytes] = set()
        self.events = 0
        self.overflows = 0

    def on_dirs(self, dirs: dict[bytes, int]) -> None:
        self.dirs |= set(dirs)
        self.events += sum(dirs.values())

    def on_overflow(self) -> None:
        self.overflows += 1


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_events_name_the_changed_directories(kind: str, tmp_path: Path) -> None:
    """Create, write, rename across parents, delete: every directory an
    entry changed in arrives as its current path."""
    with private_fs(kind, tmp_path) as mnt:
        try:
            got = Collected()
            group = FanotifyGroup(got.on_dirs, got.on_overflow)
        except WatchUnavailableError as e:
            pytest.skip(str(e))
        try:
            group.mark(os.fsencode(mnt))
            (mnt / "a" / "b").mkdir(parents=True)
            (mnt / "c").mkdir()
            (mnt / "a" / "b" / "f").write_bytes(b"x" * 5000)
            (mnt / "a" / "b" / "f").rename(mnt / "c" / "g")
            (mnt / "c" / "g").unlink()
            group.drain()
        finally:
            group.close()
    root = os.fsencode(mnt)
    assert got.dirs >= {root, root + b"/a", root + b"/a/b", root + b"/c"}
    assert got.events >= 4  # the kernel merges identical events
    assert got.overflows == 0


def test_events_outside_the_marked_filesystem_are_not_seen(tmp_path: Path) -> None:
    with private_fs("tmpfs", tmp_path) as mnt:
        try:
            got = Collected()
            group = FanotifyGroup(got.on_dirs, got.on_overflow)
        except WatchUnavailableError as e:
            pytest.skip(str(e))
        try:
            group.mark(os.fsencode(mnt))
            (tmp_path / "elsewhere").write_bytes(b"x")
            group.drain()
        finally:
            group.close()
    assert got.dirs == set()


def test_a_truncated_buffer_parses_to_what_is_whole() -> None:
    assert parse(b"") == []
    assert parse(b"\x30\x00\x00\x00") == []
