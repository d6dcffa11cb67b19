"""The directory families as bytes, straight from the store.

Rows stream off one SQLite read transaction into text, a few thousand
lines at a time: no Python object per series, so memory stays flat
however many directories are exported.  They are compressed
as they come, once per generation (:func:`render_gzip`); the ``/metrics``
cache keeps only those bytes, and the textfile of mode ``file``
(:mod:`du_exporter.expose.textfile`) is their decompression.

The output is byte for byte what prometheus_client's text and
OpenMetrics encoders write for the same families (a test holds them
equal over hostile paths): sample lines are the same in both formats,
only the ``# HELP``/``# TYPE`` lines differ, so the gzip bodies of the
two formats share one compressed member per family's samples.
"""

from __future__ import annotations

import gzip
import zlib

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from du_exporter.config import Config
from du_exporter.expose.families import (
    DirectorySpec,
    directory_specs,
    generation_families,
    histogram_family,
)
from du_exporter.paths import label_path, root_levels
from du_exporter.store.reader import Reader
from du_exporter.store.rows import Snapshot


#: Fast: the bodies are small anyway (tens of bytes per directory).
GZIP_LEVEL = 1
#: Lines joined into one chunk before it is compressed or written.
_CHUNK_LINES = 4096
#: Compressed bytes :func:`gunzip` decompresses at a time.
_IN = 1 << 14

#: prometheus_client's number format (Go's), typed.
_go_float: Callable[[float], str] = floatToGoString


#: The smallest positive integer Go (and prometheus_client) writes with
#: an exponent (``1e+06``).
_GO_EXPONENT = 1_000_000


def _value(value: float) -> str:
    """``floatToGoString(value)``, without a float round trip for the
    common small integers (which print as ``N.0``)."""
    if type(value) is int and -(1 << 53) < value < _GO_EXPONENT:
        return f"{value}.0"
    return _go_float(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str, *, openmetrics: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if openmetrics else text


def header(name: str, doc: str, kind: str, *, openmetrics: bool) -> str:
    """The ``# HELP`` and ``# TYPE`` lines of a family."""
    if kind == "unknown" and not openmetrics:
        kind = "untyped"
    return (
        f"# HELP {name} {_escape_help(doc, openmetrics=openmetrics)}\n"
        f"# TYPE {name} {kind}\n"
    )


def format_families(families: Iterable[Metric], *, openmetrics: bool) -> bytes:
    """Gauge, untyped and histogram families as the text format (or
    OpenMetrics, without ``# EOF``), as prometheus_client writes them,
    without its per-label-name validation."""
    out: list[str] = []
    for family in families:
        out.append(
            header(family.name, family.documentation, family.type,
                   openmetrics=openmetrics)
        )
        for sample in family.samples:
            labels = ",".join(
                f'{k}="{_escape_label(v)}"' for k, v in sorted(sample.labels.items())
            )
            body = f"{{{labels}}}" if labels else ""
            out.append(f"{sample.name}{body} {_value(sample.value)}\n")
    return "".join(out).encode()


@dataclass(frozen=True)
class Gzipped:
    """The directory families of one generation in both formats."""

    #: gzip body (a series of gzip members) of the text format and of
    #: OpenMetrics (without ``# EOF``).
    text: bytes
    openmetrics: bytes
    #: Their lengths once decompressed.
    text_size: int
    openmetrics_size: int


class _Family:
    """One per-directory family's samples, compressed as they come."""

    def __init__(self, spec: DirectorySpec) -> None:
        self.spec = spec
        self.prefix = spec.name + '{level="'
        self.lines: list[str] = []
        self.size = 0
        self._zip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        self._out: list[bytes] = []

    def flush(self) -> None:
        data = "".join(self.lines).encode()
        self.lines.clear()
        self.size += len(data)
        self._out.append(self._zip.compress(data))

    def member(self) -> bytes:
        self.flush()
        self._out.append(self._zip.flush())
        return b"".join(self._out)


def render_gzip(reader: Reader, cfg: Config) -> Gzipped:
    """The directory families, compressed as they stream off the store.

    One pass over the rows of one read transaction; each family's
    samples become one gzip member, shared by both formats (only the
    ``# HELP``/``# TYPE`` members differ).  Only compressed bytes are
    kept.
    """
    families = [_Family(spec) for spec in directory_specs(cfg)]
    columns = [f.spec.column for f in families]
    levels = root_levels(cfg.roots)
    with reader.session() as session:
        snap = Snapshot(generations=session.latest_generations(), rows=[])
        for gen in snap.generations.values():
            n = 0
            for path, root, level, *values in session.columns(gen.id, columns):
                if level > levels.get(root, -1):
                    continue  # from a root or level no longer configured
                labels = f'{level}",path="{_escape_label(label_path(path))}"}} '
                for family, value in zip(families, values, strict=True):
                    family.lines.append(f"{family.prefix}{labels}{_value(value)}\n")
                n += 1
                if n % _CHUNK_LINES == 0:
                    for family in families:
                        family.flush()
        rest = [*histogram_family(cfg, snap), *generation_families(cfg, snap)]
    bodies: list[list[bytes]] = [[], []]
    sizes = [0, 0]
    for family in families:
        samples = family.member()
        spec = family.spec
        for om, body in enumerate(bodies):
            head = header(spec.name, spec.doc, spec.kind, openmetrics=bool(om))
            data = head.encode()
            body.extend((gzip.compress(data, GZIP_LEVEL, mtime=0), samples))
            sizes[om] += len(data) + family.size
    for om, body in enumerate(bodies):
        data = format_families(rest, openmetrics=bool(om))
        body.append(gzip.compress(data, GZIP_LEVEL, mtime=0))
        sizes[om] += len(data)
    text, openmetrics = (b"".join(body) for body in bodies)
    return Gzipped(text, openmetrics, sizes[0], sizes[1])


def gunzip(data: bytes) -> Iterator[bytes]:
    """Decompress a series of gzip members piece by piece, so a client
    that does not take gzip costs CPU, not a whole decompressed body."""
    view = memoryview(data)
    d = zlib.decompressobj(31)
    for pos in range(0, len(view), _IN):
        chunk: bytes | memoryview = view[pos:pos + _IN]
        while chunk:
            out = d.decompress(chunk)
            if out:
                yield out
            chunk = b""
            if d.eof:  # the next member starts in what is left
                chunk = d.unused_data
                d = zlib.decompressobj(31)
