"""The sunburst on /browse: a real scan served by the real exporter, the
SVG parsed, every link followed, every angle checked against GNU du, and
the page drawn by headless Chromium."""

from __future__ import annotations

import math
import re
import urllib.parse
import xml.etree.ElementTree as ET

from pathlib import Path

from du_exporter.paths import human_bytes, unlabel_path
from du_exporter.web import sunburst
from exporter import Exporter
from helpers import du
from test_browse import (
    CHROMIUM,
    _png_pixels,
    _png_size,
    needs_chromium,
    screenshot,
)


SVG = "{http://www.w3.org/2000/svg}"
ARC = re.compile(
    r"M([\d.]+),([\d.]+) A[\d.]+,[\d.]+ 0 ([01]) 1 ([\d.]+),([\d.]+) "
)


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def make_tree(root: Path) -> Path:
    """Big, middle and small directories, a second level, and 80 tiny
    directories that merge into "other"."""
    write(root / "top.bin", 20_000)
    write(root / "big" / "a" / "f", 600_000)
    write(root / "big" / "b" / "f", 250_000)
    write(root / "big" / "f", 30_000)
    write(root / "mid" / "x" / "f", 200_000)
    write(root / "mid" / "y" / "f", 90_000)
    write(root / "small" / "f", 40_000)
    for i in range(80):
        (root / "tiny" / f"t{i:02}").mkdir(parents=True)
    for i in range(80):
        (root / f"z{i:02}").mkdir()
    return root


def angle(x: float, y: float) -> float:
    """Degrees clockwise from twelve o'clock around the picture's centre."""
    c = sunburst.SIZE / 2
    return math.degrees(math.atan2(x - c, c - y)) % 360


def span(d: str) -> float:
    m = ARC.match(d)
    assert m, d
    x1, y1, large, x2, y2 = m.groups()
    width = (angle(float(x2), float(y2)) - angle(float(x1), float(y1))) % 360
    assert (width > 180) == (large == "1")
    return width


def served(tmp_path: Path) -> tuple[Path, Exporter]:
    root = make_tree(tmp_path / "tree")
    exp = Exporter(tmp_path, "--analyzed-path", str(root), "--dir-level", "2",
                   "--scan-interval-minutes", "0")
    exp.wait_event("scan_completed")
    return root, exp


def page_svg(body: bytes) -> ET.Element:
    text = body.decode()
    found = re.findall(r"<svg .*?</svg>", text, re.DOTALL)
    assert 1 == len(found)
    return ET.fromstring(found[0])  # noqa: S314 - our own page


def _href(path: bytes) -> str:
    return "browse?path=" + urllib.parse.quote(path.decode())


class TestSunburst:
    def test_links_and_angles_match_du(self, tmp_path: Path) -> None:
        root, exp = served(tmp_path)
        with exp:
            status, _, body = exp.get(f"/browse?path={urllib.parse.quote(str(root))}")
            assert 200 == status
            svg = page_svg(body)
            sizes = du(root, "-B1", "--max-depth=2")
            whole = sizes[bytes(root)]
            links = svg.findall(f"{SVG}a")
            segments = [a for a in links if a.find(f"{SVG}path") is not None]
            assert 0 < len(segments) <= sunburst.MAX_SEGMENTS
            others = 0
            for a in links:
                href = a.get("href")
                assert href is not None
                assert href.startswith("browse?path=")
                status, _, _ = exp.get("/" + href)
                assert 200 == status, href
                target = unlabel_path(urllib.parse.unquote(href.split("=", 1)[1]))
                assert target in sizes, target
                shape = a.find(f"{SVG}path")
                if shape is None:  # the disc: this directory
                    assert bytes(root) == target
                    continue
                title = shape.findtext(f"{SVG}title") or ""
                if "smaller directories" in title:
                    others += 1
                    continue
                assert title.splitlines() == [str(Path(target.decode())),
                                              human_bytes(sizes[target])]
                expected = sizes[target] * 360 / whole
                assert abs(expected - span(shape.get("d", ""))) < 0.01, target
            # The 80 tiny directories of the root are one "other" segment.
            assert 1 <= others
            titles = [a.findtext(f"{SVG}path/{SVG}title") or "" for a in segments]
            assert any(t.startswith("80 smaller directories in ") for t in titles)
            # Ring 2 under big: a and b.
            drawn = {t.splitlines()[0] for t in titles}
            assert {f"{root}/big/a", f"{root}/big/b", f"{root}/mid/x"} <= drawn

    def test_bounded(self) -> None:
        """Thousands of directories: at most MAX_SEGMENTS segments, and the
        angles of each ring still add up (the rest is "other")."""
        kids = tuple(
            sunburst.Node(b"/r/d%d" % i, 1000 + i, tuple(
                sunburst.Node(b"/r/d%d/e%d" % (i, j), 10) for j in range(50)
            ))
            for i in range(2000)
        )
        total = sum(k.size for k in kids)
        segs = sunburst.segments(sunburst.Node(b"/r", total, kids))
        assert len(segs) <= sunburst.MAX_SEGMENTS
        ring1 = sum(s.end - s.start for s in segs if s.ring == 1)
        assert abs(360 - ring1) < 1e-6
        svg = sunburst.render(sunburst.Node(b"/r", total, kids), _href, "t")
        assert len(ET.fromstring(svg).findall(f"{SVG}a")) <= sunburst.MAX_SEGMENTS + 1  # noqa: S314

    @needs_chromium
    def test_screenshot(self, tmp_path: Path) -> None:
        """Chromium draws the picture: the page differs from the same page
        without its SVG."""
        assert CHROMIUM is not None
        root, exp = served(tmp_path)
        profile = tmp_path / "chromium"
        with exp:
            url = f"{exp.url}/browse?path={urllib.parse.quote(str(root))}"
            _, _, body = exp.get(f"/browse?path={urllib.parse.quote(str(root))}")
            shot = screenshot(url, tmp_path / "with.png", profile)
        bare = tmp_path / "bare.html"
        bare.write_bytes(re.sub(rb"<svg .*?</svg>", b"", body, flags=re.DOTALL))
        without = screenshot(bare.as_uri(), tmp_path / "without.png", profile)
        assert (1200, 800) == _png_size(shot)
        assert _png_pixels(shot) != _png_pixels(without)
