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
import shutil
import tempfile
import zlib

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
#: Bytes copied at a time from a spilled family into the textfile.
_COPY = 1 << 20

#: prometheus_client's number format (Go's), typed.
_go_float: Callable[[float], str] = floatToGoString


#: The smallest positive integer Go (and prometheus_client) writes with
#: an exponent (``1e+06``).
_GO_EXPONENT = 1_000_000
#: Python's ``repr`` of a float has this many digits before the point
#: when Go switches to an exponent (``1e+06`` again).
_GO_DOT = 6


def _value(value: float) -> str:
    """``floatToGoString(value)``, without its float round trip for the
    common small integers (which print as ``N.0``) nor its checks for
    infinities and NaN on finite values."""
    if type(value) is int:
        if -(1 << 53) < value < _GO_EXPONENT:
            return f"{value}.0"
        value = float(value)
    if value - value != 0.0:  # inf or NaN
        return _go_float(value)
    s = repr(value)
    dot = s.find(".")
    if value > 0 and dot > _GO_DOT:
        # Go switches to an exponent sooner than Python (as
        # floatToGoString does, trailing zeros and point stripped).
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _path_label(path: bytes) -> str:
    """``_escape_label(label_path(path))``: a path as an escaped label
    value.  Most paths are UTF-8 without a backslash, quote or newline,
    and are only decoded."""
    try:
        text = path.decode()
    except UnicodeDecodeError:
        return _escape_label(label_path(path))
    if "\\" in text or '"' in text or "\n" in text:
        return _escape_label(label_path(path))
    return text


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
    """The directory families of one generation in both formats, as the
    gzip members a body is sent as: each family's samples are kept once,
    shared by both formats (only the small header members differ), and
    never joined into one copy per format."""

    #: Per format (text, OpenMetrics without ``# EOF``): the members of
    #: its body, in order.
    text_members: tuple[bytes, ...]
    openmetrics_members: tuple[bytes, ...]
    #: Their lengths once decompressed.
    text_size: int
    openmetrics_size: int

    def members(self, *, openmetrics: bool) -> tuple[bytes, ...]:
        return self.openmetrics_members if openmetrics else self.text_members

    @property
    def text(self) -> bytes:
        """The text body as one gzip stream (a copy: for tests, tools)."""
        return b"".join(self.text_members)

    @property
    def openmetrics(self) -> bytes:
        """The OpenMetrics body as one gzip stream (a copy)."""
        return b"".join(self.openmetrics_members)

    @property
    def resident(self) -> int:
        """Compressed bytes held, shared members counted once."""
        unique = {id(m): len(m) for m in (*self.text_members,
                                          *self.openmetrics_members)}
        return sum(unique.values())


class _Family:
    """One per-directory family's sample lines, handed to ``sink`` a
    chunk at a time."""

    def __init__(self, spec: DirectorySpec, sink: Callable[[bytes], object]) -> None:
        self.spec = spec
        self.prefix = spec.name + '{level="'
        self.lines: list[str] = []
        self.size = 0
        self.sink = sink

    def flush(self) -> None:
        data = "".join(self.lines).encode()
        self.lines.clear()
        self.size += len(data)
        self.sink(data)


class _Deflate:
    """One gzip member, compressed as its pieces come."""

    def __init__(self) -> None:
        self._zip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        self._out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._out.append(self._zip.compress(data))

    def member(self) -> bytes:
        self._out.append(self._zip.flush())
        return b"".join(self._out)

    def close(self) -> None:
        self._out.clear()


