"""fanotify filesystem marks read with ctypes: which directories changed.

A group is made with ``FAN_REPORT_DFID_NAME``: every event carries the
file handle of the directory an entry changed in (and the entry's name).
The handle is turned back into the directory's current path with
``open_by_handle_at`` on a descriptor of the same filesystem.  Names and
masks are only hints for the caller, which re-reads the directory: no
size ever comes from an event.

Needs ``CAP_SYS_ADMIN`` (``fanotify_init``, ``FAN_MARK_FILESYSTEM``) and
``CAP_DAC_READ_SEARCH`` (``open_by_handle_at``); Linux 5.9 or later.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading

from collections.abc import Callable
from dataclasses import dataclass

from du_exporter.errors import WatchUnavailableError


# fanotify_init flags
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME
# fanotify_mark flags
FAN_MARK_ADD = 0x1
FAN_MARK_FILESYSTEM = 0x100
# event masks
FAN_MODIFY = 0x2
FAN_ATTRIB = 0x4
FAN_CLOSE_WRITE = 0x8
FAN_MOVED_FROM = 0x40
FAN_MOVED_TO = 0x80
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_Q_OVERFLOW = 0x4000
FAN_ONDIR = 0x40000000
#: What changes a directory's sums: entries coming and going, sizes,
#: and (for ``mtime``) attributes.  ``FAN_ONDIR``: the same for
#: subdirectories.
WATCH_MASK = (
    FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_MODIFY
    | FAN_ATTRIB | FAN_CLOSE_WRITE | FAN_ONDIR
)
# info record types
_INFO_DFID_NAME = 2
_INFO_DFID = 3
_INFO_OLD_DFID_NAME = 10
_INFO_NEW_DFID_NAME = 12
_DIR_RECORDS = frozenset(
    {_INFO_DFID_NAME, _INFO_DFID, _INFO_OLD_DFID_NAME, _INFO_NEW_DFID_NAME}
)

_METADATA = struct.Struct("=IBBHQii")  # event_len vers reserved metadata_len mask fd pid
_INFO_HEADER = struct.Struct("=BBH")  # info_type pad len
_FSID = struct.Struct("=ii")
_HANDLE = struct.Struct("=Ii")  # handle_bytes handle_type
_READ_SIZE = 256 * 1024


@dataclass(frozen=True)
class Event:
    """One event: its mask and the directory handles it names."""

    mask: int
    #: (fsid, raw ``struct file_handle``, entry name) per directory record.
    dirs: tuple[tuple[tuple[int, int], bytes, bytes], ...]


def parse(buf: bytes) -> list[Event]:
    """Decode a buffer of events as ``read`` returned it."""
    events: list[Event] = []
    pos = 0
    while pos + _METADATA.size <= len(buf):
        length, _vers, _res, meta_len, mask, fd, _pid = _METADATA.unpack_from(buf, pos)
        if length < _METADATA.size or pos + length > len(buf):
            break
        if fd >= 0:  # not with FID reporting, but never leak one
            os.close(fd)
        dirs = []
        info = pos + meta_len
        end = pos + length
        while info + _INFO_HEADER.size <= end:
            kind, _pad, ilen = _INFO_HEADER.unpack_from(buf, info)
            if ilen < _INFO_HEADER.size or info + ilen > end:
                break
            if kind in _DIR_RECORDS:
                dirs.append(_dir_record(buf, info + _INFO_HEADER.size, info + ilen))
            info += ilen
        events.append(Event(mask, tuple(dirs)))
        pos += length
    return events


def _dir_record(
    buf: bytes, pos: int, end: int
) -> tuple[tuple[int, int], bytes, bytes]:
    fsid = _FSID.unpack_from(buf, pos)
    pos += _FSID.size
    nbytes, _type = _HANDLE.unpack_from(buf, pos)
    handle = bytes(buf[pos : pos + _HANDLE.size + nbytes])
    pos += _HANDLE.size + nbytes
    name = bytes(buf[pos:end]).split(b"\0", 1)[0]
    return fsid, handle, name


class _Libc:
    """The three system calls, bound once per group."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.init = libc.fanotify_init
        self.init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        self.init.restype = ctypes.c_int
        self.mark = libc.fanotify_mark
        self.mark.argtypes = [
            ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
            ctypes.c_char_p,
        ]
        self.mark.restype = ctypes.c_int
        self.open_by_handle = libc.open_by_handle_at
        self.open_by_handle.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.open_by_handle.restype = ctypes.c_int
        self.name_to_handle = libc.name_to_handle_at
        self.name_to_handle.argtypes = [
            ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
            ctypes.c_int,
        ]
        self.name_to_handle.restype = ctypes.c_int


def _reason(err: int) -> str:
    if err in (errno.EPERM, errno.EACCES):
        return "permission denied (needs CAP_SYS_ADMIN)"
    if err in (errno.ENODEV, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EINVAL):
        return f"not supported here ({os.strerror(err)})"
    return os.strerror(err)


def fsid_of(path: bytes | int) -> tuple[int, int]:
    """The filesystem id events carry, as ``statfs`` reports it."""
    fsid = (os.fstatvfs(path) if isinstance(path, int) else os.statvfs(path)).f_fsid
    # glibc packs the two 32-bit halves into one unsigned long.
    lo = fsid & 0xFFFFFFFF
    hi = (fsid >> 32) & 0xFFFFFFFF
    return _FSID.unpack(struct.pack("=II", lo, hi))


