"""Idle-worker signalling between the pool and its workers."""

from __future__ import annotations

import mmap
import struct


class MappedHunger:
    """How many workers are idle, in a few bytes of memory shared by mmap.

    The parent writes it; a busy worker that sees it above zero takes one
    and returns early, handing its pending directories back.  Updates are
    not atomic across processes, on purpose: a lost or doubled decrement
    only moves work a little earlier or later, never changes a number.
    """

    SIZE = 8

    def __init__(self, fd: int) -> None:
        self.map = mmap.mmap(fd, self.SIZE)

    def set(self, n: int) -> None:
        struct.pack_into("q", self.map, 0, max(0, n))

    def take(self) -> bool:
        n: int = struct.unpack_from("q", self.map, 0)[0]
        if n > 0:
            struct.pack_into("q", self.map, 0, n - 1)
            return True
        return False

