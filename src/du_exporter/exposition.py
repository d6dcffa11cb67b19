"""What ``/metrics`` sends: directory families cached, self metrics fresh.

The directory families depend only on the latest complete generations
and the configuration, so they are rendered once per (generations,
config, format) and the bytes -- also gzipped -- are reused until a scan
completes or the config is reloaded.  A scrape of an unchanged store
costs one small query (the generation check) plus the self metrics,
which are small and always rendered fresh (scan progress, process
metrics).

Gzip answers are two gzip members, cached then fresh, which every gzip
reader (Prometheus' included) decodes as one stream.
"""

from __future__ import annotations

import gzip
import threading

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from du_exporter.collect import directory_families
from du_exporter.config import Config
from du_exporter.store import Reader


_EOF = b"# EOF\n"
_GZIP_LEVEL = 6


class _Families(Collector):
    """A fixed list of families, in the shape encoders expect."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class Exposition:
    """Renders ``/metrics`` for one exporter; safe to call from threads."""

    def __init__(
        self,
        reader: Reader,
        config: Callable[[], Config],
        fresh: CollectorRegistry,
    ) -> None:
        self.reader = reader
        self.config = config
        self.fresh = fresh
        self._lock = threading.Lock()
        self._key: object = None
        self._cache: dict[tuple[str, bool], bytes] = {}
        #: How many times the directory families were rendered (a miss).
        self.renders = 0

    def render(self, accept: str, gz: bool) -> tuple[bytes, str, bool]:
        """Body, content type, gzipped: the shape ``Pages.render`` takes."""
        try:
            encoder, content_type = choose_encoder(accept)
        except (TypeError, ValueError):  # a malformed version=: plain text
            encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
        fmt = content_type.split(";", 1)[0]
        cached = self._cached(encoder, fmt, gz)
        fresh = encoder(self.fresh)
        if gz:
            fresh = gzip.compress(fresh, _GZIP_LEVEL, mtime=0)
        return cached + fresh, content_type, gz

    def _cached(
        self, encoder: Callable[[CollectorRegistry], bytes], fmt: str, gz: bool
    ) -> bytes:
        cfg = self.config()
        key = (self.reader.generation_key(), cfg)
        with self._lock:  # one render per new generation, not one per scraper
            if key != self._key:
                self._cache = {}
                self._key = key
            if (fmt, False) not in self._cache:
                snap = self.reader.snapshot()
                if (snap.key, cfg) != key:  # a scan completed meanwhile
                    self._key = (snap.key, cfg)
                families = CollectorRegistry(auto_describe=False)
                families.register(_Families(directory_families(cfg, snap)))
                body = encoder(families)
                body = body.removesuffix(_EOF)  # the fresh half ends it
                self._cache[fmt, False] = body
                self.renders += 1
            if gz and (fmt, True) not in self._cache:
                self._cache[fmt, True] = gzip.compress(
                    self._cache[fmt, False], _GZIP_LEVEL, mtime=0
                )
            return self._cache[fmt, gz]
