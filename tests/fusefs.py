"""A FUSE passthrough filesystem that lies on purpose: the test fixture.

Mounts a read-only view of SRC at MOUNTPOINT, in its own process, in the
foreground, so that tests (issue 13: exactness and security) and benchmarks
(issue 12: latency-bound storage) can put a real kernel filesystem with
chosen faults under the scanner, with no hooks in the scanner itself::

    python tests/fusefs.py SRC MOUNTPOINT [options]   # until unmounted
    fusermount3 -u MOUNTPOINT                          # (or umount): stops it

or, from Python, ``with mounted(src, mnt, delay_ms=1): ...``, which starts
that process, waits until the mount is in /proc/self/mountinfo, and on exit
(also on failure) unmounts it and reaps the process.  Changes made to SRC
directly are seen through the mount at once: the kernel's caches are off.
Tests import it as ``fusefs`` (tests/ is on pytest's pythonpath);
benchmarks put tests/ on sys.path first.  A server started by mounted()
unmounts itself if the thread that started it dies (a killed test run).

Library: mfusepy over libfuse 3 (Debian: fuse3).  mfusepy is the maintained
fork of fusepy (ctypes, no build step) and speaks both libfuse 2 and 3;
fusepy 3.0.1 dates from 2018 and knows only libfuse 2, whose Debian package
``fuse`` has been replaced by ``fuse3`` since bookworm.  libfuse 3 is forced
(FUSE_LIBRARY_NAME=fuse3), since mfusepy prefers libfuse 2 when both exist.
mfusepy passes ``use_ino`` to libfuse 3 through ``struct fuse_config``; the
timeouts are set there too, so they hold whatever the option parser did.

Options (each proved in tests/test_fusefs.py):

``--delay-ms X``
    sleep X ms in every metadata call: getattr (the high-level API's
    lookup is a getattr), readdir, access, readlink, open, opendir.
    entry_timeout, attr_timeout and negative_timeout are 0, so every stat
    reaches this process: an ``os.lstat`` of a name is a LOOKUP then a
    GETATTR, 2 delays (the kernel's STATX is answered ENOSYS, no delay);
    each path component before it costs one more LOOKUP.  The server is
    multithreaded (libfuse's pool, max_threads raised to 64) and
    time.sleep releases the GIL, so concurrent callers overlap, with two
    limits:

    - the first lookup of a name in a directory (no dentry yet) is
      serialised per directory by the kernel, because libfuse before
      3.17.1 never passes FUSE_PARALLEL_DIROPS to it (Debian 12 has
      3.14); later lookups of known names (revalidations) run in
      parallel.  A walk's first pass over a fresh mount is thus less
      concurrent than its later passes.
    - every call runs Python under the GIL (ctypes callback, os.lstat,
      building the stat), which caps the rate however many callers wait.

    Measured with ``--measure`` (0.5 ms delay, ``os.lstat`` of 256
    different files in the mount's root, after one warm-up pass; 2
    cores shared with other work, Linux 6.18, libfuse 3.14, Python 3.11):
    650-760 stats/s from 1 thread, 3,900-5,400 stats/s from 16 threads.
    With no delay: about 5,500-6,200 from 1 thread and 6,400-6,900 from
    16, which is the server's own ceiling: beyond a few threads this
    fixture models a slow server, not a fast parallel one.

``--inode-offset N``
    st_ino = real inode + N (mod 2**64), in getattr and readdir alike, with
    ``use_ino``; hard links keep one inode.  N = 2**63 puts every inode at
    or above 2**63: the kernel carries st_ino as u64 (fuse_attr.ino,
    fuse_dirent.ino) and Python, stat(1) and GNU du see it unchanged.

``--huge PATH=BLOCKS:SIZE`` (repeatable)
    report st_blocks=BLOCKS and st_size=SIZE for the file at PATH (relative
    to SRC; per path, so another hard link keeps the real values; the data
    read stays real).  Limits found on Linux 6.18:

    - st_size is loff_t: the kernel rejects an attribute whose size
      exceeds 2**63-1 (fuse_valid_size), and the stat fails with EIO.
      2**63-1 is the largest size that can be shown.
    - st_blocks is u64 in fuse_attr and in the kernel's stat, and any value
      up to 2**64-1 goes through; but userspace's blkcnt_t is signed, so
      values >= 2**63 come out negative from Python's os.stat (2**64-1 as
      -1) while stat(1) prints them unsigned.
    - GNU du -B1 multiplies st_blocks by 512 in 64 bits and wraps: 2**62
      blocks (2**71 bytes) counts as 0, and a total past 2**64 prints as
      "Infinity".  Up to 2**55-1 blocks its byte counts stay exact.

    Values in [2**63, 2**64) are sent as their u64 bit pattern.

``--swap-after-listing REL=TARGET`` (repeatable)
    the directory REL (relative to SRC) is reported as the real directory
    until its parent has been listed (readdir) once; from then on a lookup
    or getattr of REL reports a symlink to TARGET (readlink returns TARGET
    verbatim, e.g. an absolute path out of the tree), and later listings
    of the parent show a symlink.  That is an attacker replacing a
    directory by a symlink between a walk's listing and its open, made
    deterministic.  Paths below REL still pass through, as an already
    open descriptor of a renamed directory would.

The mount is read-only (``ro``) and only for root or the user who made it
(no ``allow_other``); permissions are not checked by the kernel
(no ``default_permissions``), so the ACCESS calls reach the server.

``python tests/fusefs.py --measure`` prints the stats/s figures above.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes.util
import errno
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


U64 = 2**64
MAX_THREADS = 64
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Lies:
    """What the filesystem reports differently from SRC."""

    def __init__(
        self,
        *,
        delay_ms: float = 0.0,
        inode_offset: int = 0,
        huge: Mapping[str, tuple[int, int]] | None = None,
        swap_after_listing: Mapping[str, str] | None = None,
    ) -> None:
        self.delay = delay_ms / 1000
        self.inode_offset = inode_offset % U64
        self.huge = {_key(k): v for k, v in (huge or {}).items()}
        self.swaps = {_key(k): v for k, v in (swap_after_listing or {}).items()}
        for blocks, size in self.huge.values():
            if not (0 <= blocks < U64 and 0 <= size < U64):
                raise ValueError("BLOCKS and SIZE must be in [0, 2**64)")


def _key(rel: str) -> str:
    """The FUSE path ("/a/b") of a path relative to SRC ("a/b")."""
    return "/" + rel.strip("/")


def _signed64(value: int) -> int:
    """The int64 with the same bits as the u64 ``value`` (for ctypes)."""
    return value - U64 if value >= 2**63 else value


class Passthrough:
    """mfusepy operations: SRC read-only, with the lies of ``Lies``.

    A plain class (mfusepy looks operations up by name), so that mypy
    need not subclass mfusepy's untyped ``Operations``.
    """

    use_ns = True  # times as integer nanoseconds

    def __init__(self, src: bytes, lies: Lies) -> None:
        self._src = os.path.abspath(src).rstrip(b"/")
        self._lies = lies
        self._mutex = threading.Lock()
        self._swapped: set[str] = set()
        self._swaps_by_parent: dict[str, set[str]] = {}
        for rel in lies.swaps:
            parent = os.path.dirname(rel)
            self._swaps_by_parent.setdefault(parent, set()).add(rel)

    # -- helpers --------------------------------------------------------

    def _real(self, path: str) -> bytes:
        return self._src + os.fsencode(path)

    def _sleep(self) -> None:
        if self._lies.delay:
            time.sleep(self._lies.delay)

    def _is_swapped(self, path: str) -> bool:
        with self._mutex:
            return path in self._swapped

    def _ino(self, ino: int) -> int:
        return (ino + self._lies.inode_offset) % U64

    def _attrs(self, path: str, st: os.stat_result) -> dict[str, int]:
        attrs = {
            "st_mode": st.st_mode,
            "st_ino": self._ino(st.st_ino),
            "st_nlink": st.st_nlink,
            "st_uid": st.st_uid,
            "st_gid": st.st_gid,
            "st_rdev": st.st_rdev,
            "st_size": st.st_size,
            "st_blocks": st.st_blocks,
            "st_blksize": st.st_blksize,
            "st_atime": st.st_atime_ns,
            "st_mtime": st.st_mtime_ns,
            "st_ctime": st.st_ctime_ns,
        }
        if path in self._lies.huge:
            blocks, size = self._lies.huge[path]
            attrs["st_blocks"] = _signed64(blocks)
            attrs["st_size"] = _signed64(size)
        if self._is_swapped(path):
            target = os.fsencode(self._lies.swaps[path])
            attrs.update(
                st_mode=stat.S_IFLNK | 0o777,
                st_nlink=1,
                st_size=len(target),
                st_blocks=0,
            )
        return attrs

    # -- metadata -------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        del fh
        self._sleep()
        return self._attrs(path, os.lstat(self._real(path)))

    def access(self, path: str, amode: int) -> int:
        self._sleep()
        if self._is_swapped(path):
            return 0
        real = self._real(path)
        os.lstat(real)  # ENOENT as such
        if not os.access(real, amode):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return 0

    def readlink(self, path: str) -> str:
        self._sleep()
        if self._is_swapped(path):
            return self._lies.swaps[path]
        return os.fsdecode(os.readlink(self._real(path)))

    def opendir(self, path: str) -> int:
        self._sleep()
        if not stat.S_ISDIR(os.lstat(self._real(path)).st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        return 0

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        del fh
        self._sleep()
        real = self._real(path)
        here = os.lstat(real)
        up = os.lstat(os.path.dirname(real)) if path != "/" else here
        entries = [
            (".", {"st_mode": here.st_mode, "st_ino": self._ino(here.st_ino)}, 0),
            ("..", {"st_mode": up.st_mode, "st_ino": self._ino(up.st_ino)}, 0),
        ]
        prefix = "" if path == "/" else path
        with os.scandir(real) as it:
            for entry in it:
                name = os.fsdecode(entry.name)
                child = f"{prefix}/{name}"
                mode = entry.stat(follow_symlinks=False).st_mode
                if self._is_swapped(child):
                    mode = stat.S_IFLNK | 0o777
                ino = self._ino(entry.inode())
                entries.append((name, {"st_mode": mode, "st_ino": ino}, 0))
        # Listed: from now on the swapped children are symlinks.
        with self._mutex:
            self._swapped |= self._swaps_by_parent.get(path, set())
        return entries

    def releasedir(self, path: str, fh: int) -> int:
        del path, fh
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        del path
        sv = os.statvfs(self._src)
        return {
            key: getattr(sv, key)
            for key in (
                "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                "f_files", "f_ffree", "f_favail", "f_namemax",
            )
        }

    # -- file data ------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        self._sleep()
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return os.open(self._real(path), os.O_RDONLY | os.O_NOFOLLOW)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        del path
        return os.pread(fh, size, offset)

    def release(self, path: str, fh: int) -> int:
        del path
        os.close(fh)
        return 0

    def init_with_config(self, conn: Any, config: Any) -> None:
        """Caches off and real inode numbers, whatever -o parsing did."""
        del conn
        if config is not None:
            config.entry_timeout = 0.0
            config.attr_timeout = 0.0
            config.negative_timeout = 0.0
            config.use_ino = 1


def serve(
    src: bytes,
    mountpoint: str,
    lies: Lies,
    *,
    debug: bool = False,
    die_with_parent: bool = False,
) -> None:
    """Mount and serve in the foreground until unmounted (or SIGTERM)."""
    if die_with_parent:
        # SIGTERM, on which libfuse unmounts and returns, when the thread
        # that started this process ends: a killed test run leaves no mount.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before prctl
            return
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import mfusepy

    mfusepy.FUSE(
        Passthrough(src, lies),
        mountpoint,
        foreground=True,
        debug=debug,
        ro=True,
        fsname="du-exporter-fusefs",
        subtype="fusefs",
        use_ino=True,
        entry_timeout=0,
        attr_timeout=0,
        negative_timeout=0,
        max_threads=MAX_THREADS,
        # libfuse 3.14's default (-1) makes it print a spurious error.
        max_idle_threads=MAX_THREADS,
    )


# -- the test-side helpers ----------------------------------------------


def unavailable() -> str | None:
    """Why no FUSE mount can be made here, or None if one can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by this user"
    if importlib.util.find_spec("mfusepy") is None:
        return "mfusepy is not installed (pip install -e '.[dev]')"
    if ctypes.util.find_library("fuse3") is None:
        return "libfuse3 is missing (Debian: apt-get install fuse3)"
    if _unmount_command() is None:
        return "neither fusermount3, fusermount nor umount is on PATH"
    return None


