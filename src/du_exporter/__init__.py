"""du-exporter: exact per-directory disk usage for Prometheus."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("du-exporter")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0+unknown"


__version__ = _version()
