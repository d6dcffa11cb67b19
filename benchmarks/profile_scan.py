"""Profile one du-exporter scan per process with py-spy, and summarize it.

``py-spy`` (``pip install py-spy``; a benchmark-only tool) samples the
exporter and its scan workers (``--subprocesses``) while it scans TREE
once in mode ``file``; idle threads are not sampled, so samples are
CPU time. The summary gives, for the parent and for the workers taken
together, the share of samples per function (inclusive: the function
or anything it calls) and per leaf (self time).

Usage::

    python benchmarks/profile_scan.py TREE [--procs 2] [--engine c]
        [--dir-level 3] [--rate 250] [--raw OUT.txt] [-- EXTRA FLAGS]
    python benchmarks/profile_scan.py --summarize OUT.txt

Stdout gets Markdown.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile

from collections import Counter
from pathlib import Path


WORKER_MARK = "du_exporter.scan.worker"
_PROCESS = re.compile(r'^process \d+:"(?P<cmd>[^"]*)"$')
_LOCATION = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(:\d+)?\)$")


def _frame(raw: str) -> str:
    """``func (path/file.py:12)`` -> ``file.py:func``."""
    m = _LOCATION.match(raw)
    if m is None:
        return raw
    return f"{Path(m.group('file')).name}:{m.group('func')}"


def summarize(raw: str, top: int = 15) -> str:
    """Markdown tables from py-spy's ``--format raw`` (collapsed stacks)."""
    total: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = {
        "parent": Counter(),
        "workers": Counter(),
    }
    leaf: dict[str, Counter[str]] = {"parent": Counter(), "workers": Counter()}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        procs = [f for f in frames if _PROCESS.match(f)]
        role = "workers" if procs and WORKER_MARK in procs[-1] else "parent"
        funcs = [_frame(f) for f in frames if not _PROCESS.match(f)]
        n = int(count)
        total[role] += n
        for func in set(funcs):
            inclusive[role][func] += n
        if funcs:
            leaf[role][funcs[-1]] += n
    out = []
    for role in ("parent", "workers"):
        n = total[role]
        if not n:
            continue
        out.append(f"**{role}**: {n:,} samples\n")
        out.append("| inclusive | function | | self | leaf function |")
        out.append("|---:|---|---|---:|---|")
        inc = inclusive[role].most_common(top)
        own = leaf[role].most_common(top)
        for i in range(max(len(inc), len(own))):
            a = (
                f"{inc[i][1] / n:.1%} | `{inc[i][0]}`"
                if i < len(inc)
                else " | "
            )
            b = (
                f"{own[i][1] / n:.1%} | `{own[i][0]}`"
                if i < len(own)
                else " | "
            )
            out.append(f"| {a} | | {b} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tree", nargs="?", type=Path)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--engine", default="c")
    parser.add_argument("--dir-level", type=int, default=3)
    parser.add_argument("--rate", type=int, default=250, help="samples/s")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw output")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--summarize", type=Path, help="only summarize RAW")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("extra", nargs="*", help="more du-exporter flags")
    args = parser.parse_args(argv)
    if args.summarize is not None:
        print(summarize(args.summarize.read_text(encoding="utf-8"), args.top))
        return 0
    if args.tree is None:
        parser.error("TREE is required unless --summarize is given")
    py_spy = shutil.which("py-spy") or str(Path(args.python).parent / "py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw or Path(tmp) / "raw.txt"
        argv_ = [
            py_spy,
            "record",
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            str(args.rate),
            "--output",
            str(raw),
            "--",
            args.python,
            "-m",
            "du_exporter",
            "--mode",
            "file",
            "--analyzed-path",
            str(args.tree),
            "--dir-level",
            str(args.dir_level),
            "--max-procs",
            str(args.procs),
            "--scan-engine",
            args.engine,
            "--db-path",
            f"{tmp}/profile.db",
            "--output-file",
            f"{tmp}/profile.prom",
            "--log-level",
            "warning",
            *args.extra,
        ]
        done = subprocess.run(argv_, check=False, stdout=subprocess.DEVNULL)
        if done.returncode != 0:
            print(f"py-spy failed (exit {done.returncode})", file=sys.stderr)
            return 1
        print(summarize(raw.read_text(encoding="utf-8"), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
