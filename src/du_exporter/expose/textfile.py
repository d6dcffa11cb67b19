"""The textfile of mode ``file``, written atomically.

The directory families are rendered as for ``/metrics`` (streamed from
the store, no Python object per series) but written as they come,
uncompressed; the self metrics follow.  The file is
written beside its final path and renamed over it, so the node
exporter's textfile collector never reads half of it.
"""

from __future__ import annotations

import contextlib
import os

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from du_exporter.config import Config
from du_exporter.errors import DuExporterError
from du_exporter.expose.render import write_text
from du_exporter.store.reader import Reader


def write_textfile(
    path: Path, reader: Reader, config: Config, health: CollectorRegistry
) -> None:
    """Directory families of ``reader``'s latest generations, then
    ``health``, as the text format at ``path``.

    Raises :class:`DuExporterError` (one line) when it cannot be written.
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with open(fd, "wb") as out:
            write_text(reader, config, out, path.parent)
            out.write(generate_latest(health))
        os.rename(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        msg = f"output-file {str(path)!r}: cannot write: {e.strerror}"
        raise DuExporterError(msg) from None
