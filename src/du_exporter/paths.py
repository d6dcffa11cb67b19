r"""Roots and paths: one home for how a path is keyed, shown and labelled.

Scanned paths are bytes (Linux allows any byte but ``/`` and NUL in a
name).  A configured root is keyed by ``os.fsencode`` of its path
everywhere; a label value is its UTF-8 rendering with ``\xNN`` for
bytes that are not UTF-8 (:func:`label_path`, inverse
:func:`unlabel_path`).  Also here: nested roots grouped into walks,
depth below a root, and how sizes and times are shown to people.

Imported by the scan workers too, so it needs only the standard library
(and not ``dataclasses``, which costs every worker 1.5 MiB).
"""

from __future__ import annotations

import os
import re
import time

from collections.abc import Iterable
from typing import NamedTuple, Protocol


#: :func:`depth_under` of a path that is not below the root.
OUTSIDE = 1 << 30


def depth_under(path: bytes, root: bytes) -> int:
    """Depth of ``path`` below ``root`` (0 for root), or :data:`OUTSIDE`."""
    if path == root:
        return 0
    prefix = root if root.endswith(b"/") else root + b"/"
    if not path.startswith(prefix):
        return OUTSIDE
    return path[len(prefix):].count(b"/") + 1


class RootLike(Protocol):
    """A configured root: a path and its dir-level."""

    @property
    def path(self) -> str: ...

    @property
    def dir_level(self) -> int: ...


def root_key(path: str) -> bytes:
    """How a configured root's path is keyed in the store and the scan."""
    return os.fsencode(path)


def root_levels(roots: Iterable[RootLike]) -> dict[bytes, int]:
    """Every configured root's key and its dir-level."""
    return {root_key(r.path): r.dir_level for r in roots}


class Walk(NamedTuple):
    """One walked root and the configured roots it covers (itself first)."""

    top: bytes
    exports: tuple[tuple[bytes, int], ...]

    @property
    def roots(self) -> list[bytes]:
        return [root for root, _ in self.exports]

    def export_of(self, path: bytes) -> tuple[bytes, int] | None:
        """The innermost root that gives ``path`` a row, and the depth below it."""
        return export_of(self.exports, path)


def export_of(
    exports: tuple[tuple[bytes, int], ...], path: bytes
) -> tuple[bytes, int] | None:
    """The innermost of ``exports`` ((root, dir-level), outermost first)
    that gives ``path`` a row, and ``path``'s depth below it."""
    for root, dir_level in reversed(exports):
        depth = depth_under(path, root)
        if depth <= dir_level:
            return root, depth
    return None


def plan_walks(roots: Iterable[RootLike]) -> list[Walk]:
    """Group the configured roots: nested roots join the outer walk."""
    walks: list[Walk] = []
    for path, dir_level in sorted(root_levels(roots).items()):
        outer = next(
            (w for w in walks if depth_under(path, w.top) < OUTSIDE), None
        )
        if outer is None:
            walks.append(Walk(path, ((path, dir_level),)))
        else:
            walks[walks.index(outer)] = Walk(
                outer.top, (*outer.exports, (path, dir_level))
            )
    return walks


def label_path(path: bytes) -> str:
    r"""A path as a label value: valid UTF-8, unambiguous.

    Bytes that are not UTF-8 become ``\xNN`` and a backslash becomes
    ``\\``, so two different paths never share a label.
    """
    text = path.replace(b"\\", b"\\\\")
    return text.decode("utf-8", errors="backslashreplace")


_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})?")


def unlabel_path(label: str) -> bytes:
    r"""The inverse of :func:`label_path`.

    ``\\`` is a backslash and ``\xNN`` the byte NN; any other text is
    UTF-8.  Raises :class:`ValueError` for a string ``label_path`` never
    returns (a lone backslash, ``\x41`` for ``A``), so every path has
    exactly one label and back.
    """
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(label):
        out += label[pos:m.start()].encode()  # UnicodeEncodeError: lone surrogate
        escape = m.group(1)
        if escape is None:
            msg = f"lone backslash at offset {m.start()}"
            raise ValueError(msg)
        out += b"\\" if escape == "\\" else bytes([int(escape[1:], 16)])
        pos = m.end()
    out += label[pos:].encode()
    path = bytes(out)
    if label_path(path) != label:
        msg = "not the label of any path (escapes only bytes that are not UTF-8)"
        raise ValueError(msg)
    return path


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}


def display(path: bytes) -> str:
    r"""A path for people: its label, control characters as ``\xNN``.

    Unambiguous: labels double every literal backslash and only write
    ``\xNN`` for bytes of 0x80 and above, which are never control
    characters.
    """
    return label_path(path).translate(_CONTROL)


def human_bytes(n: int) -> str:
    """A size for people: ``12.3 MiB`` (the sign kept, binary units)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:  # noqa: PLR2004 - the next unit
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


class Sized(Protocol):
    @property
    def disk(self) -> int: ...

    @property
    def apparent(self) -> int: ...


def size_of(size_mode: str, row: Sized) -> int:
    """The size ``size-mode`` asks for: ``disk`` or ``apparent``."""
    return row.disk if size_mode == "disk" else row.apparent


def when(ts: float | None, none: str = "-") -> str:
    """A time for people, always with its zone: ``2026-12-01 08:00:00 UTC``."""
    if ts is None:
        return none
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
