"""What ``/metrics`` sends: directory families cached, self metrics fresh.

The directory families depend only on the latest complete generations
and the configuration, so they are rendered once per (generations,
config, format) and the bytes -- also gzipped -- are reused until a scan
completes or the config is reloaded.  The daemon renders them right
after each scan (:meth:`Exposition.warm`), so scrapes do not wait for a
render; if one ever does, the other scrapers keep getting the previous
generation's bytes (whole and consistent) until the new ones are ready.

A cache hit costs no database work when the daemon supplies the
generation counter it bumps after each scan (``key_source``); the small
self metrics are rendered at most once per ``fresh_ttl`` seconds.

Gzip answers are two gzip members, cached then fresh, which every gzip
reader (Prometheus' included) decodes as one stream.
"""

from __future__ import annotations

import gzip
import threading
import time

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from du_exporter.config import Config
from du_exporter.expose.families import directory_families
from du_exporter.store.reader import Reader


_EOF = b"# EOF\n"
_GZIP_LEVEL = 6
_OPENMETRICS = "application/openmetrics-text"
_FORMATS = ("text/plain", _OPENMETRICS)

Encoder = Callable[[CollectorRegistry], bytes]


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


#: prometheus_client's number format (Go's), typed.
_value: Callable[[float], str] = floatToGoString


def format_families(families: Iterable[Metric], *, openmetrics: bool) -> bytes:
    """Families as the text format (or OpenMetrics, without ``# EOF``).

    Byte for byte what prometheus_client's encoders write for these
    families (a test holds them equal), about five times faster: it
    skips their per-label-name validation, which dominates at 100,000
    series.
    """
    out: list[str] = []
    for family in families:
        kind = family.type
        if kind == "unknown" and not openmetrics:
            kind = "untyped"
        out.append(
            f"# HELP {family.name} {_escape_help(family.documentation)}\n"
            f"# TYPE {family.name} {kind}\n"
        )
        for sample in family.samples:
            labels = ",".join(
                f'{k}="{_escape_label(v)}"' for k, v in sorted(sample.labels.items())
            )
            body = f"{{{labels}}}" if labels else ""
            out.append(f"{sample.name}{body} {_value(sample.value)}\n")
    return "".join(out).encode()


@dataclass
class _Bodies:
    """The rendered directory families of one key, per (format, gzip)."""

    key: object
    data: dict[tuple[str, bool], bytes] = field(default_factory=dict)


class Exposition:
    """Renders ``/metrics`` for one exporter; safe to call from threads."""

    def __init__(
        self,
        reader: Reader,
        config: Callable[[], Config],
        fresh: CollectorRegistry,
        *,
        key_source: Callable[[], object] | None = None,
        fresh_ttl: float = 0.0,
        fresh_key: Callable[[], object] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.config = config
        self.fresh = fresh
        self.key_source = key_source
        self.fresh_ttl = fresh_ttl
        #: The self metrics are rendered again as soon as this changes
        #: (a scan started or ended), whatever ``fresh_ttl`` says.
        self.fresh_key = fresh_key
        self.clock = clock
        self._render_lock = threading.Lock()
        self._bodies: _Bodies | None = None
        self._fresh: dict[tuple[str, bool], tuple[float, object, bytes]] = {}
        #: How many times the directory families were rendered (a miss).
        self.renders = 0

    def _key(self) -> object:
        source = self.key_source or self.reader.generation_key
        return (source(), self.config())

    def render(self, accept: str, gz: bool) -> tuple[bytes, str, bool]:
        """Body, content type, gzipped: the shape ``Pages.render`` takes."""
        try:
            encoder, content_type = choose_encoder(accept)
        except (TypeError, ValueError):  # a malformed version=: plain text
            encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
        fmt = _OPENMETRICS if content_type.startswith(_OPENMETRICS) else "text/plain"
        key, cached = self._cached(fmt, gz)
        return cached + self._fresh_half(encoder, fmt, gz, key), content_type, gz

    def warm(self) -> None:
        """Render every format now (after a scan), not in a scrape."""
        bodies = self._render(self._key())
        for fmt in _FORMATS:
            self._body(bodies, fmt, gz=True)

    def _cached(self, fmt: str, gz: bool) -> tuple[object, bytes]:
        key = self._key()
        bodies = self._bodies
        if bodies is not None and bodies.key != key:
            # A new generation (or config): one scraper renders it; the
            # others keep serving the previous, complete one meanwhile.
            if self._render_lock.acquire(blocking=False):
                self._render_lock.release()
                bodies = self._render(key)
        elif bodies is None:
            bodies = self._render(key)
        return bodies.key, self._body(bodies, fmt, gz)

    def _render(self, key: object) -> _Bodies:
        with self._render_lock:
            current = self._bodies
            if current is not None and current.key == key:
                return current  # rendered while this thread waited
            cfg = self.config()
            snap = self.reader.snapshot()
            families = list(directory_families(cfg, snap))
            bodies = _Bodies(key)
            for fmt in _FORMATS:
                bodies.data[fmt, False] = format_families(
                    families, openmetrics=fmt == _OPENMETRICS
                )
            # The data is at least as new as the key read before the
            # snapshot, so it never serves older numbers under a newer key.
            self._bodies = bodies
            self.renders += 1
            return bodies

    @staticmethod
    def _body(bodies: _Bodies, fmt: str, gz: bool) -> bytes:
        if gz and (fmt, True) not in bodies.data:
            bodies.data[fmt, True] = gzip.compress(
                bodies.data[fmt, False], _GZIP_LEVEL, mtime=0
            )
        return bodies.data[fmt, gz]

    def _fresh_half(
        self, encoder: Encoder, fmt: str, gz: bool, key: object
    ) -> bytes:
        """The self metrics, reused for ``fresh_ttl`` within one key (so
        they never lag behind the generation they are sent with)."""
        now = self.clock()
        key = (key, self.fresh_key())
        hit = self._fresh.get((fmt, gz))
        if hit is not None and now - hit[0] < self.fresh_ttl and hit[1] == key:
            return hit[2]
        body = encoder(self.fresh)
        if gz:
            body = gzip.compress(body, _GZIP_LEVEL, mtime=0)
        self._fresh[fmt, gz] = (now, key, body)
        return body
