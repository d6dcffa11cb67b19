"""/metrics rendering: cached per generation, consistent, negotiated."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import os
import shutil
import threading

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_parse,
)

from du_exporter.expose.exposition import Exposition
from du_exporter.expose.families import directory_families
from du_exporter.expose.render import (
    _value,
    format_families,
    gunzip,
    render_gzip,
    write_text,
)
from du_exporter.store.reader import Reader, ReadSession
from du_exporter.store.rows import UnitRow
from du_exporter.store.writer import Store
from du_exporter.web.server import Body, Pages, ServerHandle, start_server
from exporter import parse, sizes
from helpers import Scanner, du_labels, trace_sql, write


OM = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def whole(body: Body) -> bytes:
    data = b"".join(body.pieces)
    assert body.length == len(data)
    return data


def renders(queries: list[str]) -> int:
    """Directory families rendered: each reads the rows of every
    per-directory family from the store."""
    return sum("FROM units" in q for q in queries)


class Fixture:
    def __init__(self, scanner: Scanner, root: Path, queries: list[str]) -> None:
        self.scanner = scanner
        self.root = root
        self.cfg = scanner.config(analyzed_path=str(root), dir_level=1)
        self.queries = queries
        self.fresh = CollectorRegistry()
        self.gauge = Gauge("fresh_value", "changes per scrape", registry=self.fresh)
        reader = Reader(self.cfg.db_path)
        self.exp = Exposition(reader, lambda: self.cfg, self.fresh)

    def scan(self) -> None:
        self.scanner.scan(analyzed_path=str(self.root), dir_level=1)

    def text(self, accept: str = "", encoding: str = "") -> str:
        body, _, gzipped = self.exp.render(accept, "gzip" in encoding)
        data = whole(body)
        return (gzip.decompress(data) if gzipped else data).decode()


def make(scanner: Scanner, tmp_path: Path, monkeypatch) -> Fixture:
    root = tmp_path / "t"
    write(root / "a" / "f", 10_000)
    write(root / "b" / "g", 20_000)
    fx = Fixture(scanner, root, trace_sql(monkeypatch))
    fx.scan()
    return fx


class TestCache:
    """The directory families are rendered once per generation."""

    def test_unchanged_generation_is_not_read_again(self, scanner_auto, tmp_path, monkeypatch):
        fx = make(scanner_auto, tmp_path, monkeypatch)
        first = fx.text()
        assert renders(fx.queries)
        fx.queries.clear()
        for i in range(5):
            fx.gauge.set(i)
            text = fx.text()
            assert f"fresh_value {float(i)}" in text  # fresh half is fresh
        assert [] == [q for q in fx.queries if "FROM units" in q]
        assert sizes(parse(first)) == sizes(parse(text))

    def test_new_generation_is_rendered(self, scanner_auto, tmp_path, monkeypatch):
        fx = make(scanner_auto, tmp_path, monkeypatch)
        fx.text()
        shutil.rmtree(fx.root / "b")
        write(fx.root / "c" / "h", 50_000)
        fx.scan()
        fx.queries.clear()
        text = fx.text()
        assert renders(fx.queries)
        assert du_labels(fx.root, "-B1", "--max-depth=1") == sizes(parse(text))

    def test_running_scan_is_invisible(self, scanner_auto, tmp_path, monkeypatch):
        """A generation being written never shows, not even in part."""
        fx = make(scanner_auto, tmp_path, monkeypatch)
        before = sizes(parse(fx.text()))
        store = Store.open(fx.cfg.db_path)
        try:
            gen = store.begin_generation(os.fsencode(fx.root), 0.0)
            row = UnitRow(0, None, 0, os.fsencode(fx.root), os.fsencode(fx.root),
                          0, 1, 1, 0, 0, 0.0)
            store.write_batch(gen, [row], [])
            assert before == sizes(parse(fx.text()))
            assert before == sizes(parse(whole(Exposition(Reader(fx.cfg.db_path), lambda: fx.cfg, fx.fresh).render("", False)[0]).decode()))
        finally:
            store.close()


class TestFormats:
    """Text, OpenMetrics and gzip carry the same samples."""

    def test_openmetrics_ends_once(self, scanner_auto, tmp_path, monkeypatch):
        fx = make(scanner_auto, tmp_path, monkeypatch)
        text = fx.text(OM)
        assert text.endswith("# EOF\n")
        assert 1 == text.count("# EOF")
        names = {f.name for f in om_parse(text)}  # type: ignore[no-untyped-call]
        assert {"node_disk_usage_bytes", "fresh_value"} <= names

    def test_gzip_is_the_same_text(self, scanner_auto, tmp_path, monkeypatch):
        fx = make(scanner_auto, tmp_path, monkeypatch)
        plain = fx.text()
        assert plain == fx.text(encoding="gzip")
        assert fx.text(OM) == fx.text(OM, "gzip, deflate")
        assert du_labels(fx.root, "-B1", "--max-depth=1") == sizes(parse(plain))


def reference(families) -> tuple[bytes, bytes]:
    """prometheus_client's own text and OpenMetrics output."""
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import (
        generate_latest as om_latest,
    )

    registry = CollectorRegistry(auto_describe=False)

    class Fixed:
        def collect(self):
            return iter(families)

    registry.register(Fixed())
    return generate_latest(registry), om_latest(registry)  # type: ignore[no-untyped-call]


