"""Every exception du-exporter raises to the operator, and the hint.

The CLI catches :class:`DuExporterError` and turns it into one line on
stderr with the class's ``exit_code``: 2 for configuration and usage
errors, 1 for runtime failures.
"""

from __future__ import annotations

import difflib

from collections.abc import Iterable
from typing import ClassVar


def did_you_mean(word: object, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest known word, else ``""``."""
    hint = difflib.get_close_matches(str(word), tuple(known), n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


class DuExporterError(Exception):
    """Base class of every error du-exporter reports to the operator."""

    exit_code: ClassVar[int] = 1


class ConfigError(DuExporterError):
    """The configuration is invalid: unknown key, wrong type, bad value."""

    exit_code: ClassVar[int] = 2


class ScanError(DuExporterError):
    """A root could not be scanned at all (missing, not a directory)."""


class StoreError(DuExporterError):
    """The SQLite database cannot be opened, read or written."""


class MigrationError(StoreError):
    """The database schema cannot be brought to this version."""


class ScanAbortedError(DuExporterError):
    """A scan was stopped (SIGTERM) before it completed; nothing is kept."""


class Unhealthy(DuExporterError):  # noqa: N818 - what the probe found
    """``healthcheck``: the exporter did not answer ``/-/healthy`` with 200."""


class NotFound(DuExporterError):  # noqa: N818 - the HTTP status it maps to
    """A path that is not a directory of the last complete scan (HTTP 404)."""


class BadRequestError(DuExporterError):
    """A client's request head cannot be served; ``status`` is the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class WatchUnavailableError(DuExporterError):
    """fanotify cannot follow a root: no permission, unsupported filesystem."""
