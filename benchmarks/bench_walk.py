"""CPU per directory of a worker's walk, in one process, against du.

Walks TREE as one unit with ``scan_unit`` (what a scan worker runs for
a task; no pool, no store, messages dropped), and GNU ``du -sB1 TREE``
in the same run, alternated ``--repeat`` times after one warm-up ``du``.
User and system CPU come from ``getrusage`` (the walk's own threads
included; du as a child); per directory = CPU / directories walked.

Usage::

    python benchmarks/bench_walk.py TREE [--repeat 5] [--dir-level 3]
        [--engine c] [--threads 8] [--python PATH]

``--python`` runs the walk under another interpreter or checkout (e.g. a
wrapper that puts an older ``src/`` first on PYTHONPATH), so two
versions are compared on the same tree in one run.  Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

from pathlib import Path


#: Run in the measured interpreter: walk once, print the figures as JSON.
_CHILD = r"""
import json, os, resource, sys, time
from du_exporter.scan.model import Plan, Unit
from du_exporter.scan.walker import scan_unit
root, level, engine, threads = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
st = os.stat(root)
plan = Plan(exports=((root, level),), ignore=(), one_file_system=False,
            follow_symlinks=False, root_dev=st.st_dev, engine=engine,
            threads=threads)
top = Unit(root, b"", st.st_blocks * 512, st.st_size, st.st_mtime,
           dev=st.st_dev, ino=st.st_ino, uid=st.st_uid)
counts = {"rows": 0, "links": 0, "entries": 0}
def sink(res):
    counts["rows"] += len(res.rows)
    counts["links"] += len(res.links)
    counts["entries"] += res.entries
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
sink(scan_unit(plan, top, emit=sink))
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
print(json.dumps({"wall": t1 - t0, "user": r1.ru_utime - r0.ru_utime,
                  "sys": r1.ru_stime - r0.ru_stime, **counts}))
"""


def walk_once(python: str, tree: Path, level: int, engine: str,
              threads: int) -> dict[str, float]:
    out = subprocess.run(
        [python, "-c", _CHILD, str(tree), str(level), engine, str(threads)],
        capture_output=True, text=True, check=True).stdout
    figures: dict[str, float] = json.loads(out)
    return figures


def du_once(tree: Path) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = os.times().elapsed
    subprocess.run(["du", "-sB1", str(tree)], stdout=subprocess.DEVNULL,
                   check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": os.times().elapsed - start,
            "user": after.ru_utime - before.ru_utime,
            "sys": after.ru_stime - before.ru_stime}


def directories(tree: Path) -> int:
    n = 1
    for _root, dirs, _files in os.walk(tree):
        n += len(dirs)
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tree", type=Path)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--dir-level", type=int, default=3)
    p.add_argument("--engine", default="c")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--python", action="append",
                   help="interpreter(s) to compare (default: this one)")
    args = p.parse_args(argv)
    pythons = args.python or [sys.executable]
    n_dirs = directories(args.tree)
    du_once(args.tree)  # warm the cache
    runs: dict[str, list[dict[str, float]]] = {"du -sB1": []}
    for py in pythons:
        runs[py] = []
    for _ in range(args.repeat):
        runs["du -sB1"].append(du_once(args.tree))
        for py in pythons:
            runs[py].append(walk_once(py, args.tree, args.dir_level,
                                      args.engine, args.threads))
    print(f"Tree {args.tree}: {n_dirs:,} directories; dir-level "
          f"{args.dir_level}, engine {args.engine}, median of {args.repeat}\n")
    print("| walk | wall s | user s | sys s | user µs/dir | sys µs/dir "
          "| wall / du |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    du_wall = statistics.median(r["wall"] for r in runs["du -sB1"])
    for name, rs in runs.items():
        wall = statistics.median(r["wall"] for r in rs)
        user = statistics.median(r["user"] for r in rs)
        sys_ = statistics.median(r["sys"] for r in rs)
        print(f"| {name} | {wall:.2f} | {user:.2f} | {sys_:.2f} | "
              f"{user / n_dirs * 1e6:.1f} | {sys_ / n_dirs * 1e6:.1f} | "
              f"{wall / du_wall:.2f} |")
    print(f"\nload average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
