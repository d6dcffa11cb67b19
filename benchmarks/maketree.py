"""Build a deterministic synthetic directory tree for scan benchmarks.

The same ``(entries, seed, depth, files_per_dir, shape, empty_files)``
always gives the same tree: same names, same sizes, same links. What the
default (``balanced``) tree holds:

* directories up to ``depth`` levels below the root (balanced, random
  fan-out), about ``files_per_dir`` other entries in each;
* regular files with a skewed size distribution: mostly 0-8 KiB of real
  data, some 8 KiB-1 MiB and a few 1-64 MiB files that are mostly holes
  (a little real data, then ``ftruncate``), so ``du`` and ``du -b``
  differ and disk use stays modest;
* a few fully sparse 1 GiB files;
* about 1 % hard links (to files in *other* directories) and about 1 %
  symlinks (to files, to directories, and dangling).

Other shapes (``--shape``), same kinds of entries:

* ``one-huge``: the subdirectory ``big`` holds ~90 % of the entries (a
  balanced subtree one level shallower); the rest is a balanced tree
  beside it -- lopsided work for the scan pool;
* ``many-tiny``: every directory holds 1-2 files (``entries / 2.5``
  directories, tens of thousands for 100,000 entries and more);
* ``flat``: no subdirectories, every entry in ``DEST`` itself (hard links
  then point into the same directory);
* ``dirs``: ``entries / 2`` directories with exactly one other entry
  each, all within ``depth`` levels (``--depth 4``: 100,000 directories
  for 200,000 entries, every one exported at ``dir-level: 4``).

``empty_files`` (``--empty-files``) makes every regular file zero bytes
(no sparse files either), so a tree of millions of entries costs inodes
and directory blocks only (about 0.25 KiB of disk per entry).

Exactly ``entries`` entries are created below ``DEST`` (``DEST`` itself
and the marker file are not counted). A marker file records the
parameters; a second run with the same parameters does nothing.

Usage: ``python benchmarks/maketree.py DEST --entries N [--seed S]
[--shape SHAPE] [--empty-files]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time

from dataclasses import dataclass
from pathlib import Path


MARKER = ".maketree.json"
FORMAT_VERSION = 1
SHAPES = ("balanced", "one-huge", "many-tiny", "flat", "dirs")
#: Share of the entries under ``big`` in the ``one-huge`` shape.
HUGE_SHARE = 0.9
#: Mean entries per directory (the directory included) in ``many-tiny``.
TINY_DIR_ENTRIES = 2.5

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

HARDLINK_SHARE = 0.01
SYMLINK_SHARE = 0.01
RESERVOIR_SIZE = 4096
DATA_BUFFER_SIZE = 64 * KIB


@dataclass(frozen=True)
class TreeInfo:
    """What :func:`build_tree` made (or found)."""

    path: Path
    entries: int
    directories: int
    files: int
    hardlinks: int
    symlinks: int
    sparse_files: int
    cached: bool
    seconds: float


def _params(
    entries: int,
    seed: int,
    depth: int,
    files_per_dir: int,
    shape: str = "balanced",
    empty_files: bool = False,
) -> dict[str, int | str]:
    params: dict[str, int | str] = {
        "version": FORMAT_VERSION,
        "entries": entries,
        "seed": seed,
        "depth": depth,
        "files_per_dir": files_per_dir,
    }
    # Only when not the default, so trees built before these existed
    # are still recognised.
    if shape != "balanced":
        params["shape"] = shape
    if empty_files:
        params["empty_files"] = 1
    return params


def _read_marker(dest: Path) -> dict[str, int | str] | None:
    try:
        data = json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return {str(k): v for k, v in data.items() if isinstance(v, (int, str))}


def _fanout(n_dirs: int, depth: int) -> float:
    """Mean fan-out b with 1 + b + ... + b**depth == n_dirs + 1."""
    target = n_dirs + 1
    lo, hi = 0.0, float(max(2, n_dirs))
    for _ in range(100):
        mid = (lo + hi) / 2
        total = sum(mid**i for i in range(depth + 1))
        if total < target:
            lo = mid
        else:
            hi = mid
    return hi


def _plan_dirs(
    rng: random.Random, n_dirs: int, depth: int, top: str = ""
) -> tuple[list[str], list[int]]:
    """Relative directory paths in breadth-first order, and their depths.

    Index 0 is the top (``top``, ``""`` for the root, depth 0);
    ``n_dirs`` more follow, below it.
    """
    paths = [top]
    depths = [0]
    n_children = [0]
    if n_dirs <= 0:
        return paths, depths
    mean = _fanout(n_dirs, depth)
    whole = int(mean)
    frac = mean - whole
    limit = depth
    i = 0
    while len(paths) < n_dirs + 1:
        if i >= len(paths):
            # Random fan-out ran dry before the budget: go one level deeper.
            limit += 1
            i = 0
            continue
        if depths[i] < limit:
            k = whole + (1 if rng.random() < frac else 0)
            if i == 0:
                k = max(k, 1)
            for _ in range(k):
                if len(paths) >= n_dirs + 1:
                    break
                name = f"d{n_children[i]:02d}"
                n_children[i] += 1
                parent = paths[i]
                paths.append(f"{parent}/{name}" if parent else name)
                depths.append(depths[i] + 1)
                n_children.append(0)
        i += 1
    return paths, depths


def _split(
    rng: random.Random, total: int, slots: int, files_per_dir: int
) -> list[int]:
    """Split ``total`` entries over ``slots`` directories, ~uniformly."""
    lo = max(0, files_per_dir // 2)
    hi = max(lo, files_per_dir + files_per_dir // 2)
    weights = [rng.randint(lo, hi) for _ in range(slots)]
    weight_sum = sum(weights) or 1
    counts = [total * w // weight_sum for w in weights]
    rest = total - sum(counts)
    for j in range(rest):
        counts[j % slots] += 1
    return counts


def _file_size(rng: random.Random) -> tuple[int, int, bool]:
    """(apparent size, real bytes written at the start, write the tail)."""
    r = rng.random()
    if r < 0.04:
        return 0, 0, False
    if r < 0.90:
        size = min(8 * KIB, int(rng.lognormvariate(7.0, 1.2)))
        return size, size, False
    if r < 0.985:
        size = max(8 * KIB + 1, min(MIB, int(rng.lognormvariate(11.0, 1.0))))
        return size, 8 * KIB, False
    size = max(MIB, min(64 * MIB, int(rng.lognormvariate(15.5, 0.8))))
    return size, 4 * KIB, True


def _prepare_dest(
    dest: Path, params: dict[str, int | str], force: bool
) -> bool:
    """Return True when ``dest`` already holds this exact tree."""
    if not dest.exists():
        return False
    if not dest.is_dir():
        msg = f"maketree: {dest} exists and is not a directory"
        raise SystemExit(msg)
    marker = _read_marker(dest)
    if marker is not None and all(
        marker.get(k) == v for k, v in params.items()
    ):
        return True
    if marker is None and any(dest.iterdir()) and not force:
        msg = (
            f"maketree: {dest} is not empty and has no {MARKER}; "
            "refusing to delete it (use --force)"
        )
        raise SystemExit(msg)
    shutil.rmtree(dest)
    return False


class _Builder:
    """Fills the planned directories, one entry at a time."""

    FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

    def __init__(
        self,
        rng: random.Random,
        abs_dirs: list[str],
        *,
        empty_files: bool = False,
        same_dir_links: bool = False,
    ) -> None:
        self.rng = rng
        self.abs_dirs = abs_dirs
        self.empty_files = empty_files
        self.same_dir_links = same_dir_links
        self.data = memoryview(rng.randbytes(DATA_BUFFER_SIZE))
        # Reservoir sample of (directory index, file path): link targets.
        self.reservoir: list[tuple[int, str]] = []
        self.seen_files = 0
        self.files = 0
        self.hardlinks = 0
        self.symlinks = 0
        self.sparse = 0

    def fill(self, d: int, count: int, sparse_slots: set[int]) -> None:
        """Create ``count`` entries in directory ``d``."""
        dir_path = self.abs_dirs[d]
        dfd = os.open(dir_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for j in range(count):
                r = self.rng.random()
                if j in sparse_slots:
                    self._file(dfd, d, dir_path, j, sparse=True)
                elif r < HARDLINK_SHARE and self._hardlink(dfd, d, j):
                    pass
                elif HARDLINK_SHARE <= r < HARDLINK_SHARE + SYMLINK_SHARE:
                    self._symlink(dfd, dir_path, j)
                else:
                    self._file(dfd, d, dir_path, j, sparse=False)
        finally:
            os.close(dfd)

    def _hardlink(self, dfd: int, d: int, j: int) -> bool:
        if not self.reservoir:
            return False
        src_dir, src = self.reservoir[self.rng.randrange(len(self.reservoir))]
        if src_dir == d and not self.same_dir_links:
            return False
        os.link(src, f"l{j:03d}", dst_dir_fd=dfd)
        self.hardlinks += 1
        return True

    def _symlink(self, dfd: int, dir_path: str, j: int) -> None:
        rng = self.rng
        kind = rng.randrange(3)
        if kind == 0 and self.reservoir:
            pick = self.reservoir[rng.randrange(len(self.reservoir))][1]
            target = os.path.relpath(pick, dir_path)
        elif kind == 1:
            pick = self.abs_dirs[rng.randrange(len(self.abs_dirs))]
            target = os.path.relpath(pick, dir_path)
        else:
            target = f"missing-{rng.randrange(1 << 30)}"
        os.symlink(target, f"s{j:03d}", dir_fd=dfd)
        self.symlinks += 1

    def _file(
        self, dfd: int, d: int, dir_path: str, j: int, *, sparse: bool
    ) -> None:
        name = f"f{j:03d}"
        fd = os.open(name, self.FLAGS, 0o644, dir_fd=dfd)
        try:
            if sparse:
                os.ftruncate(fd, GIB)
            elif self.empty_files:
                pass
            else:
                size, head, tail = _file_size(self.rng)
                if head:
                    os.write(fd, self.data[:head])
                if tail:
                    os.pwrite(fd, self.data[: 4 * KIB], size - 4 * KIB)
                if size > head:
                    os.ftruncate(fd, size)
        finally:
            os.close(fd)
        self.files += 1
        if sparse:
            self.sparse += 1
            return
        self.seen_files += 1
        item = (d, f"{dir_path}/{name}")
        if len(self.reservoir) < RESERVOIR_SIZE:
            self.reservoir.append(item)
        else:
            k = self.rng.randrange(self.seen_files)
            if k < RESERVOIR_SIZE:
                self.reservoir[k] = item


def _cached_info(dest: Path, entries: int, started: float) -> TreeInfo:
    marker = _read_marker(dest) or {}

    def count(key: str) -> int:
        value = marker.get(key, 0)
        return value if isinstance(value, int) else 0

    return TreeInfo(
        path=dest,
        entries=entries,
        directories=count("directories"),
        files=count("files"),
        hardlinks=count("hardlinks"),
        symlinks=count("symlinks"),
        sparse_files=count("sparse_files"),
        cached=True,
        seconds=time.perf_counter() - started,
    )


def _tiny_counts(rng: random.Random, total: int, slots: int) -> list[int]:
    """1 or 2 entries in each of ``slots`` directories, ``total`` in all."""
    extra = max(0, min(slots, total - slots))
    counts = [1] * slots
    for j in rng.sample(range(slots), extra):
        counts[j] += 1
    rest = total - sum(counts)  # only when total < slots or > 2 * slots
    for j in range(abs(rest)):
        counts[j % slots] += 1 if rest > 0 else -1
    return counts


def plan_shape(
    rng: random.Random,
    shape: str,
    entries: int,
    depth: int,
    files_per_dir: int,
) -> tuple[list[str], list[int]]:
    """Directories (relative, parents first; ``""`` is the root) and how
    many other entries each one gets; the counts add up to ``entries``
    minus the directories."""
    if shape == "flat":
        return [""], [entries]
    if shape == "dirs":
        rel_dirs, _ = _plan_dirs(rng, entries // 2, depth)
        return rel_dirs, [entries % 2] + [1] * (len(rel_dirs) - 1)
    if shape == "many-tiny":
        n_dirs = min(entries - 1, max(1, round(entries / TINY_DIR_ENTRIES)))
        rel_dirs, _ = _plan_dirs(rng, n_dirs, depth)
        return rel_dirs, _tiny_counts(rng, entries - n_dirs, len(rel_dirs))
    per_dir = files_per_dir + 1
    if shape == "one-huge":
        huge = round(entries * HUGE_SHARE)  # "big" and all below it
        huge_dirs = min(huge, max(1, round(huge / per_dir)))
        rest = entries - huge
        rest_dirs = min(rest, max(0, round(rest / per_dir)))
        small, _ = _plan_dirs(rng, rest_dirs, depth)
        big, _ = _plan_dirs(rng, huge_dirs - 1, max(1, depth - 1), "big")
        counts = _split(rng, rest - rest_dirs, len(small), files_per_dir)
        counts += _split(rng, huge - huge_dirs, len(big), files_per_dir)
        return small + big, counts
    if shape != "balanced":
        msg = f"unknown shape {shape!r} (one of {', '.join(SHAPES)})"
        raise ValueError(msg)
    n_dirs = min(entries, max(1, round(entries / per_dir)))
    rel_dirs, _ = _plan_dirs(rng, n_dirs, depth)
    counts = _split(rng, entries - n_dirs, len(rel_dirs), files_per_dir)
    return rel_dirs, counts


def build_tree(
    dest: Path | str,
    entries: int,
    *,
    seed: int = 0,
    depth: int = 6,
    files_per_dir: int = 16,
    shape: str = "balanced",
    empty_files: bool = False,
    force: bool = False,
    progress: bool = False,
) -> TreeInfo:
    """Create the tree at ``dest`` unless it is already there."""
    if entries < 1:
        raise ValueError("entries must be >= 1")
    if depth < 1 or files_per_dir < 1:
        raise ValueError("depth and files_per_dir must be >= 1")
    if shape not in SHAPES:
        msg = f"unknown shape {shape!r} (one of {', '.join(SHAPES)})"
        raise ValueError(msg)
    dest = Path(dest).absolute()
    params = _params(entries, seed, depth, files_per_dir, shape, empty_files)
    started = time.perf_counter()
    if _prepare_dest(dest, params, force):
        return _cached_info(dest, entries, started)

    # Benchmark data, not cryptography: a seeded PRNG is the point.
    rng = random.Random(seed)  # noqa: S311
    rel_dirs, counts = plan_shape(rng, shape, entries, depth, files_per_dir)
    n_dirs = len(rel_dirs) - 1
    root = str(dest)
    abs_dirs = [f"{root}/{p}" if p else root for p in rel_dirs]
    n_other = entries - n_dirs
    n_sparse = 0 if empty_files else min(n_other, 3 if entries >= 1000 else 1)
    sparse_at = sorted(rng.sample(range(n_other), n_sparse))

    dest.mkdir(parents=True)
    for path in abs_dirs[1:]:
        os.mkdir(path)

    builder = _Builder(
        rng,
        abs_dirs,
        empty_files=empty_files,
        same_dir_links=len(abs_dirs) == 1,
    )
    first_slot = 0
    last_report = time.monotonic()
    for d, count in enumerate(counts):
        slots = {
            s - first_slot
            for s in sparse_at
            if first_slot <= s < first_slot + count
        }
        first_slot += count
        builder.fill(d, count, slots)
        if progress and time.monotonic() - last_report > 5:
            last_report = time.monotonic()
            print(
                f"maketree: {dest}: {d + 1}/{len(abs_dirs)} directories",
                file=sys.stderr,
            )

    created = n_dirs + builder.files + builder.hardlinks + builder.symlinks
    if created != entries:
        msg = f"created {created} entries, expected {entries}"
        raise RuntimeError(msg)
    marker = dict(params)
    marker.update(
        directories=n_dirs,
        files=builder.files,
        hardlinks=builder.hardlinks,
        symlinks=builder.symlinks,
        sparse_files=builder.sparse,
    )
    # Written last: a half-built tree has no marker and is rebuilt.
    tmp = dest / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
    tmp.rename(dest / MARKER)
    return TreeInfo(
        path=dest,
        entries=created,
        directories=n_dirs,
        files=builder.files,
        hardlinks=builder.hardlinks,
        symlinks=builder.symlinks,
        sparse_files=builder.sparse,
        cached=False,
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build a deterministic synthetic tree (see module doc)."
    )
    parser.add_argument("dest", type=Path, help="directory to create")
    parser.add_argument(
        "--entries", type=int, required=True, help="entries to create"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--files-per-dir", type=int, default=16)
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        default="balanced",
        help="tree shape (see the module doc; default: balanced)",
    )
    parser.add_argument(
        "--empty-files",
        action="store_true",
        help="zero-byte regular files, no sparse files (cheap huge trees)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="delete DEST even if it is not a tree made by this script",
    )
    args = parser.parse_args(argv)
    info = build_tree(
        args.dest,
        args.entries,
        seed=args.seed,
        depth=args.depth,
        files_per_dir=args.files_per_dir,
        shape=args.shape,
        empty_files=args.empty_files,
        force=args.force,
        progress=True,
    )
    state = (
        "already present" if info.cached else f"built in {info.seconds:.1f} s"
    )
    print(
        f"maketree: {info.path}: {state}: {info.directories} dirs, "
        f"{info.files} files ({info.sparse_files} sparse 1 GiB), "
        f"{info.hardlinks} hard links, {info.symlinks} symlinks",
        file=sys.stderr,
    )
    print(info.entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
