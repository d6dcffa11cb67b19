"""Memory of the processes before any scanning: what imports cost.

For each interpreter (``--python``, repeatable; e.g. a wrapper that puts
an older ``src/`` first on PYTHONPATH, to compare two versions in one
run), in fresh processes, ``--repeat`` times (medians reported):

- **worker**: the RSS of the workers of a ``ScanPool(2)`` once they have
  walked one tiny tree (so the lazily loaded C reader is in), idle;
- **parent, mode file**: a process that has imported ``du_exporter.cli``
  (everything the one-shot scan imports before it starts the pool);
- **parent, daemon**: the same plus ``du_exporter.daemon``.

RSS and its anonymous part from ``/proc/PID/status``.  Whether compiled
bytecode was found matters (compiling a module from source leaves ~1.5
MiB behind in a worker): the table says so for ``scan/walker.py``.

Usage::

    python benchmarks/bench_idle.py [--python PATH ...] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys


_STATUS = r"""
def rss(pid):
    f = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
    return [int(f[k].split()[0]) / 1024 for k in ("VmRSS", "RssAnon")]
"""

_WORKER = _STATUS + r"""
import importlib.util, json, os, tempfile, threading
from pathlib import Path
import du_exporter.scan.walker as walker
from du_exporter.scan.model import Plan, Unit
from du_exporter.scan.pool import ScanPool
with tempfile.TemporaryDirectory() as tmp:
    (Path(tmp) / "d").mkdir()
    (Path(tmp) / "d" / "f").write_bytes(b"x")
    st = os.stat(tmp)
    plan = Plan(exports=((tmp.encode(), 1),), ignore=(), one_file_system=False,
                follow_symlinks=False, root_dev=st.st_dev)
    top = Unit(tmp.encode(), b"", st.st_blocks * 512, st.st_size, st.st_mtime,
               dev=st.st_dev, ino=st.st_ino)
    with ScanPool(2) as pool:
        pool.walk(plan, top, lambda *_: None, threading.Event())
        sizes = [rss(w.proc.pid) for w in pool._workers]
pyc = importlib.util.cache_from_source(walker.__file__)
print(json.dumps({"worker": max(sizes), "bytecode": os.path.exists(pyc)}))
"""

_PARENT = _STATUS + r"""
import json, sys
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps(rss("self")))
"""


def measure(python: str) -> dict[str, object]:
    def child(code: str, *args: str) -> object:
        out = subprocess.run([python, "-c", code, *args], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)

    worker = child(_WORKER)
    assert isinstance(worker, dict)
    return {
        **worker,
        "file": child(_PARENT, "du_exporter.cli"),
        "daemon": child(_PARENT, "du_exporter.cli", "du_exporter.daemon"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    pythons = args.python or [sys.executable]
    print("| python | bytecode | worker MiB (anon) | parent, mode file MiB"
          " (anon) | parent, daemon MiB (anon) |")
    print("|---|---|---:|---:|---:|")
    for python in pythons:
        runs = [measure(python) for _ in range(args.repeat)]

        def med(key: str, runs: list[dict[str, object]] = runs) -> str:
            pairs = [r[key] for r in runs]
            rss = statistics.median(p[0] for p in pairs)  # type: ignore[index]
            anon = statistics.median(p[1] for p in pairs)  # type: ignore[index]
            return f"{rss:.1f} ({anon:.1f})"

        cached = "yes" if all(r["bytecode"] for r in runs) else "no"
        print(f"| {python} | {cached} | {med('worker')} | {med('file')} "
              f"| {med('daemon')} |")


if __name__ == "__main__":
    main()