def assert_agrees(cfg) -> bytes:
    """Streamed text, gzip bodies and their decompression, and the
    textfile's uncompressed stream, agree byte for byte with
    prometheus_client on the families built from a snapshot."""
    reader = Reader(cfg.db_path)
    families = list(directory_families(cfg, reader.snapshot()))
    text, om = reference(families)
    bodies = render_gzip(reader, cfg)
    assert text == gzip.decompress(bodies.text) == b"".join(gunzip(bodies.text))
    assert len(text) == bodies.text_size
    streamed_om = b"".join(gunzip(bodies.openmetrics))
    assert om == streamed_om + b"# EOF\n" == gzip.decompress(bodies.openmetrics) + b"# EOF\n"
    assert len(streamed_om) == bodies.openmetrics_size
    plain = io.BytesIO()
    write_text(reader, cfg, plain, cfg.db_path.parent)
    assert plain.getvalue() == text
    return text


HOSTILE = (
    b"new\nline", b'q"uote', b"back\\slash", b"bad\xff", b"\\xff",
    b'all\\"\n\xfe"', b"ctl\x01\x7f", "ünï €".encode(), b"sp ace{}=,",
)


class TestFormatter:
    """The streamed exposition is what prometheus_client's encoders write."""

    @pytest.mark.parametrize(
        "options",
        [
            {"owner_usage": True},
            {"size_mode": "apparent", "file_count": False},
            {"dir_count": False, "size_bucket": False},
        ],
    )
    def test_byte_for_byte_over_hostile_paths(self, scanner_auto, tmp_path, options):
        root = tmp_path / "t"
        write(root / "a" / "f", 10_000)
        write(root / "a" / "s", 1 << 40, sparse=True)
        for name in HOSTILE:
            d = os.fsencode(root) + b"/" + name
            os.mkdir(d)
            os.mkdir(d + b"/" + name)
            with open(d + b"/" + name + b"/" + name, "wb") as f:
                f.write(b"x" * 5000)
        cfg = scanner_auto.config(analyzed_path=str(root), dir_level=2, **options)
        scanner_auto.scan(analyzed_path=str(root), dir_level=2, **options)
        text = assert_agrees(cfg)
        flag = "-B1" if cfg.size_mode == "disk" else "-b"
        assert du_labels(root, flag, "--max-depth=2") == sizes(parse(text.decode()))

    def test_huge_values_and_many_rows(self, scanner_auto, tmp_path):
        """Values past 2**53 and Go's exponent switch, negative and
        fractional times, several chunks of lines and of gzip input."""
        top = os.fsencode(tmp_path / "data")
        store = Store.open(scanner_auto.db)
        try:
            gen = store.begin_generation(top, 1000.0)
            rows = [UnitRow(0, None, 0, top, top, 0, 4096, 4096, 0, 0, -1.5)]
            for i in range(1, 9000):
                value = (1 << 62) // 9000 + i * 7919 if i % 3 else 1234567 * i
                rows.append(UnitRow(
                    i, 0, 1, top + b"/d%05d" % i + HOSTILE[i % len(HOSTILE)],
                    top, 1, value, value // 3, i, i % 7, 1.7e9 + i / 7,
                ))
            store.write_batch(gen, rows, [])
            store.complete_generation(
                gen, finished=2000.0, entries=len(rows), unreadable=0,
                histogram=[(1024.0, 5), (float("inf"), 2)],
                histogram_sum=1 << 61, keep=2,
            )
        finally:
            store.close()
        cfg = scanner_auto.config(analyzed_path=os.fsdecode(top), dir_level=1)
        text = assert_agrees(cfg)
        assert b"e+18" in text
        assert b'le="+Inf"' in text

    def test_values_formatted_like_prometheus_client(self):
        """The formatter's shortcuts write what floatToGoString writes,
        around every switch: Go's exponent, 2**53, u64, inf and NaN."""
        from prometheus_client.utils import floatToGoString

        edges = [0, 1, 999_999, 1_000_000, 1_000_001, 10**15, 10**16,
                 2**53 - 1, 2**53, 2**53 + 1, 2**63, 2**64 - 1, -1, -(2**53),
                 -(2**60), 0.0, -0.0, 1.5, -1.5, 999_999.5, 1_000_000.0,
                 1e300, 1e-300, 5e-324, 1.7e9 + 1 / 7, 9999999999999998.0,
                 1e16, 1.5e16, float("inf"), float("-inf"), float("nan")]
        values = [v * s for v in edges for s in (1, 3, 7)]
        assert [_value(v) for v in values] == [
            floatToGoString(v) for v in values  # type: ignore[no-untyped-call]
        ]

    def test_help_and_labels_escaped_like_prometheus_client(self):
        from prometheus_client.core import (
            GaugeMetricFamily,
            HistogramMetricFamily,
            UnknownMetricFamily,
        )

        doc = 'say "hi" \\ back\\slash \\n not a newline\nnewline'
        gauge = GaugeMetricFamily("g", doc, labels=["path", "level"])
        untyped = UnknownMetricFamily("u_count", doc, labels=["path"])
        hist = HistogramMetricFamily("h", doc, labels=["path"])
        for i, name in enumerate(HOSTILE):
            label = name.decode("utf-8", "backslashreplace")
            gauge.add_metric([label, str(i)], float(10 ** (i * 3)))
            untyped.add_metric([label], 2.0 ** 70 + i)
        hist.add_metric(["x"], [("1.0", 1.0), ("+Inf", 3.0)], 1e300)
        families = [gauge, untyped, hist]
        text, om = reference(families)
        assert text == format_families(families, openmetrics=False)
        assert om == format_families(families, openmetrics=True) + b"# EOF\n"


