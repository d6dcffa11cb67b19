"""``ignore-dirs`` compiled: which entries of a directory to skip."""

from __future__ import annotations

import fnmatch
import os
import re

from collections.abc import Callable


_GLOB = re.compile(rb"[*?[]")


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
        for p in patterns:
            glob = _GLOB.search(p)
            if not p.startswith(b"/"):
                if glob:
                    self.name_globs.append(_compile(p))
                else:
                    self.names.add(p)
            elif glob:
                self.path_globs.append((p[: glob.start()], _compile(p)))
            else:
                parent, _, name = p.rpartition(b"/")
                self.paths.setdefault(parent or b"/", set()).add(name)
        self.any = bool(patterns)

    def below(self, path: bytes) -> bool:
        """Whether some pattern may skip an entry of ``path`` or of a
        directory below it (names and globs of names: anywhere)."""
        if self.names or self.name_globs:
            return True
        slash = path if path.endswith(b"/") else path + b"/"
        return any(parent == path or parent.startswith(slash)
                   for parent in self.paths) or any(
            slash.startswith(lit) or lit.startswith(slash)
            for lit, _rx in self.path_globs)

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


def _compile(pattern: bytes) -> re.Pattern[bytes]:
    return re.compile(os.fsencode(fnmatch.translate(os.fsdecode(pattern))))

