"""/metrics rendering: cached per generation, consistent, negotiated."""

from __future__ import annotations

import gzip
import os
import shutil

from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_parse,
)
from prometheus_client.parser import text_string_to_metric_families

from du_exporter.expose.exposition import Exposition
from du_exporter.store.reader import Reader
from du_exporter.store.rows import UnitRow
from du_exporter.store.writer import Store
from helpers import Scanner, du, write


OM = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def sizes(text: str) -> dict[bytes, float]:
    return {
        os.fsencode(s.labels["path"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "node_disk_usage_bytes"
    }


class Fixture:
    def __init__(self, scanner: Scanner, root: Path) -> None:
        self.scanner = scanner
        self.root = root
        self.cfg = scanner.config(analyzed_path=str(root), dir_level=1)
        self.queries: list[str] = []
        self.fresh = CollectorRegistry()
        self.gauge = Gauge("fresh_value", "changes per scrape", registry=self.fresh)
        reader = Reader(self.cfg.db_path, tracer=self.queries.append)
        self.exp = Exposition(reader, lambda: self.cfg, self.fresh)

    def scan(self) -> None:
        self.scanner.scan(analyzed_path=str(self.root), dir_level=1)

    def text(self, accept: str = "", encoding: str = "") -> str:
        body, _, gzipped = self.exp.render(accept, "gzip" in encoding)
        return (gzip.decompress(body) if gzipped else body).decode()


def make(scanner: Scanner, tmp_path: Path) -> Fixture:
    root = tmp_path / "t"
    write(root / "a" / "f", 10_000)
    write(root / "b" / "g", 20_000)
    fx = Fixture(scanner, root)
    fx.scan()
    return fx


class TestCache:
    """The directory families are rendered once per generation."""

    def test_unchanged_generation_is_not_read_again(self, scanner, tmp_path):
        fx = make(scanner, tmp_path)
        first = fx.text()
        fx.queries.clear()
        for i in range(5):
            fx.gauge.set(i)
            text = fx.text()
            assert f"fresh_value {float(i)}" in text  # fresh half is fresh
        assert 1 == fx.exp.renders
        assert [] == [q for q in fx.queries if "FROM units" in q]
        assert sizes(first) == sizes(text)

    def test_new_generation_is_rendered(self, scanner, tmp_path):
        fx = make(scanner, tmp_path)
        fx.text()
        shutil.rmtree(fx.root / "b")
        write(fx.root / "c" / "h", 50_000)
        fx.scan()
        text = fx.text()
        assert 2 == fx.exp.renders
        assert du(fx.root, "-B1", "--max-depth=1") == sizes(text)

    def test_running_scan_is_invisible(self, scanner, tmp_path):
        """A generation being written never shows, not even in part."""
        fx = make(scanner, tmp_path)
        before = sizes(fx.text())
        store = Store.open(fx.cfg.db_path)
        try:
            gen = store.begin_generation(os.fsencode(fx.root), 0.0)
            row = UnitRow(0, None, 0, os.fsencode(fx.root), os.fsencode(fx.root),
                          0, 1, 1, 0, 0, 0.0)
            store.write_batch(gen, [row], [])
            assert before == sizes(fx.text())
            assert before == sizes(Exposition(Reader(fx.cfg.db_path), lambda: fx.cfg, fx.fresh).render("", False)[0].decode())
        finally:
            store.close()


class TestFormats:
    """Text, OpenMetrics and gzip carry the same samples."""

    def test_openmetrics_ends_once(self, scanner, tmp_path):
        fx = make(scanner, tmp_path)
        text = fx.text(OM)
        assert text.endswith("# EOF\n")
        assert 1 == text.count("# EOF")
        names = {f.name for f in om_parse(text)}  # type: ignore[no-untyped-call]
        assert {"node_disk_usage_bytes", "fresh_value"} <= names

    def test_gzip_is_the_same_text(self, scanner, tmp_path):
        fx = make(scanner, tmp_path)
        plain = fx.text()
        assert plain == fx.text(encoding="gzip")
        assert fx.text(OM) == fx.text(OM, "gzip, deflate")
        assert du(fx.root, "-B1", "--max-depth=1") == sizes(plain)


class TestFormatter:
    """format_families writes what prometheus_client's encoders write."""

    def test_byte_for_byte(self, scanner, tmp_path):
        from prometheus_client import generate_latest
        from prometheus_client.openmetrics.exposition import (
            generate_latest as om_latest,
        )

        from du_exporter.expose.exposition import format_families
        from du_exporter.expose.families import directory_families

        root = tmp_path / "t"
        write(root / "a" / "f", 10_000)
        for name in (b"new\nline", b'q"uote', b"back\\slash", b"bad\xff"):
            (Path(os.fsdecode(os.fsencode(root) + b"/" + name))).mkdir()
        cfg = scanner.config(analyzed_path=str(root), dir_level=1, owner_usage=True)
        scanner.scan(analyzed_path=str(root), dir_level=1, owner_usage=True)
        families = list(directory_families(cfg, Reader(cfg.db_path).snapshot()))
        registry = CollectorRegistry(auto_describe=False)

        class Fixed:
            def collect(self):
                return iter(families)

        registry.register(Fixed())
        assert generate_latest(registry) == format_families(families, openmetrics=False)
        expected = om_latest(registry)  # type: ignore[no-untyped-call]
        assert expected == format_families(families, openmetrics=True) + b"# EOF\n"


class TestKeySource:
    """With the daemon's in-memory generation counter, a hit reads nothing."""

    def test_hit_without_queries(self, scanner, tmp_path):
        fx = make(scanner, tmp_path)
        counter = [1]
        exp = Exposition(
            Reader(fx.cfg.db_path, tracer=fx.queries.append),
            lambda: fx.cfg, fx.fresh, key_source=lambda: counter[0],
        )
        exp.render("", True)
        fx.queries.clear()
        for _ in range(3):
            exp.render("", True)
        assert [] == fx.queries
        assert 1 == exp.renders
        counter[0] += 1
        exp.render("", True)
        assert 2 == exp.renders

    def test_scrapers_get_the_old_generation_while_one_renders(self, scanner, tmp_path):
        """During a render, others are served the previous generation whole."""
        fx = make(scanner, tmp_path)
        old = sizes(fx.text())
        write(fx.root / "c" / "h", 50_000)
        fx.scan()
        with fx.exp._render_lock:  # another scraper is rendering
            assert old == sizes(fx.text())
            assert old == sizes(fx.text(OM))
        new = sizes(fx.text(OM))  # and then the new one, in every format
        assert du(fx.root, "-B1", "--max-depth=1") == new
        assert new == sizes(fx.text())

    def test_fresh_half_follows_the_generation(self, scanner, tmp_path):
        """The TTL-cached self metrics never lag behind the rows."""
        fx = make(scanner, tmp_path)
        exp = Exposition(Reader(fx.cfg.db_path), lambda: fx.cfg, fx.fresh, fresh_ttl=3600)
        fx.gauge.set(1)
        assert "fresh_value 1.0" in exp.render("", False)[0].decode()
        fx.gauge.set(2)
        assert "fresh_value 1.0" in exp.render("", False)[0].decode()  # cached
        fx.scan()  # a new generation: both halves are rendered again
        assert "fresh_value 2.0" in exp.render("", False)[0].decode()
