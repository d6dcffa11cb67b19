"""Logging: the one ``structlog.configure()`` call, one event per line.

Global state department: structlog's configuration is process-wide, so
it is set here and nowhere else.
"""

from __future__ import annotations

import logging
import sys

from io import TextIOBase
from typing import TextIO, cast

import structlog


#: The ``log-level`` values.
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str = "info", fmt: str = "auto", stream: TextIO | TextIOBase | None = None
) -> None:
    """Log to ``stream`` (stderr): JSON, or console lines on a terminal."""
    out = stream if stream is not None else sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, out)),
        cache_logger_on_first_use=False,
    )
