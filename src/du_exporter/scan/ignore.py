"""``ignore-dirs`` compiled: which entries of a directory to skip.

Twice: as Python tests (``Ignore.for_dir``) and as rules for the C
reader (``Ignore.rules``), which applies them byte for byte the same.
"""

from __future__ import annotations

import fnmatch
import os
import re
import warnings

from collections.abc import Callable


_GLOB = re.compile(rb"[*?[]")

#: The C reader's rules (see ``_fastscan.c``): a kind byte, then the
#: exact name, or a glob program of one-byte elements and stars.
RULE_NAME, RULE_NAME_GLOB, RULE_PATH_GLOB = b"n", b"g", b"p"
OP_BYTE, OP_ANY, OP_STAR, OP_SET = b"\x01", b"\x02", b"\x03", b"\x04"


class Ignore:
    """``ignore-dirs`` compiled: which entries of a directory to skip.

    Exact paths and names are set lookups; globs (fnmatch, ``*`` also
    matches ``/``) are tried only in directories they can match in.
    """

    def __init__(self, patterns: tuple[bytes, ...]) -> None:
        self.names: set[bytes] = set()
        self.name_globs: list[re.Pattern[bytes]] = []
        self.paths: dict[bytes, set[bytes]] = {}
        self.path_globs: list[tuple[bytes, re.Pattern[bytes]]] = []
        #: The same as rules for the C reader (``rules``).
        c_name_globs: list[bytes] = []
        self.c_path_globs: list[tuple[bytes, bytes]] = []
        for p in patterns:
            glob = _GLOB.search(p)
            if not p.startswith(b"/"):
                if glob:
                    self.name_globs.append(_compile(p))
                    c_name_globs.append(RULE_NAME_GLOB + program(p))
                else:
                    self.names.add(p)
            elif glob:
                self.path_globs.append((p[: glob.start()], _compile(p)))
                self.c_path_globs.append(
                    (p[: glob.start()], RULE_PATH_GLOB + program(p)))
            else:
                parent, _, name = p.rpartition(b"/")
                self.paths.setdefault(parent or b"/", set()).add(name)
        self.any = bool(patterns)
        self.c_names = (*(RULE_NAME + n for n in sorted(self.names)),
                        *c_name_globs)
        self.c_paths = {
            parent: tuple(RULE_NAME + n for n in sorted(names - self.names))
            for parent, names in self.paths.items()
        }

    def same_below(self, path: bytes) -> tuple[bytes, ...] | None:
        """``rules(d)`` for every directory ``d`` at or below ``path`` when
        it is the same for all (no path or path-glob pattern can skip an
        entry there: names and globs of names apply anywhere), else None."""
        slash = path if path.endswith(b"/") else path + b"/"
        reached = any(parent == path or parent.startswith(slash)
                      for parent in self.paths) or any(
            slash.startswith(lit) or lit.startswith(slash)
            for lit, _rx in self.path_globs)
        return None if reached else self.c_names

    def for_dir(self, path: bytes) -> Callable[[bytes, bytes], bool] | None:
        """A test ``(entry path, name) -> skip?`` for entries of ``path``."""
        if not self.any:
            return None
        names = self.names | self.paths.get(path, set())
        slash = path if path.endswith(b"/") else path + b"/"
        globs = [rx for lit, rx in self.path_globs
                 if slash.startswith(lit) or lit.startswith(slash)]
        name_globs = self.name_globs
        if not (names or globs or name_globs):
            return None

        def skip(entry_path: bytes, name: bytes) -> bool:
            return (
                name in names
                or any(rx.match(name) for rx in name_globs)
                or any(rx.match(entry_path) for rx in globs)
            )

        return skip

    def rules(self, path: bytes) -> tuple[bytes, ...]:
        """``for_dir(path)`` as the C reader's rules; empty: skip nothing."""
        extra = self.c_paths.get(path, ())
        if self.c_path_globs:
            slash = path if path.endswith(b"/") else path + b"/"
            extra += tuple(rule for lit, rule in self.c_path_globs
                           if slash.startswith(lit) or lit.startswith(slash))
        return self.c_names + extra if extra else self.c_names


def program(pattern: bytes) -> bytes:
    """``pattern`` as a C glob program matching what ``_compile`` does.

    ``fnmatch.translate`` makes every element but ``*`` match exactly one
    byte of a bytes name: a literal character its bytes, ``?`` any byte,
    a ``[...]`` set one byte.  Each set's bytes are found by asking its
    own translation about all 256, so the set rules (ranges, ``!``, a
    leading ``]``, empty ranges dropped) are Python's own.
    """
    pat = os.fsdecode(pattern)
    out: list[bytes] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        i += 1
        if c == "*":
            if not out or out[-1] != OP_STAR:
                out.append(OP_STAR)
        elif c == "?":
            out.append(OP_ANY)
        elif c == "[" and (j := _set_end(pat, i)) is not None:
            out.append(OP_SET + _byte_set(pat[i - 1:j + 1]))
            i = j + 1
        else:  # a literal (a "[" without its "]" too)
            out.extend(OP_BYTE + bytes((b,)) for b in os.fsencode(c))
    return b"".join(out)


def _set_end(pat: str, i: int) -> int | None:
    """Where the set opened just before ``i`` ends (fnmatch's rule)."""
    j = i
    if j < len(pat) and pat[j] == "!":
        j += 1
    if j < len(pat) and pat[j] == "]":
        j += 1
    j = pat.find("]", j)
    return None if j < 0 else j


def _byte_set(one_set: str) -> bytes:
    """The 256-bit map of the bytes that the set ``one_set`` matches."""
    with warnings.catch_warnings():  # "possible nested set": still a set
        warnings.simplefilter("ignore", FutureWarning)
        rx = _compile(os.fsencode(one_set))
    bits = bytearray(32)
    for b in range(256):
        if rx.match(bytes((b,))):
            bits[b >> 3] |= 1 << (b & 7)
    return bytes(bits)


def _compile(pattern: bytes) -> re.Pattern[bytes]:
    return re.compile(os.fsencode(fnmatch.translate(os.fsdecode(pattern))))