def _unmount_command() -> list[str] | None:
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool):
            return [tool, "-u"]
    if shutil.which("umount"):
        return ["umount"]
    return None


def _mountinfo_escape(path: str) -> str:
    """A path as /proc/self/mountinfo spells it (octal for \\s, \\t...)."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def is_mounted(mnt: str | os.PathLike[str]) -> bool:
    """Is a FUSE filesystem of this module mounted at ``mnt``?"""
    want = _mountinfo_escape(os.path.realpath(mnt))
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4] == want and fields[sep + 1] == "fuse.fusefs":
                return True
    return False


def command(
    src: str | os.PathLike[str],
    mnt: str | os.PathLike[str],
    *,
    delay_ms: float = 0.0,
    inode_offset: int = 0,
    huge: Mapping[str, tuple[int, int]] | None = None,
    swap_after_listing: Mapping[str, str] | None = None,
    die_with_parent: bool = False,
) -> list[str]:
    """The command line that serves ``src`` at ``mnt`` with these lies."""
    argv = [sys.executable, os.path.abspath(__file__), os.fspath(src), os.fspath(mnt)]
    if die_with_parent:
        argv.append("--die-with-parent")
    if delay_ms:
        argv += ["--delay-ms", str(delay_ms)]
    if inode_offset:
        argv += ["--inode-offset", str(inode_offset)]
    for rel, (blocks, size) in (huge or {}).items():
        argv += ["--huge", f"{rel}={blocks}:{size}"]
    for rel, target in (swap_after_listing or {}).items():
        argv += ["--swap-after-listing", f"{rel}={target}"]
    return argv


def unmount(mnt: str | os.PathLike[str]) -> None:
    """Unmount ``mnt``; lazily if it is busy (an open descriptor)."""
    cmd = _unmount_command()
    if cmd is None:
        raise RuntimeError(unavailable())
    path = os.fspath(mnt)
    done = subprocess.run([*cmd, path], capture_output=True, check=False)
    if done.returncode and is_mounted(path):
        lazy = [cmd[0], "-uz"] if cmd[0] != "umount" else ["umount", "-l"]
        subprocess.run([*lazy, path], capture_output=True, check=False)


@contextlib.contextmanager
def mounted(
    src: str | os.PathLike[str],
    mnt: str | os.PathLike[str],
    *,
    timeout: float = 10.0,
    delay_ms: float = 0.0,
    inode_offset: int = 0,
    huge: Mapping[str, tuple[int, int]] | None = None,
    swap_after_listing: Mapping[str, str] | None = None,
) -> Iterator[Path]:
    """Serve ``src`` at ``mnt`` (created if missing) for the ``with`` body.

    Yields ``mnt`` as a Path once the mount is up (at most ``timeout``
    seconds, else RuntimeError with the server's stderr); always unmounts
    and reaps the server on exit.
    """
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    os.makedirs(mnt, exist_ok=True)
    argv = command(
        src,
        mnt,
        delay_ms=delay_ms,
        inode_offset=inode_offset,
        huge=huge,
        swap_after_listing=swap_after_listing,
        die_with_parent=True,
    )
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)

        def failure(why: str) -> RuntimeError:
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace")
            return RuntimeError(f"fusefs {why}: {' '.join(argv)}\n{tail}")

        try:
            deadline = time.monotonic() + timeout
            while not is_mounted(mnt):
                if proc.poll() is not None:
                    why = f"exited with {proc.returncode}"
                    raise failure(why)
                if time.monotonic() > deadline:
                    why = f"not mounted after {timeout} s"
                    raise failure(why)
                time.sleep(0.02)
            yield Path(mnt)
        finally:
            if is_mounted(mnt):
                unmount(mnt)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- measuring ----------------------------------------------------------


def stat_rate(paths: list[str], threads: int, seconds: float = 2.0) -> float:
    """``os.lstat`` calls per second over ``paths``, from ``threads`` threads.

    Thread i stats paths i, i+threads, ... in turn, so no two threads
    stat the same file at the same time.
    """
    stop = time.monotonic() + seconds
    start = time.monotonic()

    def worker(i: int) -> int:
        mine = paths[i::threads]
        n = 0
        while time.monotonic() < stop:
            os.lstat(mine[n % len(mine)])
            n += 1
        return n

    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(worker, range(threads)))
    return total / (time.monotonic() - start)


def measure(delay_ms: float = 0.5, files: int = 256) -> None:
    """Print the stats/s of the docstring: 1 and 16 threads."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.mkdir(src)
        for i in range(files):
            with open(os.path.join(src, f"f{i}"), "wb"):
                pass
        with mounted(src, os.path.join(tmp, "mnt"), delay_ms=delay_ms) as mnt:
            paths = [os.path.join(mnt, f"f{i}") for i in range(files)]
            for path in paths:  # first lookups queue up per directory
                os.lstat(path)
            for threads in (1, 16):
                rate = stat_rate(paths, threads)
                print(f"delay {delay_ms} ms, {threads:2} threads: {rate:,.0f} stats/s")  # noqa: T201


# -- command line -------------------------------------------------------


def _pair(text: str) -> tuple[str, str]:
    rel, eq, value = text.partition("=")
    if not eq or not rel or not value:
        msg = f"want REL=VALUE, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return rel, value


def _huge(text: str) -> tuple[str, tuple[int, int]]:
    rel, value = _pair(text)
    blocks, colon, size = value.partition(":")
    if not colon:
        msg = f"want PATH=BLOCKS:SIZE, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return rel, (int(blocks, 0), int(size, 0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Read-only FUSE passthrough of SRC with deliberate lies.",
    )
    parser.add_argument("src", nargs="?", help="the directory to show")
    parser.add_argument("mountpoint", nargs="?")
    parser.add_argument("--delay-ms", type=float, default=None)
    parser.add_argument("--inode-offset", type=lambda s: int(s, 0), default=0)
    parser.add_argument("--huge", type=_huge, action="append", default=[], metavar="PATH=BLOCKS:SIZE")
    parser.add_argument("--swap-after-listing", type=_pair, action="append", default=[], metavar="REL=TARGET")
    parser.add_argument("--debug", action="store_true", help="libfuse's -d")
    parser.add_argument("--die-with-parent", action="store_true", help="unmount and exit when the starting thread ends")
    parser.add_argument("--measure", action="store_true", help="print stats/s of os.lstat, 1 and 16 threads (delay 0.5 ms unless given)")
    args = parser.parse_args(argv)
    if args.measure:
        measure(0.5 if args.delay_ms is None else args.delay_ms)
        return
    if args.src is None or args.mountpoint is None:
        parser.error("SRC and MOUNTPOINT are required")
    if not os.path.isdir(args.src):
        parser.error(f"SRC {args.src!r} is not a directory")
    lies = Lies(
        delay_ms=args.delay_ms or 0.0,
        inode_offset=args.inode_offset,
        huge=dict(args.huge),
        swap_after_listing=dict(args.swap_after_listing),
    )
    serve(
        os.fsencode(args.src),
        args.mountpoint,
        lies,
        debug=args.debug,
        die_with_parent=args.die_with_parent,
    )


if __name__ == "__main__":
    main()
