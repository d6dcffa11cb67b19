"""The directory families as bytes, straight from the store.

Rows stream off one SQLite read transaction into text, a few thousand
lines at a time: no Python object per series, so memory stays flat
however many directories are exported.  The same stream feeds the
``/metrics`` cache (gzipped once per generation, :func:`render_gzip`)
and the textfile of mode ``file`` (:mod:`du_exporter.expose.textfile`).

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
from du_exporter.store.reader import Reader, ReadSession
from du_exporter.store.rows import Snapshot


GZIP_LEVEL = 6
#: Lines joined into one chunk before it is compressed or written.
_CHUNK_LINES = 4096
#: Compressed bytes :func:`gunzip` decompresses at a time.
_IN = 1 << 14

#: prometheus_client's number format (Go's), typed.
_value: Callable[[float], str] = floatToGoString


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


#: A piece of the exposition: ``(text, openmetrics)`` where the formats
#: differ (headers, the small families), or bytes common to both.
Piece = tuple[bytes, bytes] | bytes


def _samples(
    session: ReadSession, cfg: Config, snap: Snapshot, spec: DirectorySpec
) -> Iterator[bytes]:
    levels = root_levels(cfg.roots)
    prefix = spec.name + '{level="'
    out: list[str] = []
    for gen in snap.generations.values():
        for path, root, level, value in session.column(gen.id, spec.column):
            if level > levels.get(root, -1):
                continue  # from a root or level no longer configured
            out.append(
                f'{prefix}{level}",path="{_escape_label(label_path(path))}"}}'
                f" {_value(value)}\n"
            )
            if len(out) == _CHUNK_LINES:
                yield "".join(out).encode()
                out.clear()
    if out:
        yield "".join(out).encode()


def pieces(session: ReadSession, cfg: Config) -> Iterator[Piece]:
    """Every directory family of the latest generations, in order."""
    snap = Snapshot(generations=session.latest_generations(), rows=[])
    for spec in directory_specs(cfg):
        yield tuple(  # type: ignore[misc]
            header(spec.name, spec.doc, spec.kind, openmetrics=om).encode()
            for om in (False, True)
        )
        yield from _samples(session, cfg, snap, spec)
    rest = [*histogram_family(cfg, snap), *generation_families(cfg, snap)]
    yield tuple(  # type: ignore[misc]
        format_families(rest, openmetrics=om) for om in (False, True)
    )


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


def render_gzip(reader: Reader, cfg: Config) -> Gzipped:
    """Compress the exposition once, as it streams off the store.

    Only the compressed bodies are kept: one family's samples are one
    gzip member, shared by both formats.
    """
    text: list[bytes] = []
    om: list[bytes] = []
    sizes = [0, 0]
    shared: list[bytes] = []
    compressor = None
    for piece in _read_pieces(reader, cfg):
        if isinstance(piece, bytes):
            if compressor is None:
                compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
            shared.append(compressor.compress(piece))
            sizes[0] += len(piece)
            sizes[1] += len(piece)
            continue
        if compressor is not None:
            shared.append(compressor.flush())
            member = b"".join(shared)
            text.append(member)
            om.append(member)
            shared.clear()
            compressor = None
        for i, (out, part) in enumerate(zip((text, om), piece, strict=True)):
            out.append(gzip.compress(part, GZIP_LEVEL, mtime=0))
            sizes[i] += len(part)
    return Gzipped(b"".join(text), b"".join(om), sizes[0], sizes[1])


def _read_pieces(reader: Reader, cfg: Config) -> Iterator[Piece]:
    with reader.session() as session:
        yield from pieces(session, cfg)


def text_chunks(reader: Reader, cfg: Config) -> Iterator[bytes]:
    """The text format, streamed (the textfile)."""
    for piece in _read_pieces(reader, cfg):
        yield piece if isinstance(piece, bytes) else piece[0]


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
