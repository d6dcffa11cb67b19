"""What one exported row costs the parent process, stage by stage.

Scans a ``bench_many.py`` tree (D directories of one empty file,
``dir-level: 4``, D + 1 exported directories) once with the real worker
pool and keeps the workers' messages as they arrived (pickled).  Then,
``--repeat`` times on a fresh database, replays them through the
parent's real code path (no workers, so no competition for the CPU) and
takes the CPU time of each stage (``time.process_time``: other
sessions' load on a shared machine moves it much less than wall time):

* **receive**: unpickling the messages (the pool's reader thread);
* **store**: :meth:`ScanRunner._record`, batching rows and links into
  SQLite transactions of ``batch-size``;
* **complete**: placing links, summing subtrees, publishing the
  generation (:meth:`Store.complete_generation`);
* **textfile**: mode ``file``'s output, rendered from the store and
  written (:func:`write_textfile` with the health families);
* **render gzip**: the ``/metrics`` body (:func:`render_gzip`), for
  comparison (not part of mode ``file``).

Prints a Markdown table of CPU µs per exported row (the fastest of the
repeats per stage, the least disturbed on a shared machine, and the
median) to stdout; progress to stderr.

Usage::

    python benchmarks/profile_rows.py [--dirs 100000] [--repeat 5]
        [--workdir /tmp/du-many] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import statistics
import sys
import tempfile
import threading
import time

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_many import LEVEL, tree
from bench_scan import log, markdown_table

from du_exporter import config as config_mod
from du_exporter.expose.families import HealthCollector, make_registry
from du_exporter.expose.render import render_gzip
from du_exporter.expose.textfile import write_textfile
from du_exporter.paths import root_levels
from du_exporter.scan.model import Plan, Unit, UnitResult
from du_exporter.scan.pool import ScanPool
from du_exporter.scan.runner import ScanRunner
from du_exporter.scan.status import ScanStatus
from du_exporter.store.reader import Reader
from du_exporter.store.writer import Store


class _Recorder:
    """A pool that walks for real and keeps every message, pickled."""

    def __init__(self, pool: ScanPool) -> None:
        self.pool = pool
        self.procs = pool.procs
        self.messages: list[bytes] = []

    def walk(self, plan: Plan, top: Unit,
             on_result: Callable[[UnitResult], None],
             stop: threading.Event) -> None:
        def keep(res: UnitResult) -> None:
            self.messages.append(pickle.dumps(res))
            on_result(res)
        self.pool.walk(plan, top, keep, stop)


class _Replay:
    """A pool that replays recorded messages, timing receive and store."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages
        self.receive = 0.0
        self.store = 0.0

    def walk(self, plan: Plan, top: Unit,  # noqa: ARG002 - the pool's signature
             on_result: Callable[[UnitResult], None],
             stop: threading.Event) -> None:  # noqa: ARG002
        for m in self.messages:
            t0 = time.process_time()
            res = pickle.loads(m)  # noqa: S301 - our own recording
            t1 = time.process_time()
            on_result(res)
            self.store += time.process_time() - t1
            self.receive += t1 - t0


def _config(root: Path, db: Path, out: Path, batch: int) -> config_mod.Config:
    return config_mod.build({}, {}, {
        "db-path": str(db), "analyzed-path": str(root), "dir-level": LEVEL,
        "output-file": str(out), "batch-size": batch,
    }, {"HOME": "/tmp"})


def _timed_store(acc: dict[str, float]) -> type[Store]:
    class TimedStore(Store):
        def complete_generation(self, *args: Any, **kw: Any) -> None:
            t = time.process_time()
            super().complete_generation(*args, **kw)
            acc["complete"] += time.process_time() - t
    return TimedStore


def replay(cfg: config_mod.Config, messages: list[bytes]) -> dict[str, float]:
    acc = {"complete": 0.0}
    for f in cfg.db_path.parent.glob(cfg.db_path.name + "*"):
        f.unlink()
    store = _timed_store(acc).open(cfg.db_path)
    status = ScanStatus(list(root_levels(cfg.roots)))
    pool = _Replay(messages)
    try:
        runner = ScanRunner(cfg, pool, store, status)  # type: ignore[arg-type]
        if not runner.scan_all(threading.Event()):
            msg = "replayed scan failed"
            raise RuntimeError(msg)
        reader = Reader(cfg.db_path)
        t = time.process_time()
        health = make_registry(HealthCollector(reader, status, lambda: cfg),
                               process_metrics=False)
        write_textfile(cfg.output_file, reader, cfg, health)
        textfile = time.process_time() - t
        t = time.process_time()
        render_gzip(reader, cfg)
        gz = time.process_time() - t
    finally:
        store.close()
    return {
        "receive": pool.receive,
        "store": pool.store,
        "complete": acc["complete"],
        "textfile": textfile,
        "render gzip": gz,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dirs", type=int, default=100_000)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/du-many"))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--procs", type=int, default=2)
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    root = tree(args.workdir, args.dirs)
    tmp = Path(tempfile.mkdtemp(prefix="profile-rows-"))
    try:
        cfg = _config(root, tmp / "rows.db", tmp / "rows.prom", args.batch_size)
        log("recording the workers' messages")
        store = Store.open(cfg.db_path)
        with ScanPool(args.procs) as real:
            recorder = _Recorder(real)
            status = ScanStatus(list(root_levels(cfg.roots)))
            ScanRunner(cfg, recorder, store, status).scan_all(  # type: ignore[arg-type]
                threading.Event()
            )
        store.close()
        messages = recorder.messages
        runs = []
        for i in range(args.repeat):
            log(f"replay {i + 1}/{args.repeat}")
            runs.append(replay(cfg, messages))
        rows = sum(1 for line in cfg.output_file.read_bytes().splitlines()
                   if line.startswith(b"node_disk_usage_bytes{"))
    finally:
        shutil.rmtree(tmp)
    stages = list(runs[0])
    table = []
    for stage in [*stages, "parent, mode file"]:
        if stage == "parent, mode file":
            vals = [sum(r[s] for s in stages if s != "render gzip") for r in runs]
        else:
            vals = [r[stage] for r in runs]
        table.append([stage, f"{min(vals) / rows * 1e6:.2f}",
                      f"{statistics.median(vals) / rows * 1e6:.2f}",
                      f"{statistics.median(vals):.3f}"])
    print(f"{rows:,} exported rows, {len(messages)} messages, batch-size "
          f"{args.batch_size}, {args.repeat} replays\n")
    print(markdown_table(["stage", "µs/row (min)", "µs/row (median)",
                          "median s"], table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
