"""du-exporter: exact per-directory disk usage for Prometheus."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Lazy: scan workers import this package and must stay small, and
    # importlib.metadata costs a few MiB.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        try:
            return version("du-exporter")
        except PackageNotFoundError:  # running from a source tree
            return "0.0.0+unknown"
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
