"""Private filesystems for watch tests: a mark on the root filesystem
would see every write on the machine, so each test mounts its own."""

from __future__ import annotations

import os
import subprocess

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _run(*cmd: str) -> bool:
    return subprocess.run(list(cmd), capture_output=True, check=False).returncode == 0


@contextmanager
def private_fs(kind: str, where: Path) -> Iterator[Path]:
    """A fresh ``tmpfs`` or loop-mounted ``ext4`` at ``where``/mnt."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    mnt = where / "mnt"
    mnt.mkdir()
    image = Path("/dev/shm") / f"du-exporter-watch-{os.getpid()}-{id(mnt)}.img"
    if kind == "tmpfs":
        ok = _run("mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mnt))
    else:
        with image.open("wb") as f:
            f.truncate(256 << 20)
        ok = _run("mkfs.ext4", "-q", "-F", str(image)) and _run(
            "mount", "-o", "loop", str(image), str(mnt)
        )
    if not ok:
        image.unlink(missing_ok=True)
        pytest.skip(f"cannot mount a private {kind} here")
    try:
        yield mnt
    finally:
        _run("umount", "-l", str(mnt))
        image.unlink(missing_ok=True)