class FanotifyGroup:
    """One fanotify group with filesystem marks; read on its own thread.

    ``on_dirs({path: events})`` gets the directories named by a batch of
    events (paths as they are now); ``on_overflow()`` is called when the
    kernel dropped events.  ``quiet(path, names)`` drops the events of a
    directory whose changed entries are all ``names`` (the database's
    own files).
    """

    def __init__(
        self,
        on_dirs: Callable[[dict[bytes, int]], None],
        on_overflow: Callable[[], None],
        quiet: Callable[[bytes, set[bytes]], bool] = lambda _p, _n: False,
    ) -> None:
        self._libc = _Libc()
        fd = self._libc.init(
            FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME,
            os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC,
        )
        if fd < 0:
            err = ctypes.get_errno()
            msg = f"fanotify_init: {_reason(err)}"
            raise WatchUnavailableError(msg)
        self.fd = fd
        self.on_dirs = on_dirs
        self.on_overflow = on_overflow
        self.quiet = quiet
        #: fsid -> where that filesystem was marked: opened for each batch
        #: of events (open_by_handle_at needs a descriptor on it), never
        #: held, so an unmount is not kept busy.
        self._mounts: dict[tuple[int, int], list[bytes]] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread: threading.Thread | None = None
        self._closed = False

    def mark(self, path: bytes) -> None:
        """Follow the whole filesystem holding ``path``."""
        try:
            fsid = fsid_of(path)
            mount_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            msg = f"cannot open {os.fsdecode(path)!r}: {e.strerror}"
            raise WatchUnavailableError(msg) from None
        rc = self._libc.mark(
            self.fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, WATCH_MASK, -1, path
        )
        if rc < 0:
            err = ctypes.get_errno()
            os.close(mount_fd)
            msg = f"fanotify_mark: {_reason(err)}"
            raise WatchUnavailableError(msg)
        if fsid == (0, 0):
            os.close(mount_fd)
            msg = "filesystem reports no fsid"
            raise WatchUnavailableError(msg)
        try:
            # open_by_handle_at needs CAP_DAC_READ_SEARCH: find out now.
            self._check_handles(mount_fd)
        finally:
            os.close(mount_fd)
        with self._lock:
            self._mounts.setdefault(fsid, []).append(path)

    def _check_handles(self, mount_fd: int) -> None:
        handle = ctypes.create_string_buffer(_HANDLE.size + 128)
        struct.pack_into("=Ii", handle, 0, 128, 0)
        mount_id = ctypes.c_int()
        rc = self._libc.name_to_handle(
            mount_fd, b"", handle, ctypes.byref(mount_id), 0x1000  # AT_EMPTY_PATH
        )
        if rc < 0:
            err = ctypes.get_errno()
            msg = f"name_to_handle_at: {_reason(err)}"
            raise WatchUnavailableError(msg)
        fd = self._libc.open_by_handle(
            mount_fd, handle.raw, os.O_PATH | os.O_CLOEXEC
        )
        if fd < 0:
            err = ctypes.get_errno()
            reason = (
                "permission denied (needs CAP_DAC_READ_SEARCH)"
                if err == errno.EPERM else _reason(err)
            )
            msg = f"open_by_handle_at: {reason}"
            raise WatchUnavailableError(msg)
        os.close(fd)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="du-exporter-fanotify", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the reader thread and close every descriptor."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join()
        os.close(self.fd)
        os.close(self._wake_r)
        os.close(self._wake_w)
        with self._lock:
            self._mounts.clear()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                return
            self.drain()

    def drain(self) -> None:
        """Read what is queued now and hand it on (also used by tests)."""
        while True:
            try:
                buf = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                return
            if not buf:
                return
            self._deliver(parse(buf))

    def _deliver(self, events: list[Event]) -> None:
        overflow = False
        # handle -> (events naming it, entry names)
        handles: dict[tuple[tuple[int, int], bytes], tuple[int, set[bytes]]] = {}
        for ev in events:
            if ev.mask & FAN_Q_OVERFLOW:
                overflow = True
                continue
            for fsid, handle, name in ev.dirs:
                count, names = handles.get((fsid, handle), (0, set()))
                names.add(name)
                handles[fsid, handle] = (count + 1, names)
        dirs: dict[bytes, int] = {}
        opened: dict[tuple[int, int], int | None] = {}
        try:
            for (fsid, handle), (count, names) in handles.items():
                if fsid not in opened:
                    opened[fsid] = self._open_fs(fsid)
                path = self.resolve(opened[fsid], handle)
                if path is not None and not self.quiet(path, names):
                    dirs[path] = dirs.get(path, 0) + count
        finally:
            for fd in opened.values():
                if fd is not None:
                    os.close(fd)
        if overflow:
            self.on_overflow()
        self.on_dirs(dirs)

    def _open_fs(self, fsid: tuple[int, int]) -> int | None:
        """A descriptor on the marked filesystem ``fsid``; None if it is
        not marked or no longer mounted where it was marked."""
        with self._lock:
            paths = list(self._mounts.get(fsid, ()))
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if fsid_of(fd) == fsid:
                    return fd
            except OSError:
                pass
            os.close(fd)  # unmounted: the directory below is another filesystem
        return None

    def resolve(self, mount_fd: int | None, handle: bytes) -> bytes | None:
        """The directory's path now; None once it is gone."""
        if mount_fd is None:
            return None
        fd = self._libc.open_by_handle(
            mount_fd, handle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
        )
        if fd < 0:
            return None  # deleted (ESTALE) or unreachable
        try:
            path = os.readlink(f"/proc/self/fd/{fd}".encode())
        except OSError:
            return None
        finally:
            os.close(fd)
        if path.endswith(b" (deleted)") or not path.startswith(b"/"):
            return None
        return path
