"""The FUSE fixture (tests/fusefs.py) does what it promises, on a real mount.

Each option is checked through the kernel, as a scanner would see it:
os.lstat, os.scandir, os.open, stat(1) and GNU du.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import fusefs


REASON = fusefs.unavailable()
pytestmark = pytest.mark.skipif(
    REASON is not None, reason=f"no FUSE here: {REASON}"
)


def du(path: Path, *args: str) -> dict[str, int]:
    """GNU du -B1 as {path relative to ``path``: bytes}."""
    out = subprocess.run(
        ["du", "-B1", "-a", *args, str(path)],
        capture_output=True, check=True,
    ).stdout.decode(errors="surrogateescape")
    sizes = {}
    for line in out.splitlines():
        size, _, name = line.partition("\t")
        sizes[os.path.relpath(name, path)] = int(size)
    return sizes


def stat_c(fmt: str, path: Path) -> str:
    return subprocess.run(
        ["stat", "-c", fmt, str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


@pytest.fixture
def src(tmp_path):
    """A small tree: hard link, symlink, nested dirs, a non-UTF-8 name."""
    root = tmp_path / "src"
    (root / "d" / "e").mkdir(parents=True)
    (root / "a").write_bytes(b"a" * 5000)
    os.link(root / "a", root / "hardlink")
    (root / "d" / "f").write_bytes(b"f" * 100)
    (root / "d" / "e" / "g").write_bytes(b"")
    (root / "link").symlink_to("d/f")
    with open(os.fsencode(root) + b"/not-utf8-\xff", "wb") as f:
        f.write(b"x" * 10)
    return root


@pytest.fixture
def mnt(tmp_path):
    return tmp_path / "mnt"


def test_plain_passthrough_matches_src(src, mnt):
    with fusefs.mounted(src, mnt) as m:
        assert du(m) == du(src)
        assert du(m, "--apparent-size") == du(src, "--apparent-size")
        assert (m / "d" / "f").read_bytes() == b"f" * 100
        assert os.readlink(m / "link") == "d/f"
        with pytest.raises(OSError, match="Read-only") as err:
            (m / "a").write_bytes(b"")
        assert err.value.errno == errno.EROFS


def test_mounted_unmounts_and_reaps_on_failure(src, mnt):
    def failing_test() -> None:
        with fusefs.mounted(src, mnt) as m:
            assert fusefs.is_mounted(m)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_test()
    assert not fusefs.is_mounted(mnt)
    assert os.listdir(mnt) == []
    # No server left: neither running nor a zombie child of ours.
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        assert os.fsencode(mnt) not in cmdline
        assert not (fields[0] == "Z" and int(fields[1]) == os.getpid())


def test_a_server_that_cannot_start_is_reported_at_once(tmp_path, mnt):
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="not a directory"), fusefs.mounted(tmp_path / "nothing", mnt):
        pass
    assert time.monotonic() - started < 10  # no waiting out the timeout
    assert not fusefs.is_mounted(mnt)


def test_inode_offset_puts_every_inode_above_2_63(src, mnt):
    offset = 2**63
    with fusefs.mounted(src, mnt, inode_offset=offset) as m:
        for rel in [".", "a", "hardlink", "link", "d", "d/e", "d/e/g"]:
            ino = os.lstat(m / rel).st_ino
            assert ino == os.lstat(src / rel).st_ino + offset
            assert ino >= 2**63
            assert stat_c("%i", m / rel) == str(ino)
        # readdir reports what getattr reports
        for dirpath in [m, m / "d", m / "d" / "e"]:
            with os.scandir(dirpath) as it:
                for entry in it:
                    assert entry.inode() == os.lstat(entry.path).st_ino
        # hard links share one inode, so du counts the data once
        assert os.lstat(m / "a").st_ino == os.lstat(m / "hardlink").st_ino
        assert du(m) == du(src)


def test_huge_sizes_reach_stat_and_du(src, mnt):
    huge = {
        "d/f": (2**62, 2**63 - 1),  # the largest st_size the kernel takes
        "d/e/g": (2**50, 2**59),  # 2**59 bytes allocated: du -B1 exact
        "a": (1, 1),  # per path: its hard link stays as it is
    }
    with fusefs.mounted(src, mnt, huge=huge) as m:
        st = os.lstat(m / "d" / "f")
        assert (st.st_blocks, st.st_size) == (2**62, 2**63 - 1)
        assert stat_c("%b %s", m / "d" / "f") == f"{2**62} {2**63 - 1}"
        assert os.lstat(m / "a").st_size == 1
        assert os.lstat(m / "hardlink").st_size == 5000
        assert du(m, "--apparent-size")["d/f"] == 2**63 - 1
        assert du(m)["d/e/g"] == 2**59
        with (m / "d" / "f").open("rb") as f:
            assert os.fstat(f.fileno()).st_size == 2**63 - 1
            assert f.read(1000) == b"f" * 100  # the data stays real


def test_kernel_limits_of_huge_values(src, mnt):
    huge = {"a": (1, 2**63), "d/f": (2**64 - 1, 1), "d/e/g": (2**63, 1)}
    with fusefs.mounted(src, mnt, huge=huge) as m:
        # st_size is loff_t: the kernel refuses sizes above 2**63-1
        with pytest.raises(OSError, match="Input/output error") as err:
            os.lstat(m / "a")
        assert err.value.errno == errno.EIO
        # st_blocks is u64 in the kernel; userspace's blkcnt_t is signed
        assert os.lstat(m / "d" / "f").st_blocks == -1
        assert stat_c("%b", m / "d" / "f") == str(2**64 - 1)
        assert os.lstat(m / "d" / "e" / "g").st_blocks == -(2**63)
        assert stat_c("%b", m / "d" / "e" / "g") == str(2**63)


def test_delay_is_paid_on_every_stat(src, mnt):
    delay_ms, n = 50, 10
    names = [f"n{i}" for i in range(n)]
    for name in names:
        (src / name).write_bytes(b"")
    with fusefs.mounted(src, mnt, delay_ms=delay_ms) as m:
        started = time.monotonic()
        for name in names:
            os.lstat(m / name)
        elapsed = time.monotonic() - started
        # A lower bound only: each lstat is a LOOKUP and a GETATTR.
        assert elapsed >= n * delay_ms / 1000
        started = time.monotonic()
        for name in names:  # no cache: the second round pays again
            os.lstat(m / name)
        assert time.monotonic() - started >= n * delay_ms / 1000


def test_concurrent_stats_overlap(src, mnt):
    delay_ms, n = 100, 8
    names = [f"n{i}" for i in range(n)]
    for name in names:
        (src / name).write_bytes(b"")
    with fusefs.mounted(src, mnt, delay_ms=delay_ms) as m:
        # First lookups of names in one directory are serialised by the
        # kernel (libfuse < 3.17.1 never grants parallel dirops): warm up.
        for name in names:
            os.lstat(m / name)
        with ThreadPoolExecutor(n) as pool:
            started = time.monotonic()
            list(pool.map(lambda name: os.lstat(m / name), names))
            elapsed = time.monotonic() - started
        # One after another, n stats could not take less than n delays.
        assert elapsed < n * delay_ms / 1000


def test_swap_after_listing_turns_a_directory_into_a_symlink(src, mnt, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"")
    (src / "d" / "e2").mkdir()
    swap = {"d/e": str(outside)}
    nofollow_dir = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY
    refused = "Too many levels of symbolic links|Not a directory"
    with fusefs.mounted(src, mnt, swap_after_listing=swap) as m:
        victim = m / "d" / "e"
        # Before its parent is listed: a directory, whoever asks.
        assert stat.S_ISDIR(os.lstat(victim).st_mode)
        assert os.listdir(m) == os.listdir(src)  # another directory
        assert stat.S_ISDIR(os.lstat(victim).st_mode)
        # The listing itself still shows the directory...
        with os.scandir(m / "d") as it:
            entries = {e.name: e for e in it}
        assert entries["e"].is_dir(follow_symlinks=False)
        assert not entries["e"].is_symlink()
        # ...and from then on it is a symlink out of the tree.
        assert stat.S_ISLNK(os.lstat(victim).st_mode)
        assert os.readlink(victim) == str(outside)
        with pytest.raises(OSError, match=refused) as err:
            os.open(victim, nofollow_dir)
        assert err.value.errno in {errno.ELOOP, errno.ENOTDIR}
        parent = os.open(m / "d", os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(OSError, match=refused) as err:
                os.open("e", nofollow_dir, dir_fd=parent)
            assert err.value.errno in {errno.ELOOP, errno.ENOTDIR}
        finally:
            os.close(parent)
        assert os.listdir(victim) == ["secret"]  # where following leads
        with os.scandir(m / "d") as it:
            assert {e.name: e.is_symlink() for e in it} == {
                "e": True, "e2": False, "f": False,
            }
        assert stat.S_ISDIR(os.lstat(m / "d" / "e2").st_mode)


def test_a_killed_test_run_leaves_no_mount(src, mnt):
    holder = (
        "import sys, time\n"
        f"sys.path.insert(0, {os.path.dirname(fusefs.__file__)!r})\n"
        "import fusefs\n"
        f"with fusefs.mounted({str(src)!r}, {str(mnt)!r}):\n"
        "    print('up', flush=True)\n"
        "    time.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "up\n"
        assert fusefs.is_mounted(mnt)
        proc.kill()  # no unmount from the holder: the server must see to it
    deadline = time.monotonic() + 10
    while fusefs.is_mounted(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not fusefs.is_mounted(mnt)
