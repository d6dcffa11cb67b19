"""How ``dir-level`` drives the number of exported series.

Scans one tree (default ``/usr``; or a synthetic tree of ``--entries N``
built with ``maketree.py``) once per ``--dir-level`` 0..5 with the real
exporter in mode ``file`` (``--output-file``), and counts, in each
textfile, the sample lines per metric family (from the ``# TYPE`` lines)
and the textfile's size.  The directory count per level is checked
against ``find TREE -maxdepth L -type d`` (no symlinks followed, like the
exporter's default).

Stdout gets Markdown only (the command, the table, notes); progress goes
to stderr.  Exit status 1 if a scan failed or a directory count differs
from find's.

    python benchmarks/series_per_level.py                 # /usr, levels 0-5
    python benchmarks/series_per_level.py --path /home --levels 0,1,2,3
    python benchmarks/series_per_level.py --entries 200000
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import maketree


#: The families with one sample per exported directory.
DIRECTORY_FAMILIES = (
    "node_disk_usage_bytes",
    "node_disk_usage_file_count",
    "node_disk_usage_directory_count",
    "node_disk_usage_latest_mtime_seconds",
)


def log(message: str) -> None:
    print(f"series: {message}", file=sys.stderr, flush=True)


def count_samples(text: str) -> Counter[str]:
    """Sample lines per metric family (as named by the ``# TYPE`` lines)."""
    counts: Counter[str] = Counter()
    family = ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
        elif line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            counts[family if name.startswith(family) else name] += 1
    return counts


def directories_by_depth(tree: Path) -> Counter[int]:
    """``find TREE -type d`` counted per depth (0 = the tree itself)."""
    out = subprocess.run(
        ["find", str(tree), "-type", "d", "-printf", "%d\n"],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        log(f"find: {out.stderr.strip()[:500]} (counting what it listed)")
    return Counter(int(d) for d in out.stdout.split())


@dataclass
class Run:
    level: int
    counts: Counter[str]
    size: int
    seconds: float

    @property
    def directories(self) -> int:
        return self.counts["node_disk_usage_bytes"]

    @property
    def directory_series(self) -> int:
        return sum(self.counts[f] for f in DIRECTORY_FAMILIES)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def scan(python: str, tree: Path, level: int, workdir: Path, procs: int) -> Run:
    """One ``--mode file`` scan at ``level``, from an empty database."""
    db = workdir / f"level-{level}.db"
    out = workdir / f"level-{level}.prom"
    for stale in (db, out):
        stale.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DU_EXPORTER_")}
    cmd = [
        python, "-m", "du_exporter", "--mode", "file",
        "--analyzed-path", str(tree), "--dir-level", str(level),
        "--db-path", str(db), "--output-file", str(out),
        "--max-procs", str(procs), "--log-level", "warning",
    ]
    log(shlex.join(cmd))
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=workdir, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        msg = f"dir-level {level}: du-exporter exited {proc.returncode}"
        raise RuntimeError(msg)
    text = out.read_text(encoding="utf-8")
    for leftover in workdir.glob(f"level-{level}.db*"):
        leftover.unlink()
    return Run(level, count_samples(text), len(text.encode()), seconds)


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # unreachable


def table(runs: list[Run], by_depth: Counter[int]) -> tuple[list[str], bool]:
    lines = [
        "| dir-level | directories | = find | directory series | other series | total series | textfile | bytes / directory |",
        "|---:|---:|:---:|---:|---:|---:|---:|---:|",
    ]
    ok = True
    for run in runs:
        expected = sum(n for depth, n in by_depth.items() if depth <= run.level)
        match = "yes" if expected == run.directories else f"**no** ({expected})"
        ok = ok and expected == run.directories
        lines.append(
            f"| {run.level} | {run.directories:,} | {match} "
            f"| {run.directory_series:,} "
            f"| {run.total - run.directory_series:,} | {run.total:,} "
            f"| {human(run.size)} "
            f"| {run.size // max(run.directories, 1):,} |"
        )
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--path", type=Path, default=Path("/usr"),
        help="tree to scan (default: /usr)",
    )
    parser.add_argument(
        "--entries", type=int,
        help="scan a synthetic tree of N entries (maketree.py) instead",
    )
    parser.add_argument(
        "--levels", default="0,1,2,3,4,5",
        help="comma-separated dir-levels (default: 0,1,2,3,4,5)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "du-series",
        help="synthetic trees, scratch databases and textfiles (default: /tmp/du-series)",
    )
    parser.add_argument(
        "--procs", type=int, default=os.cpu_count() or 1,
        help="--max-procs for du-exporter (default: CPU count)",
    )
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]

    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.entries:
        info = maketree.build_tree(
            args.workdir / f"tree-{args.entries}", args.entries, progress=True
        )
        tree = info.path
    else:
        tree = args.path.resolve()
    runs_dir = args.workdir / "runs"
    runs_dir.mkdir(exist_ok=True)

    log(f"counting directories of {tree} with find")
    by_depth = directories_by_depth(tree)
    runs = []
    for level in levels:
        try:
            runs.append(scan(args.python, tree, level, runs_dir, args.procs))
        except RuntimeError as e:
            log(str(e))
            return 1
        log(f"dir-level {level}: {runs[-1].total} series in {runs[-1].seconds:.1f} s")

    lines, ok = table(runs, by_depth)
    command = shlex.join(["python", "benchmarks/series_per_level.py", *(argv or sys.argv[1:])])
    print(f"`{command}` — `{tree}`, {sum(by_depth.values()):,} directories")
    print()
    print("\n".join(lines))
    print()
    other = sorted(
        name for name in runs[-1].counts if name not in DIRECTORY_FAMILIES
    ) if runs else []
    print(
        f"Directory series: {len(DIRECTORY_FAMILIES)} per directory "
        f"({', '.join(f'`{f}`' for f in DIRECTORY_FAMILIES)}). "
        f"Other series: the file-size histogram of the root and the self "
        f"metrics ({len(other)} families), independent of dir-level. "
        f"Textfile: mode `file` output, no `process_*` metrics."
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