def _stream(reader: Reader, cfg: Config, families: list[_Family]) -> list[Metric]:
    """One pass over the exported rows of one read transaction: each
    row's lines go to its families, in path order.  Returns the other
    families of the same snapshot (histogram, generation facts).

    The loop is written out for the four per-directory families (size,
    files, directories, mtime, in that order): a family turned off still
    gets its lines formatted, into a list that is thrown away.
    """
    levels = root_levels(cfg.roots)
    every = directory_specs(cfg, every=True)
    by_name = {f.spec.name: f for f in families}
    scratch: list[str] = []
    lines = [by_name[s.name].lines if s.name in by_name else scratch for s in every]
    p0, p1, p2, p3 = (s.name + '{level="' for s in every)
    a0, a1, a2, a3 = (out.append for out in lines)
    value, label, level_of = _value, _path_label, levels.get
    with reader.session() as session:
        snap = Snapshot(generations=session.latest_generations(), rows=[])
        for gen in snap.generations.values():
            n = 0
            rows = session.columns(gen.id, [s.column for s in every])
            for path, root, level, v0, v1, v2, v3 in rows:
                if level > level_of(root, -1):
                    continue  # from a root or level no longer configured
                tail = f'{level}",path="{label(path)}"}} '
                # Most counts are small integers (``N.0``).
                a0(f"{p0}{tail}{v0}.0\n" if type(v0) is int and 0 <= v0 < _GO_EXPONENT
                   else f"{p0}{tail}{value(v0)}\n")
                a1(f"{p1}{tail}{v1}.0\n" if type(v1) is int and 0 <= v1 < _GO_EXPONENT
                   else f"{p1}{tail}{value(v1)}\n")
                a2(f"{p2}{tail}{v2}.0\n" if type(v2) is int and 0 <= v2 < _GO_EXPONENT
                   else f"{p2}{tail}{value(v2)}\n")
                a3(f"{p3}{tail}{value(v3)}\n")
                n += 1
                if n == _CHUNK_LINES:
                    n = 0
                    scratch.clear()
                    for family in families:
                        family.flush()
        rest = [*histogram_family(cfg, snap), *generation_families(cfg, snap)]
    for family in families:
        family.flush()
    return rest


def render_gzip(reader: Reader, cfg: Config) -> Gzipped:
    """The directory families, compressed as they stream off the store.

    One pass over the rows of one read transaction; each family's
    samples become one gzip member, shared by both formats (only the
    ``# HELP``/``# TYPE`` members differ).  Only compressed bytes are
    kept.
    """
    zips = [_Deflate() for _ in directory_specs(cfg)]
    families = [
        _Family(spec, z.write)
        for spec, z in zip(directory_specs(cfg), zips, strict=True)
    ]
    rest = _stream(reader, cfg, families)
    bodies: list[list[bytes]] = [[], []]
    sizes = [0, 0]
    # The family's pieces are freed as its member is made, before the
    # next one is joined: the render holds about one body, not two.
    for family, z in zip(families, zips, strict=True):
        samples = z.member()
        z.close()
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
    return Gzipped(tuple(bodies[0]), tuple(bodies[1]), sizes[0], sizes[1])


def write_text(reader: Reader, cfg: Config, out: BinaryIO, spill: Path) -> None:
    """The directory families as the text format, written to ``out``
    as they stream off the store (mode ``file``: nothing to compress).

    The first family goes straight to ``out``; the others, whose lines
    come in the same pass, wait in unnamed temporary files in directory
    ``spill`` and are copied after it, so memory stays flat.
    """
    specs = directory_specs(cfg)
    with ExitStack() as stack:
        spills = [stack.enter_context(tempfile.TemporaryFile(dir=spill))
                  for _ in specs[1:]]
        families = [
            _Family(spec, sink.write)
            for spec, sink in zip(specs, [out, *spills], strict=True)
        ]
        first = specs[0]
        out.write(header(first.name, first.doc, first.kind,
                         openmetrics=False).encode())
        rest = _stream(reader, cfg, families)
        for spec, spilled in zip(specs[1:], spills, strict=True):
            out.write(header(spec.name, spec.doc, spec.kind,
                             openmetrics=False).encode())
            spilled.seek(0)
            shutil.copyfileobj(spilled, out, _COPY)
    out.write(format_families(rest, openmetrics=False))


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