class TestKeySource:
    """With the daemon's in-memory generation counter, a hit reads nothing."""

    def test_hit_without_queries(self, scanner_auto, tmp_path, monkeypatch):
        fx = make(scanner_auto, tmp_path, monkeypatch)
        counter = [1]
        exp = Exposition(
            Reader(fx.cfg.db_path),
            lambda: fx.cfg, fx.fresh, key_source=lambda: counter[0],
        )
        whole(exp.render("", True)[0])
        fx.queries.clear()
        for _ in range(3):
            whole(exp.render("", True)[0])
            whole(exp.render(OM, False)[0])
        assert [] == fx.queries
        counter[0] += 1
        whole(exp.render("", True)[0])
        assert renders(fx.queries)

    def test_scrapers_get_the_old_generation_while_one_renders(self, scanner_auto, tmp_path, monkeypatch):
        """During a render, others are served the previous generation whole."""
        fx = make(scanner_auto, tmp_path, monkeypatch)
        old = sizes(parse(fx.text()))
        write(fx.root / "c" / "h", 50_000)
        fx.scan()
        with fx.exp._render_lock:  # another scraper is rendering
            assert old == sizes(parse(fx.text()))
            assert old == sizes(parse(fx.text(OM)))
        new = sizes(parse(fx.text(OM)))  # and then the new one, in every format
        assert du_labels(fx.root, "-B1", "--max-depth=1") == new
        assert new == sizes(parse(fx.text()))

    def test_fresh_half_follows_the_generation(self, scanner_auto, tmp_path, monkeypatch):
        """The TTL-cached self metrics never lag behind the rows."""
        fx = make(scanner_auto, tmp_path, monkeypatch)
        exp = Exposition(Reader(fx.cfg.db_path), lambda: fx.cfg, fx.fresh, fresh_ttl=3600)
        fx.gauge.set(1)
        assert "fresh_value 1.0" in whole(exp.render("", False)[0]).decode()
        fx.gauge.set(2)
        assert "fresh_value 1.0" in whole(exp.render("", False)[0]).decode()  # cached
        fx.scan()  # a new generation: both halves are rendered again
        assert "fresh_value 2.0" in whole(exp.render("", False)[0]).decode()


