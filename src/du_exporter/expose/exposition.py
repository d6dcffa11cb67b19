"""What ``/metrics`` sends: directory families cached, self metrics fresh.

The directory families depend only on the latest complete generations
and the configuration, so they are rendered once per (generations,
config), streamed from the store straight into gzip
(:func:`~du_exporter.expose.render.render_gzip`), and only the gzip
bodies are kept until a scan completes or the config is reloaded.  A
client that does not take gzip gets them decompressed piece by piece
as they are sent: CPU, not memory.  The daemon renders them right
after each scan (:meth:`Exposition.warm`).  Scrapes are served the
bytes of the latest rendered generation (whole and consistent) while a
newer one renders; they replace them when ready.  With ``background``
(the daemon) no scrape waits for a render but the very first: a scrape
that sees a newer generation (or config) nobody renders yet starts its
render in a thread of its own and is answered with the previous bytes.
Without it, that scrape renders itself (the others still do not wait).

A cache hit costs no database work when the daemon supplies the
generation counter it bumps after each scan (``key_source``); the small
self metrics are rendered at most once per ``fresh_ttl`` seconds.

Gzip answers are a series of gzip members (each family's samples, its
headers, then the fresh self metrics), which every gzip reader
(Prometheus' included) decodes as one stream.  The cached members are
sent as the bytes objects they are kept in, without a copy per body.
"""

from __future__ import annotations

import gzip
import threading
import time

from collections.abc import Callable, Iterator
from itertools import chain

import structlog

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder

from du_exporter.config import Config
from du_exporter.errors import StoreError
from du_exporter.expose.render import GZIP_LEVEL, Gzipped, gunzip, render_gzip
from du_exporter.store.reader import Reader
from du_exporter.web.server import Body


_OPENMETRICS = "application/openmetrics-text"

Encoder = Callable[[CollectorRegistry], bytes]


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
        background: bool = False,
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
        #: A newer generation is rendered off the scrape that saw it.
        self.background = background
        #: Held by whichever thread renders (one at a time).
        self._render_lock = threading.Lock()
        self._bodies: tuple[object, Gzipped] | None = None
        self._fresh: dict[tuple[str, bool], tuple[float, object, bytes]] = {}

    def _key(self) -> object:
        source = self.key_source or self.reader.generation_key
        return (source(), self.config())

    def render(self, accept: str, gz: bool) -> tuple[Body, str, bool]:
        """Body, content type, gzipped: the shape ``Pages.render`` takes."""
        try:
            encoder, content_type = choose_encoder(accept)
        except (TypeError, ValueError):  # a malformed version=: plain text
            encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
        om = content_type.startswith(_OPENMETRICS)
        key, cached = self._cached()
        fresh = self._fresh_half(encoder, om, gz, key)
        members = cached.members(openmetrics=om)
        if gz:
            length = sum(map(len, members)) + len(fresh)
            return Body(length, (*members, fresh)), content_type, gz
        size = cached.openmetrics_size if om else cached.text_size
        pieces: Iterator[bytes] = chain(
            chain.from_iterable(map(gunzip, members)), (fresh,)
        )
        return Body(size + len(fresh), pieces), content_type, gz

    def warm(self) -> None:
        """Render now (after a scan), not in a scrape."""
        self._render(self._key())

    def _cached(self) -> tuple[object, Gzipped]:
        key = self._key()
        bodies = self._bodies
        if bodies is None:  # the very first: every scrape waits for it
            return self._render(key)
        if bodies[0] == key:
            return bodies
        # A new generation (or config): one thread renders it; scrapes
        # keep getting the previous, complete one meanwhile.
        if not self._render_lock.acquire(blocking=False):
            return bodies
        if not self.background:
            try:
                return self._render_held(key)
            finally:
                self._render_lock.release()
        try:
            threading.Thread(
                target=self._render_behind, args=(key,),
                name="du-exporter-render", daemon=True,
            ).start()
        except BaseException:
            self._render_lock.release()
            raise
        return bodies

    def _render_behind(self, key: object) -> None:
        """A render no scrape waits for; the lock is held on entry."""
        try:
            self._render_held(key)
        except StoreError as e:
            structlog.get_logger().error("render_failed", error=str(e))
        finally:
            self._render_lock.release()

    def _render(self, key: object) -> tuple[object, Gzipped]:
        with self._render_lock:
            return self._render_held(key)

    def _render_held(self, key: object) -> tuple[object, Gzipped]:
        current = self._bodies
        if current is not None and current[0] == key:
            return current  # rendered while this thread waited
        # The data is at least as new as the key read before it, so
        # it never serves older numbers under a newer key.
        bodies = (key, render_gzip(self.reader, self.config()))
        # The old bodies go as soon as no answer still sends them.
        self._bodies = bodies
        return bodies

    def _fresh_half(
        self, encoder: Encoder, om: bool, gz: bool, key: object
    ) -> bytes:
        """The self metrics, reused for ``fresh_ttl`` within one key (so
        they never lag behind the generation they are sent with)."""
        now = self.clock()
        key = (key, self.fresh_key())
        fmt = _OPENMETRICS if om else "text/plain"
        hit = self._fresh.get((fmt, gz))
        if hit is not None and now - hit[0] < self.fresh_ttl and hit[1] == key:
            return hit[2]
        body = encoder(self.fresh)
        if gz:
            body = gzip.compress(body, GZIP_LEVEL, mtime=0)
        self._fresh[fmt, gz] = (now, key, body)
        return body
