"""The usage browser: real scans, real HTTP, parsed HTML, headless Chromium.

Trees are built in ``tmp_path`` and scanned for real; every size the
page shows is checked against GNU du run in the test on the same tree.
Pages are fetched over HTTP from a running server (``start_server``, or
the real exporter as a subprocess) and parsed with :mod:`html.parser`.
"""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import sqlite3
import statistics
import struct
import subprocess
import time
import urllib.parse
import zlib

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import bcrypt
import pytest

from hypothesis import given
from hypothesis import strategies as st

from du_exporter.config import Config
from du_exporter.errors import NotFound
from du_exporter.paths import label_path, unlabel_path
from du_exporter.store.reader import Reader
from du_exporter.store.rows import UnitRow
from du_exporter.store.writer import Store
from du_exporter.web.browse import MAX_ROWS, browse_page, query_path
from du_exporter.web.server import Body, Pages, ServerHandle, start_server
from exporter import Exporter
from helpers import Scanner, du, trace_sql, write


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (.ci/run installs it)"
)


# --- parsing the page ------------------------------------------------------

_VOID = frozenset({"meta", "br", "img", "input", "link", "hr", "wbr"})


def _no_metrics(_accept: str, _gzip: bool) -> tuple[Body, str, bool]:
    """These servers are about /browse; /metrics is not asked for."""
    return Body(0, ()), "text/plain", False


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(
            c if isinstance(c, str) else c.text for c in self.children
        )

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find_all(self, tag: str, cls: str | None = None) -> Iterator[Node]:
        for c in self.children:
            if isinstance(c, Node):
                if c.tag == tag and (cls is None or cls in c.classes()):
                    yield c
                yield from c.find_all(tag, cls)

    def find(self, tag: str, cls: str | None = None) -> Node:
        return next(self.find_all(tag, cls))


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert tag == self.stack[-1].tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


@dataclass
class Row:
    name: str
    href: str | None
    size: int
    change: str | None
    change_bytes: int | None
    files: str
    dirs: str


@dataclass
class Page:
    doc: Node
    tags: list[str]

    @property
    def crumbs(self) -> list[tuple[str, str | None, bool]]:
        """(text, href or None, current) of each breadcrumb."""
        nav = self.doc.find("nav", "crumbs")
        out: list[tuple[str, str | None, bool]] = []
        for c in nav.children:
            if isinstance(c, Node) and c.tag == "a":
                out.append((c.text, c.attrs["href"], "aria-current" in c.attrs))
            elif isinstance(c, str):
                out.append((c, None, False))
        return out

    @property
    def cards(self) -> dict[str, Node]:
        return {
            c.find("div", "k").text: c.find("div", "v")
            for c in self.doc.find_all("div", "card")
        }

    def card_bytes(self, key: str) -> int:
        return _exact(self.cards[key].find("span").attrs["title"])

    @property
    def rows(self) -> list[Row]:
        table = self.doc.find("table")
        heads = [th.text for th in table.find_all("th")]
        out = []
        for tr in table.find("tbody").find_all("tr"):
            cells = list(tr.find_all("td"))
            # "share" spans two cells: the bar and the percentage.
            by = dict(zip([heads[0], "bar", *heads[1:]], cells, strict=False))
            links = list(by[heads[0]].find_all("a"))
            change = by.get("change")
            spans = list(change.find_all("span")) if change else []
            title = spans[0].attrs.get("title", "") if spans else ""
            out.append(Row(
                name=by[heads[0]].text,
                href=links[0].attrs["href"] if links else None,
                size=_exact(by["size"].find("span").attrs["title"]),
                change=change.text if change else None,
                change_bytes=_exact(title) if "bytes" in title else None,
                files=by["files"].text,
                dirs=by["dirs"].text,
            ))
        return out

    @property
    def notes(self) -> list[str]:
        return [p.text for p in self.doc.find_all("p", "note")]


def _exact(title: str) -> int:
    """``"1,234 bytes"`` or ``"+1,234 bytes"`` -> 1234."""
    assert title.endswith(" bytes"), title
    return int(title.removesuffix(" bytes").replace(",", ""))


def parse_page(body: bytes) -> Page:
    builder = _TreeBuilder()
    builder.feed(body.decode())
    builder.close()
    assert [builder.root] == builder.stack, "unclosed elements"
    return Page(builder.root, builder.tags)


# --- HTTP ------------------------------------------------------------------