class SlowReader(Reader):
    """The real store, read only once ``release`` is set after ``hold``:
    a render that takes as long as the test wants."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hold = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    @contextlib.contextmanager
    def session(self) -> Iterator[ReadSession]:
        if self.hold.is_set():
            self.entered.set()
            assert self.release.wait(30)
        with super().session() as session:
            yield session


def http_get(server: ServerHandle, accept: str, gz: bool) -> str:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        headers = {"Accept": accept, "Accept-Encoding": "gzip" if gz else "identity"}
        conn.request("GET", "/metrics", headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200
        assert (resp.headers["Content-Encoding"] == "gzip") == gz
        return (gzip.decompress(data) if gz else data).decode()
    finally:
        conn.close()


class TestBackground:
    """The daemon's way: no scrape waits for a render but the first."""

    def test_scrapes_during_a_slow_render_get_the_previous_bytes(self, scanner_auto, tmp_path, monkeypatch):
        fx = make(scanner_auto, tmp_path, monkeypatch)
        reader = SlowReader(fx.cfg.db_path)
        generation = [1]
        exp = Exposition(reader, lambda: fx.cfg, fx.fresh,
                         key_source=lambda: generation[0], background=True)
        server = start_server(Pages(render=exp.render, landing=lambda: "",
                                    ready=lambda: True))
        try:
            old = sizes(parse(http_get(server, "", True)))  # the first renders
            assert du_labels(fx.root, "-B1", "--max-depth=1") == old
            write(fx.root / "c" / "h", 50_000)
            fx.scan()
            reader.hold.set()
            generation[0] += 1  # as the daemon does after a scan
            # This scrape starts the render of the new generation and is
            # answered at once; the render now waits inside the store.
            assert old == sizes(parse(http_get(server, "", True)))
            assert reader.entered.wait(30)
            for accept, gz in (("", True), ("", False), (OM, True), (OM, False)):
                text = http_get(server, accept, gz)
                assert old == sizes(parse(text))
                assert text.endswith("# EOF\n") == (accept == OM)
            assert not reader.release.is_set()  # still rendering throughout
            reader.hold.clear()
            reader.release.set()
            for thread in threading.enumerate():
                if thread.name == "du-exporter-render":
                    thread.join(30)
            new = sizes(parse(http_get(server, OM, True)))
            assert du_labels(fx.root, "-B1", "--max-depth=1") == new
            assert new != old
            assert new == sizes(parse(http_get(server, "", False)))
        finally:
            reader.release.set()
            server.close()

    def test_a_failed_render_keeps_the_previous_bytes(self, scanner_auto, tmp_path, monkeypatch):
        """The store gone under a background render: one log line, and
        the previous generation is still served."""
        fx = make(scanner_auto, tmp_path, monkeypatch)
        generation = [1]
        exp = Exposition(Reader(fx.cfg.db_path), lambda: fx.cfg, fx.fresh,
                         key_source=lambda: generation[0], background=True)
        old = sizes(parse(whole(exp.render("", False)[0]).decode()))
        for f in fx.cfg.db_path.parent.glob(fx.cfg.db_path.name + "*"):
            f.unlink()
        generation[0] += 1
        with structlog.testing.capture_logs() as logs:
            assert old == sizes(parse(whole(exp.render("", False)[0]).decode()))
            for thread in threading.enumerate():
                if thread.name == "du-exporter-render":
                    thread.join(30)
        assert ["render_failed"] == [e["event"] for e in logs]
        assert old == sizes(parse(whole(exp.render("", False)[0]).decode()))
