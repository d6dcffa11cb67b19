"""du-exporter: exact per-directory disk usage for Prometheus."""

from __future__ import annotations


#: The package version (pyproject.toml reads it from here): a literal, so
#: that neither the exporter nor its workers import importlib.metadata
#: (2.4 MiB) to learn it.
__version__ = "0.2.0"