def get(
    base: str, target: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET ``target`` (relative to ``/``, as a link on a page is)."""
    url = urllib.parse.urlsplit(urllib.parse.urljoin(base + "/", target))
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.request("GET", url.path + ("?" + url.query if url.query else ""), headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.headers), resp.read()
    finally:
        conn.close()


def fs(path: Path) -> bytes:
    return os.fsencode(path)


def browse_url(path: bytes) -> str:
    return "browse?path=" + urllib.parse.quote(label_path(path), safe="/")


@dataclass
class Served:
    """A scanned tree, its config and a server with the browser on it."""

    root: Path
    config: Config
    handle: ServerHandle
    scanner: Scanner
    values: dict[str, object]

    def page(self, target: str) -> Page:
        status, headers, body = get(self.handle.url, target)
        assert 200 == status, body
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        return parse_page(body)

    def rescan(self) -> None:
        self.scanner.scan(**self.values)


Serve = Callable[..., Served]


@pytest.fixture(name="serve")
def _serve(scanner_auto: Scanner) -> Iterator[Serve]:
    handles: list[ServerHandle] = []

    def serve(root: Path, **values: object) -> Served:
        values = {
            k: v
            for k, v in {"analyzed_path": str(root), "dir_level": 2, **values}.items()
            if v is not None
        }
        scanner_auto.scan(**values)
        config = scanner_auto.config(**values)
        reader = Reader(config.db_path)
        pages = Pages(
            render=_no_metrics,
            landing=lambda: "",
            ready=lambda: True,
            browse=lambda query: browse_page(config, reader, query),
        )
        handle = start_server(pages)
        handles.append(handle)
        return Served(root, config, handle, scanner_auto, values)

    yield serve
    for h in handles:
        h.close()


def make_tree(root: Path) -> Path:
    """Directories of clearly different sizes, two levels and deeper."""
    write(root / "top.bin", 3000)
    write(root / "big" / "a" / "deep" / "deeper" / "f", 400_000)
    write(root / "big" / "b" / "f", 150_000)
    write(root / "big" / "f", 10_000)
    write(root / "medium" / "x" / "f", 90_000)
    write(root / "small" / "f", 5_000)
    (root / "empty").mkdir()
    return root


# --- label form ------------------------------------------------------------


class TestLabelForm:
    @given(st.binary())
    def test_round_trip(self, path: bytes) -> None:
        """Every byte string comes back from its label unchanged."""
        assert path == unlabel_path(label_path(path))

    @given(st.lists(st.binary(min_size=1).filter(lambda b: b"/" not in b), max_size=5))
    def test_round_trip_through_the_query(self, names: list[bytes]) -> None:
        """A link's query string gives back the path it was made from."""
        path = b"/" + b"/".join(names)
        query = browse_url(path).partition("?")[2]
        assert path == query_path(query)

    @given(st.text())
    def test_text_is_a_label_or_rejected(self, text: str) -> None:
        """Text is either exactly one path's label or a ValueError."""
        try:
            path = unlabel_path(text)
        except ValueError:
            return
        assert text == label_path(path)

    @pytest.mark.parametrize(
        "label",
        ["a\\b", "a\\", "\\x41", "\\xE9", "\\xe", "\ud800"],
    )
    def test_rejected(self, label: str) -> None:
        """Lone backslashes, non-canonical escapes, lone surrogates."""
        with pytest.raises(ValueError, match=r"."):
            unlabel_path(label)

    def test_examples(self) -> None:
        assert b"caf\xe9/x\\y\nz" == unlabel_path("caf\\xe9/x\\\\y\nz")


# --- pages of a real scan ---------------------------------------------------


class TestDirectoryPage:
    def test_totals_and_children_equal_du(self, tmp_path: Path, serve: Serve) -> None:
        """The totals are du -sB1; the children are du -B1 at depth 1, by size."""
        root = make_tree(tmp_path / "tree")
        s = serve(root)
        page = s.page(browse_url(fs(root)))
        ref = du(root, "-B1", "--max-depth=1")
        assert ref[fs(root)] == page.card_bytes("disk usage")
        assert du(root, "-sb")[fs(root)] == page.card_bytes("apparent size")
        dirs = [p for p in root.rglob("*") if p.is_dir()]
        files = [p for p in root.rglob("*") if p.is_file()]
        assert f"{len(dirs):,}" == page.cards["directories"].text
        assert f"{len(files):,}" == page.cards["files"].text
        children = [r for r in page.rows if r.href is not None]
        expected = sorted(
            ((size, os.path.basename(p).decode()) for p, size in ref.items() if p != fs(root)),
            key=lambda t: (-t[0], t[1]),
        )
        assert expected == [(r.size, r.name) for r in children]
        assert ["big", "medium", "small", "empty"] == [r.name for r in children]
        files_here = page.rows[-1]
        assert "(files directly in here)" == files_here.name
        assert ref[fs(root)] - sum(r.size for r in children) == files_here.size

    def test_bars_are_proportional(self, tmp_path: Path, serve: Serve) -> None:
        """Each bar's width is the child's share of the directory."""
        root = make_tree(tmp_path / "tree")
        s = serve(root)
        status, _, body = get(s.handle.url, browse_url(fs(root)))
        assert 200 == status
        page = parse_page(body)
        total = page.card_bytes("disk usage")
        bars = [
            float(span.attrs["style"].removeprefix("width:").removesuffix("%"))
            for span in page.doc.find("table").find_all("span")
            if span.attrs.get("style", "").startswith("width:")
        ]
        assert [round(100 * r.size / total, 1) for r in page.rows] == bars
        assert "<script" not in body.decode().lower()  # no JavaScript at all

    def test_breadcrumbs_link_every_level(self, tmp_path: Path, serve: Serve) -> None:
        """roots > the root > each directory below, each a working link."""
        root = make_tree(tmp_path / "tree")
        s = serve(root)
        target = root / "big" / "a"
        page = s.page(browse_url(fs(target)))
        links = [(text, href, cur) for text, href, cur in page.crumbs if href]
        assert [
            ("roots", "browse", False),
            (str(root), browse_url(fs(root)), False),
            ("big", browse_url(fs(root / "big")), False),
            ("a", browse_url(fs(target)), True),
        ] == links
        for text, href, _ in links[1:]:
            crumbs = s.page(href).crumbs
            assert (text, href, True) == crumbs[-1]
        assert str(root) in s.page("browse").doc.text

    def test_deepest_level_is_said(self, tmp_path: Path, serve: Serve) -> None:
        """At dir-level there are no child rows; the page says why."""
        root = make_tree(tmp_path / "tree")
        s = serve(root)
        page = s.page(browse_url(fs(root / "big" / "a")))
        assert du(root / "big" / "a", "-sB1")[fs(root / "big" / "a")] == page.card_bytes("disk usage")
        assert not list(page.doc.find_all("table"))
        (note,) = page.notes
        assert "deepest level stored (dir-level 2 of " in note
        assert "(2 in all)" in note
        assert ["No subdirectories."] == s.page(browse_url(fs(root / "empty"))).notes

    def test_apparent_size_mode(self, tmp_path: Path, serve: Serve) -> None:
        """With size-mode apparent the sizes and the order are du -b's."""
        root = tmp_path / "tree"
        write(root / "sparse" / "f", 50_000_000, sparse=True)
        write(root / "dense" / "f", 300_000)
        s = serve(root, size_mode="apparent")
        page = s.page(browse_url(fs(root)))
        ref = du(root, "-b", "--max-depth=1")
        assert ["sparse", "dense"] == [r.name for r in page.rows if r.href]
        assert [ref[fs(root / n)] for n in ("sparse", "dense")] == [
            r.size for r in page.rows if r.href
        ]
        assert ref[fs(root)] == page.card_bytes("apparent size")
        assert "apparent size" == next(iter(page.cards))

    def test_roots_page(self, tmp_path: Path, serve: Serve) -> None:
        """/browse alone lists the roots, each a link to its page."""
        root = make_tree(tmp_path / "tree")
        s = serve(root)
        page = s.page("browse")
        (row,) = page.rows
        assert (str(root), browse_url(fs(root))) == (row.name, row.href)
        assert du(root, "-sB1")[fs(root)] == row.size


class TestGrowth:
    def test_changes_since_the_previous_scan(self, tmp_path: Path, serve: Serve) -> None:
        """+/- bytes per child, 'new' for a new one, gone ones listed."""
        root = make_tree(tmp_path / "tree")
        s = serve(root)
        first = s.page(browse_url(fs(root)))
        assert all(r.change is None for r in first.rows)  # one scan: no column
        assert any("after the next one" in p.text for p in first.doc.find_all("p", "meta"))
        before = du(root, "-B1", "--max-depth=1")
        write(root / "medium" / "more", 200_000)
        (root / "small" / "f").unlink()
        shutil.rmtree(root / "empty")
        write(root / "fresh" / "f", 20_000)
        s.rescan()
        after = du(root, "-B1", "--max-depth=1")
        page = s.page(browse_url(fs(root)))
        changes = {r.name: (r.change, r.change_bytes) for r in page.rows if r.href}
        assert ("new", None) == changes["fresh"]
        for name in ("big", "medium", "small"):
            p = fs(root / name)
            diff = after[p] - before[p]
            assert diff == (changes[name][1] or 0), name
        assert (changes["medium"][0] or "").startswith("+")
        assert (changes["small"][0] or "").startswith("\N{MINUS SIGN}")
        assert "±0" == changes["big"][0]
        assert after[fs(root)] - before[fs(root)] == _exact(
            page.cards["since previous scan"].find("span").attrs["title"]
        )
        assert ["Gone since the previous scan: empty."] == page.notes

    def test_keep_one_generation_says_so(self, tmp_path: Path, serve: Serve) -> None:
        root = make_tree(tmp_path / "tree")
        s = serve(root, keep_generations=1)
        s.rescan()
        page = s.page(browse_url(fs(root)))
        assert "since previous scan" not in page.cards
        meta = page.doc.find("p", "meta").text
        assert "keep-generations 2 or more" in meta


class TestHostileNames:
    NAMES: tuple[tuple[bytes, str], ...] = (
        (b"<script>alert(1)<\\script>", "<script>alert(1)<\\\\script>"),
        (b"q\"uo'te & <b>bold", "q\"uo'te & <b>bold"),
        (b"new\nline", "new\\x0aline"),
        (b"caf\xe9", "caf\\xe9"),
        (b"tab\there", "tab\\x09here"),
        (b"100% +plus", "100% +plus"),
    )

    def test_escaped_and_linked(self, tmp_path: Path, serve: Serve) -> None:
        """Names render as text (no markup), escaped like labels; links work."""
        root = tmp_path / "tree"
        for i, (name, _) in enumerate(self.NAMES):
            write(Path(os.fsdecode(fs(root) + b"/" + name)) / "f", 10_000 * (i + 1))
        s = serve(root)
        status, _, body = get(s.handle.url, browse_url(fs(root)))
        assert 200 == status
        page = parse_page(body)
        assert "script" not in page.tags
        assert "b" not in page.tags
        shown = {r.name: r for r in page.rows if r.href}
        assert {d for _, d in self.NAMES} == set(shown)
        ref = du(root, "-B1", "--max-depth=1")
        for name, text in self.NAMES:
            row = shown[text]
            assert ref[fs(root) + b"/" + name] == row.size
            assert row.href is not None
            sub = s.page(row.href)
            assert text == sub.crumbs[-1][0]
            assert ref[fs(root) + b"/" + name] == sub.card_bytes("disk usage")
            assert "script" not in sub.tags
            assert "\n" not in sub.doc.find("title").text

    def test_not_found(self, tmp_path: Path, serve: Serve) -> None:
        """A path not in the scan, or not a label, is 404 in plain text."""
        root = make_tree(tmp_path / "tree")
        s = serve(root)
        for target in (
            browse_url(fs(root / "nope")),
            browse_url(fs(root / "big" / "a" / "deep")),  # below dir-level
            browse_url(b"/elsewhere"),
            "browse?path=" + urllib.parse.quote(str(root)) + "/%5Cx62ig",  # \x62 is 'b'
            "browse?path=%ff",
            "browse?path=relative/path",
            "browse?path=" + urllib.parse.quote(str(root)) + "%5C",
        ):
            status, headers, body = get(s.handle.url, target)
            assert 404 == status, target
            assert headers["Content-Type"].startswith("text/plain")
            assert body.startswith(b"Not Found: ")
        with pytest.raises(NotFound):
            browse_page(s.config, Reader(s.config.db_path), "path=/nope")

    def test_trailing_slash_and_no_browse(self, tmp_path: Path, serve: Serve) -> None:
        root = make_tree(tmp_path / "tree")
        s = serve(root)
        page = s.page(browse_url(fs(root)) + "/")
        assert str(root) == page.crumbs[-1][0]
        page = s.page(browse_url(fs(root)) + "//big/")
        assert ("big", browse_url(fs(root / "big")), True) == page.crumbs[-1]
        assert ["a", "b"] == [r.name for r in page.rows if r.href]
        handle = start_server(Pages(_no_metrics, lambda: "", lambda: True))
        try:
            assert 404 == get(handle.url, "browse")[0]
        finally:
            handle.close()


class TestNestedRoots:
    def test_root_below_a_directory_without_a_row(self, tmp_path: Path, serve: Serve) -> None:
        """/t at level 0 and /t/a/b at level 1: /t/a has no row, /t/a/b is found."""
        root = make_tree(tmp_path / "tree")
        nested = root / "big" / "a"
        s = serve(root, multi_paths={str(root): 0, str(nested): 1}, analyzed_path=None, dir_level=None)
        roots = s.page("browse")
        assert [str(root), str(nested)] == [r.name for r in roots.rows]
        top = s.page(browse_url(fs(root)))
        assert not list(top.doc.find_all("table"))
        (link,) = (a for p in top.doc.find_all("p", "note") for a in p.find_all("a"))
        assert top.notes[-1].startswith("Roots further down: ")
        assert browse_url(fs(nested)) == link.attrs["href"]
        page = s.page(link.attrs["href"])
        ref = du(nested, "-B1", "--max-depth=1")
        assert ref[fs(nested)] == page.card_bytes("disk usage")
        assert [("deep", ref[fs(nested / "deep")])] == [(r.name, r.size) for r in page.rows if r.href]
        # big has no row: its crumb is text, not a link
        assert ("big", None, False) in page.crumbs
        assert 404 == get(s.handle.url, browse_url(fs(root / "big")))[0]


# --- speed: a generated 100k-row generation --------------------------------


def _generate(db: Path, top: bytes, fan1: int, fan2: int) -> int:
    """Two complete generations of 1 + fan1 + fan1*fan2 directories."""
    store = Store.open(db)
    try:
        for g in range(2):
            gen = store.begin_generation(top, 1000.0 + g)
            rows = [UnitRow(0, None, 0, top, top, 0, 4096, 4096, 0, 0, 1.0)]
            for i in range(fan1):
                pid = len(rows)
                p1 = top + b"/d%04d" % i
                rows.append(UnitRow(pid, 0, 1, p1, top, 1, 4096, 4096, 0, 0, 1.0))
                rows.extend(
                    UnitRow(
                        pid + 1 + j, pid, 2, p1 + b"/e%04d" % j, top, 2,
                        4096 * (1 + (i * j + g * j) % 97), 4000, 3, 1, 2.0,
                    )
                    for j in range(fan2)
                )
            for k in range(0, len(rows), 10_000):
                store.write_batch(gen, rows[k:k + 10_000], [])
            store.complete_generation(
                gen, finished=2000.0 + g, entries=len(rows), unreadable=0,
                histogram=[], histogram_sum=0, keep=2,
            )
    finally:
        store.close()
    return len(rows)


class TestSpeed:
    def test_milliseconds_on_100k_rows(
        self,
        scanner_auto: Scanner,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Every page is one transaction of index probes, in milliseconds."""
        db = scanner_auto.db
        rows = _generate(db, b"/data", 100, 999)
        assert 1 + 100 + 100 * 999 == rows
        config = scanner_auto.config(analyzed_path="/data", dir_level=2)
        trace = trace_sql(monkeypatch)
        reader = Reader(db)
        pages = {
            "roots": "",
            "root (100 children)": "path=/data",
            "level 1 (999 children)": "path=/data/d0050",
            "leaf": "path=/data/d0099/e0998",
        }
        times = {}
        for name, query in pages.items():
            browse_page(config, reader, query)  # warm the page cache
            samples = []
            for _ in range(15):
                trace.clear()
                t = time.perf_counter()
                browse_page(config, reader, query)
                samples.append(time.perf_counter() - t)
            times[name] = statistics.median(samples) * 1000
            assert 1 == trace.count("BEGIN"), name  # one read transaction
            self._check_plans(db, trace)
        handle = start_server(Pages(
            _no_metrics, lambda: "", lambda: True,
            browse=lambda q: browse_page(config, Reader(db), q),
        ))
        try:
            t = time.perf_counter()
            status, _, body = get(handle.url, "browse?path=/data/d0050")
            http_ms = (time.perf_counter() - t) * 1000
        finally:
            handle.close()
        assert 200 == status
        assert 999 == len(parse_page(body).rows) - 1  # + the files row
        with capsys.disabled():
            print(  # noqa: T201 - the timings, for the record
                "\nbrowse on a 100,001-row generation (+ previous): "
                + ", ".join(f"{k} {v:.1f} ms" for k, v in times.items())
                + f"; over HTTP (999 children) {http_ms:.1f} ms"
            )
        # Generous bounds for a loaded CI machine; typically 1-30 ms.
        assert times["roots"] < 50
        assert times["leaf"] < 100
        assert max(times.values()) < 500

    @staticmethod
    def _check_plans(db: Path, trace: list[str]) -> None:
        conn = sqlite3.connect(db)
        try:
            for sql in trace:
                if "FROM units" not in sql:
                    continue
                plan = " ".join(
                    r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql)
                )
                assert "USING INDEX units_depth (gen=? AND depth=?" in plan, plan
        finally:
            conn.close()

    def test_many_children_are_capped(self, scanner_auto: Scanner) -> None:
        """A directory with more children than MAX_ROWS sums the rest in one row."""
        _generate(scanner_auto.db, b"/data", 1, MAX_ROWS + 5)
        config = scanner_auto.config(analyzed_path="/data", dir_level=2)
        page = parse_page(browse_page(config, Reader(scanner_auto.db), "path=/data/d0000").encode())
        rows = page.rows
        assert MAX_ROWS + 2 == len(rows)
        assert "5 smaller directories" == rows[MAX_ROWS].name
        assert page.card_bytes("disk usage") == sum(r.size for r in rows)
        sizes = [r.size for r in rows[:MAX_ROWS]]
        assert sorted(sizes, reverse=True) == sizes


# --- the real exporter: auth, and Chromium ------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class TestExporter:
    def test_browse_needs_the_password(self, tmp_path: Path) -> None:
        """With basic auth /browse is 401 without the password, like /metrics."""
        root = make_tree(tmp_path / "tree")
        hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
        web = tmp_path / "web.yml"
        web.write_text(f"basic_auth_users:\n  alice: '{hashed}'\n")
        with Exporter(
            tmp_path, "--analyzed-path", str(root), "--dir-level", "2",
            "--web-config-file", str(web), "--scan-interval-minutes", "0",
        ) as exp:
            exp.wait_event("scan_completed")
            target = browse_url(fs(root))
            for headers in ({}, _basic("alice", "wrong"), _basic("bob", "s3cret")):
                status, got, _ = get(exp.url, target, headers)
                assert 401 == status
                assert got["WWW-Authenticate"].startswith("Basic")
            assert 401 == get(exp.url, "browse")[0]
            assert 200 == get(exp.url, "-/healthy")[0]
            status, _, body = get(exp.url, target, _basic("alice", "s3cret"))
            assert 200 == status
            page = parse_page(body)
            assert du(root, "-sB1")[fs(root)] == page.card_bytes("disk usage")
            status, _, body = get(exp.url, "", _basic("alice", "s3cret"))
            assert b'<a href="browse">' in body  # the landing page links it


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (13, b"IHDR") == (length, kind)
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _png_pixels(data: bytes) -> bytes:
    """The decompressed (still filtered) image data: enough to compare."""
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return zlib.decompress(idat)


def screenshot(url: str, out: Path, user_data: Path) -> bytes:
    assert CHROMIUM is not None
    subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync",
            f"--user-data-dir={user_data}", f"--screenshot={out}",
            "--window-size=1200,800", url,
        ],
        capture_output=True, timeout=120, check=True,
    )
    return out.read_bytes()


@needs_chromium
class TestChromium:
    def test_screenshots(self, tmp_path: Path) -> None:
        """A real browser renders /browse: right size, not blank, not the landing page."""
        root = make_tree(tmp_path / "tree")
        profile = tmp_path / "chromium"
        with Exporter(
            tmp_path, "--analyzed-path", str(root), "--dir-level", "2",
            "--scan-interval-minutes", "0",
        ) as exp:
            exp.wait_event("scan_completed")
            browse = screenshot(f"{exp.url}/{browse_url(fs(root))}", tmp_path / "browse.png", profile)
            landing = screenshot(f"{exp.url}/", tmp_path / "landing.png", profile)
        blank = screenshot("data:text/html,<html></html>", tmp_path / "blank.png", profile)
        for png in (browse, landing, blank):
            assert (1200, 800) == _png_size(png)
        assert len(browse) > 3 * len(blank)
        assert len(landing) > 3 * len(blank)
        assert _png_pixels(browse) != _png_pixels(landing)
        assert len(set(_png_pixels(browse))) > len(set(_png_pixels(blank)))
