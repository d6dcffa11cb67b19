"""Watch mode: change-to-metric latency and cost against a full scan.

Needs root (a private tmpfs or loop-mounted ext4 is mounted under
``--workdir``: a mark on the root filesystem would see every write on
the machine).  Builds a ``maketree.py`` tree of ``--entries`` entries on
it, starts the exporter with ``--watch`` (default delay, 2 s) and one
scan, then for each ``--changes N`` applies N mixed changes (create,
append, truncate, delete, mkdir -p, rename across parents, rm -r of a
leaf; for N >= 10,000 a burst of N new files) and measures:

* latency: from the last change until the publication that made the
  rows exact (``du_exporter_watch_last_publish_timestamp_seconds``), and
  until the bench saw ``du_exporter_watch_pending_dirs`` at 0 and every
  exported row equal to ``du -B1 --max-depth=L`` (so it includes du's
  own run time when polling: seconds on 1M entries);
* entries read (``du_exporter_watch_entries_total``) against one full
  scan's (``du_exporter_scan_entries``);
* CPU seconds of the exporter's main process (the watch threads run
  there) during the update, against the whole scan's CPU (workers too);
* the baseline read after the scan: seconds, its CPU, the ``watch_dirs``
  rows and bytes, and the process's RSS growth for the in-memory tree.

Markdown to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

from pathlib import Path

from bench_scan import markdown_table
from maketree import build_tree


TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    fields = raw[raw.rfind(b")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            for kid in (task / "children").read_text().split():
                try:
                    ticks += int(cpu_seconds(int(kid), children=True) * TICK)
                except OSError:
                    continue
    return ticks / TICK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def mount(kind: str, mnt: Path, image: Path, size_mib: int) -> None:
    mnt.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mnt)]
        subprocess.run(cmd, check=True)
        return
    with image.open("wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)


class Exporter:
    def __init__(self, root: Path, workdir: Path, level: int) -> None:
        self.db = workdir / "state" / "du.db"
        self.events: list[dict[str, object]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "du_exporter", "--analyzed-path", str(root),
             "--dir-level", str(level), "--bind-address", "127.0.0.1:0",
             "--db-path", str(self.db), "--log-format", "json",
             "--scan-interval-minutes", "0", "--watch"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=workdir,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.url = str(self.wait("listening")["url"])

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                log(line.decode(errors="replace").rstrip())

    def wait(self, name: str, timeout: float = 3600) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("event") == name:
                    return e
            time.sleep(0.05)
        msg = f"no {name} event"
        raise RuntimeError(msg)

    def scrape(self) -> dict[tuple[str, str], float]:
        from prometheus_client.parser import (  # noqa: PLC0415 - venv only
            text_string_to_metric_families,
        )

        with urllib.request.urlopen(self.url + "/metrics", timeout=60) as r:  # noqa: S310 - loopback
            text = r.read().decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                reason = s.labels.get("reason")  # rescans, one series each
                name = s.name if reason is None else f"{s.name}:{reason}"
                out[name, s.labels.get("path", "")] = s.value
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def du_rows(root: Path, level: int) -> dict[str, int]:
    out = subprocess.run(
        ["du", "-0", "-B1", f"--max-depth={level}", str(root)],
        capture_output=True, check=True,
    ).stdout
    rows = {}
    for rec in filter(None, out.split(b"\0")):
        size, _, name = rec.partition(b"\t")
        rows[name.decode()] = int(size)
    return rows


def exported(samples: dict[tuple[str, str], float]) -> dict[str, int]:
    return {p: int(v) for (n, p), v in samples.items() if n == "node_disk_usage_bytes"}


def mutate(root: Path, rng: random.Random, n: int) -> None:
    dirs = [Path(p) for p, _, _ in os.walk(root)]
    leaves = [Path(p) for p, ds, _ in os.walk(root) if not ds]
    files = [Path(p) / f for p, _, fs in os.walk(root) for f in fs]
    if n >= 10_000:  # a burst of new files in a few directories
        targets = rng.sample(dirs, min(20, len(dirs)))
        for i in range(n):
            (targets[i % len(targets)] / f"burst{i}").write_bytes(b"b" * 1000)
        return
    done = 0
    while done < n:
        op = rng.choice(["create", "append", "truncate", "delete", "mkdir",
                         "rename", "rmleaf"])
        try:
            if op == "create":
                (rng.choice(dirs) / f"new{done}-{rng.random()}").write_bytes(b"c" * rng.randrange(20000))
            elif op == "append":
                with rng.choice(files).open("ab") as f:
                    f.write(b"a" * rng.randrange(1, 20000))
            elif op == "truncate":
                os.truncate(rng.choice(files), rng.randrange(2000))
            elif op == "delete":
                rng.choice(files).unlink()
            elif op == "mkdir":
                (rng.choice(dirs) / f"mk{done}-{rng.random()}" / "x" / "y").mkdir(parents=True)
            elif op == "rename":
                src, dst = rng.choice(leaves), rng.choice(dirs)
                if src in dst.parents or src == dst:
                    continue
                src.rename(dst / f"mv{done}-{rng.random()}")
            else:
                shutil.rmtree(rng.choice(leaves))
        except OSError:
            continue
        done += 1


def break_links(root: Path) -> int:
    """Give every extra name of a multiply-linked file its own copy."""
    seen: set[tuple[int, int]] = set()
    broken = 0
    for p, _, fs in os.walk(root):
        for name in fs:
            path = Path(p) / name
            st = path.lstat()
            if st.st_nlink < 2 or path.is_symlink():
                continue
            if (st.st_dev, st.st_ino) in seen:
                copy = path.with_name(name + ".copy")
                shutil.copy2(path, copy)
                copy.replace(path)
                broken += 1
            seen.add((st.st_dev, st.st_ino))
    return broken


def converge(exp: Exporter, root: Path, level: int) -> tuple[float, dict[tuple[str, str], float]]:
    started = time.monotonic()
    label = str(root)
    while True:
        s = exp.scrape()
        if s.get(("du_exporter_watch_pending_dirs", label)) == 0 and exported(s) == du_rows(root, level):
            return time.monotonic() - started, s
        if time.monotonic() - started > 600:
            msg = "never converged"
            raise RuntimeError(msg)
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--fs", choices=["tmpfs", "ext4"], default="tmpfs")
    ap.add_argument("--changes", default="1,100,400,20000")
    ap.add_argument("--dir-level", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/du-bench-watch"))
    ap.add_argument(
        "--hardlinks", choices=["break", "keep"], default="break",
        help="keep maketree's ~1 %% hard links (re-placed by updates) or "
        "turn them into copies first",
    )
    args = ap.parse_args()
    work: Path = args.workdir
    mnt, image = work / "mnt", Path("/dev/shm") / "du-bench-watch.img"
    size = max(1024, args.entries // 100 * 4)
    mount(args.fs, mnt, image, size)
    try:
        root = mnt / "tree"
        log(f"building {args.entries} entries on {args.fs}")
        build_tree(root, args.entries, files_per_dir=16)
        if args.hardlinks == "break":
            log(f"{break_links(root)} hard links turned into copies")
        exp = Exporter(root, work, args.dir_level)
        try:
            run(exp, root, args)
        finally:
            exp.stop()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        image.unlink(missing_ok=True)
        shutil.rmtree(work / "state", ignore_errors=True)
    return 0


def run(exp: Exporter, root: Path, args: argparse.Namespace) -> None:
    level = args.dir_level
    scan = exp.wait("scan_completed")
    scan_cpu = cpu_seconds(exp.proc.pid, children=True)
    rss0 = rss_bytes(exp.proc.pid)
    base = exp.wait("watch_baseline")
    _, s = converge(exp, root, level)
    full = s[("du_exporter_scan_entries", str(root))]
    conn = sqlite3.connect(exp.db)
    dirs = conn.execute("SELECT count(*) FROM watch_dirs").fetchone()[0]
    try:
        table = conn.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name = 'watch_dirs'"
        ).fetchone()[0]
    except sqlite3.Error:
        table = None
    conn.close()
    print(f"Tree: {args.entries:,} entries on {args.fs} (hard links: "
          f"{args.hardlinks}), dir-level {level}; "
          f"full scan {scan['seconds']} s, {full:,.0f} entries, "
          f"{scan_cpu:.1f} s CPU (all processes).\n")
    print(markdown_table(
        ["baseline read", "seconds", "entries", "directories (watch_dirs rows)",
         "watch_dirs bytes", "bytes per entry", "RSS growth MiB"],
        [[
            "after the scan", str(base["seconds"]), f"{base['entries']:,}",
            f"{dirs:,}", "n/a" if table is None else f"{table:,}",
            "n/a" if table is None else f"{table / full:.1f}",
            f"{(rss_bytes(exp.proc.pid) - rss0) / 2**20:.1f}",
        ]],
    ))
    print()
    rng = random.Random(11)  # noqa: S311 - reproducible changes
    rows = []
    for n in [int(x) for x in args.changes.split(",")]:
        before = exp.scrape()
        cpu0 = cpu_seconds(exp.proc.pid)
        t0 = time.monotonic()
        mutate(root, rng, n)
        applying = time.monotonic() - t0
        last_change = time.time()
        latency, after = converge(exp, root, level)
        label = str(root)
        # The publication that made the rows exact, from the exporter's own
        # gauge: the latency without du's run time in the polling above.
        published = after[("du_exporter_watch_last_publish_timestamp_seconds", label)] - last_change
        entries = after[("du_exporter_watch_entries_total", label)] - before[("du_exporter_watch_entries_total", label)]
        pubs = after[("du_exporter_watch_updates_total", label)] - before[("du_exporter_watch_updates_total", label)]
        # A rescan reads the tree twice: the scan, then the baseline.
        rescans = sum(
            v - before.get(k, 0) for k, v in after.items()
            if k[0].startswith("du_exporter_watch_rescans_total:")
        )
        read = entries + rescans * 2 * full
        rows.append([
            f"{n:,}", f"{applying:.2f}", f"{published:.2f}", f"{latency:.2f}",
            f"{entries:,.0f}",
            f"{rescans:.0f}", f"{read / full:.3f}",
            f"{cpu_seconds(exp.proc.pid) - cpu0:.2f}", f"{pubs:.0f}",
        ])
        log(f"{n} changes: {latency:.2f} s")
    print(markdown_table(
        ["changes", "making them s", "last change to publication s",
         "last change to exact rows seen s",
         "entries read by updates", "rescans", "all entries read vs full scan",
         "CPU s (watch process)", "publications"],
        rows,
    ))


if __name__ == "__main__":
    sys.exit(main())
