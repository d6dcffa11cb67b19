"""A sunburst of a directory's subtree, drawn as SVG on the server.

Pure: a :class:`Node` tree in, an ``<svg>`` string out, no JavaScript.
The directory is the disc in the middle; its subdirectories form the
first ring, theirs the second, each segment's angle proportional to its
size (a gap is what files directly in the parent use).  Every segment
is a link (``<a href>``) to its directory's page, titled with its path
and size.  Bounded: at most ``max_segments`` segments; the directories
of a parent that do not fit, or would be thinner than ``min_degrees``,
become one "other" segment linking to the parent.
"""

from __future__ import annotations

import html
import math

from collections.abc import Callable
from dataclasses import dataclass, field

from du_exporter.paths import display, human_bytes


#: Segments drawn at most, "other" segments included.
MAX_SEGMENTS = 60
#: Thinner directories are merged into their parent's "other" segment.
MIN_DEGREES = 1.0
#: Directories of ring 1 at least this wide get a ring 2 of their own, so
#: at most 36 directories are read for it.
PARENT_DEGREES = 10.0
SIZE = 320  # pixels, width and height
_CENTER = SIZE / 2
_RINGS = (44.0, 96.0, 148.0)  # radii: the disc, ring 1, ring 2
_FULL = 359.999  # an arc of 360 degrees has no distinct end point


@dataclass(frozen=True)
class Node:
    """A directory, its size and the subdirectories to draw around it."""

    path: bytes
    size: int
    children: tuple[Node, ...] = field(default=())


@dataclass(frozen=True)
class Segment:
    """One annular sector: ring 1 or 2, angles in degrees clockwise from
    twelve o'clock, the directory it links to."""

    ring: int
    start: float
    end: float
    path: bytes
    title: str
    hue: float
    other: bool = False


def segments(
    root: Node, max_segments: int = MAX_SEGMENTS, min_degrees: float = MIN_DEGREES
) -> list[Segment]:
    """The sectors of ``root``'s sunburst, ring 1 first, biggest first."""
    if root.size <= 0:
        return []
    scale = 360.0 / root.size
    out: list[Segment] = []
    budget = max_segments
    # (parent, its first angle, ring, hue of ring 1 ancestor or None)
    todo: list[tuple[Node, float, int, float | None]] = [(root, 0.0, 1, None)]
    drawn: list[tuple[Node, float, int, float | None]] = []
    for parent, start, ring, hue in todo:
        kids = sorted(parent.children, key=lambda n: (-n.size, n.path))
        angle, rest, rest_count = start, 0, 0
        for kid in kids:
            width = kid.size * scale
            if width < min_degrees or budget <= 1:  # keep one for "other"
                rest += kid.size
                rest_count += 1
                continue
            own_hue = hue if hue is not None else (angle + width / 2) % 360
            out.append(Segment(
                ring, angle, angle + width, kid.path,
                f"{display(kid.path)}\n{human_bytes(kid.size)}", own_hue,
            ))
            budget -= 1
            if ring < len(_RINGS) - 1 and kid.children and width >= PARENT_DEGREES:
                drawn.append((kid, angle, ring + 1, own_hue))
            angle += width
        if rest and rest * scale >= min_degrees / 4 and budget > 0:
            out.append(Segment(
                ring, angle, angle + rest * scale, parent.path,
                f"{rest_count:,} smaller directories in {display(parent.path)}"
                f"\n{human_bytes(rest)}",
                hue if hue is not None else 0.0, other=True,
            ))
            budget -= 1
        if parent is root:
            todo.extend(drawn)
            drawn = []
    return out


def _point(radius: float, degrees: float) -> str:
    a = math.radians(degrees)
    x = _CENTER + radius * math.sin(a)
    y = _CENTER - radius * math.cos(a)
    return f"{x:.3f},{y:.3f}"


def _sector(seg: Segment) -> str:
    """The path of an annular sector."""
    inner, outer = _RINGS[seg.ring - 1], _RINGS[seg.ring]
    end = min(seg.end, seg.start + _FULL)
    large = 1 if end - seg.start > 180 else 0  # noqa: PLR2004 - half a turn
    return (
        f"M{_point(outer, seg.start)} A{outer},{outer} 0 {large} 1 {_point(outer, end)} "
        f"L{_point(inner, end)} A{inner},{inner} 0 {large} 0 {_point(inner, seg.start)} Z"
    )


def render(root: Node, href: Callable[[bytes], str], label: str) -> str:
    """The ``<svg>`` element: ``href`` makes a directory's link, ``label``
    names the picture for screen readers."""
    e = html.escape
    parts = [
        (f'<svg class="sunburst" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {SIZE} {SIZE}" width="{SIZE}" height="{SIZE}" '
        f'role="img" aria-label="{e(label)}">'),
        (f'<a href="{e(href(root.path))}"><circle cx="{_CENTER}" cy="{_CENTER}" '
        f'r="{_RINGS[0]}" fill="hsl(0,0%,88%)"><title>'
        f"{e(display(root.path))}\n{e(human_bytes(root.size))}</title></circle></a>"),
    ]
    for seg in segments(root):
        light = 62 + 12 * (seg.ring - 1)
        fill = "hsl(0,0%,80%)" if seg.other else f"hsl({seg.hue:.0f},55%,{light}%)"
        parts.append(
            f'<a href="{e(href(seg.path))}"><path d="{_sector(seg)}" fill="{fill}" '
            f'stroke="#fff" stroke-width="0.75"><title>{e(seg.title)}</title></path></a>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
