"""Three kinds of storage side by side: du, gdu and du-exporter's threads.

The figures behind ``scan-threads``' default and the README's Performance
table.  For each storage kind, in one run:

* ``warm``: a ``--entries`` tree (1M by default) after one ``du -s``;
* ``cold``: the same tree, ``sync; echo 3 > /proc/sys/vm/drop_caches``
  before every command (in a VM this empties the guest's caches only);
* ``fuse``: a ``--fuse-entries`` tree (20k) through tests/fusefs.py,
  ``--delay-ms`` (0.5) added to every metadata call, kernel caches off,
  mounted afresh for every command (each one's first pass: libfuse 3.14
  serialises the first lookups in a directory);

it times ``du -sB1``, ``gdu -n -p -s --no-prefix`` (when on PATH) and the
one-shot ``python -m du_exporter --mode file`` with default settings, then
with ``--scan-threads T`` for each ``--threads`` T (default ``max-procs``
= core count).  Wall time, CPU and peak RSS summed over the process tree
come from bench_scan.measure; du-exporter's root size must equal du's.

Stdout: Markdown tables (per kind, then ratios to du against the issue's
targets); ``--chart PNG`` also writes a bar chart (matplotlib, the docs
extra) and ``--json`` the raw figures.  Exit 1 if a scan failed or differed
from du.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import bench_scan
import maketree

from bench_scan import (
    MIB,
    Measured,
    ScanFacts,
    drop_caches,
    log,
    markdown_table,
)


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import fusefs


KINDS = ("warm", "cold", "fuse")
#: The issue's targets: wall time as a share of du's, default settings.
TARGETS = {"warm": 0.55, "cold": 0.40, "fuse": 0.15}


@dataclass
class Row:
    kind: str
    tool: str
    setting: str
    wall: float
    cpu: float
    peak_rss_mib: float
    size: int | None
    exact: str
    parent_mib: float = 0.0
    worker_mib: float = 0.0


def exporter_argv(python: str, tree: Path, run_dir: Path, dir_level: int,
                  extra: list[str]) -> list[str]:
    return [python, "-m", "du_exporter", "--mode", "file",
            "--analyzed-path", str(tree), "--dir-level", str(dir_level),
            "--db-path", str(run_dir / "bench.db"),
            "--output-file", str(run_dir / "bench.prom"),
            "--log-level", "warning", *extra]


def gdu_total(stdout: str) -> int | None:
    try:
        return int(stdout.split(None, 1)[0])
    except (ValueError, IndexError):
        return None


class Storage:
    """Runs commands on one kind of storage (prepares it before each)."""

    def __init__(self, kind: str, tree: Path, delay_ms: float, mnt: Path) -> None:
        self.kind, self.tree, self.delay_ms, self.mnt = kind, tree, delay_ms, mnt

    @contextlib.contextmanager
    def target(self) -> Iterator[Path]:
        """The path to scan, ready for one command."""
        if self.kind == "fuse":
            with fusefs.mounted(self.tree, self.mnt, delay_ms=self.delay_ms) as m:
                yield m
            return
        if self.kind == "cold":
            problem = drop_caches()
            if problem is not None:
                msg = f"dropping caches: {problem}"
                raise RuntimeError(msg)
        yield self.tree

    def run(self, argv_of: Callable[[Path], list[str]],
            env: dict[str, str] | None = None) -> Measured:
        with self.target() as path:
            return bench_scan.measure(argv_of(path), env=env)


def _one(args: argparse.Namespace, storage: Storage, tool: str, setting: str,
         gdu: str | None, run_dir: Path, env: dict[str, str],
         total: int | None) -> Row:
    """One timed command on ``storage``."""
    kind = storage.kind
    if tool == "du -sB1":
        m = storage.run(lambda p: ["du", "-sB1", str(p)])
        size = bench_scan.parse_du_total(m.stdout) if m.returncode == 0 else None
        return Row(kind, tool, setting, m.wall, m.cpu, m.peak_rss / MIB, size,
                   "reference" if size is not None else "failed")
    if tool.startswith("gdu"):
        assert gdu is not None
        m = storage.run(lambda p: [gdu, "-n", "-p", "-s", "--no-prefix", str(p)])
        size = gdu_total(m.stdout) if m.returncode == 0 else None
        return Row(kind, tool, setting, m.wall, m.cpu, m.peak_rss / MIB, size,
                   "-" if size is not None else "failed")
    extra = [] if setting == "default" else ["--" + setting.replace(" ", "=")]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{run_dir / 'bench.db'}{suffix}").unlink(missing_ok=True)
    m = storage.run(lambda p: exporter_argv(
        args.python, p, run_dir, args.dir_level, extra), env=env)
    prom = run_dir / "bench.prom"
    size = None
    if m.returncode == 0 and prom.exists():
        # The root is labelled with the path scanned (the mount point).
        facts = ScanFacts.parse(prom.read_text(encoding="utf-8"),
                                str(storage.mnt if kind == "fuse" else storage.tree))
        size = facts.root_size
    else:
        log(f"du-exporter failed: {m.stderr[-2000:]}")
    exact = "failed" if size is None else ("yes" if size == total else "NO")
    return Row(kind, tool, setting, m.wall, m.cpu, m.peak_rss / MIB, size,
               exact, m.parent_hwm / MIB, m.worker_hwm / MIB)


def bench_kind(args: argparse.Namespace, kind: str, tree: Path,
               gdu: str | None, run_dir: Path) -> list[Row]:
    """Every command ``--repeat`` times, interleaved (rounds of all of
    them, so that a change in the machine's load hits all alike); the
    median-wall run of each is reported, with the worst exactness."""
    storage = Storage(kind, tree, args.delay_ms, run_dir / "mnt")
    if kind == "warm":
        subprocess.run(["du", "-s", str(tree)], stdout=subprocess.DEVNULL, check=False)
    env = bench_scan.exporter_env(run_dir)
    # Byte-code compiled before the first timed run, not during it.
    subprocess.run([args.python, "-m", "du_exporter", "--version"], env=env,
                   stdout=subprocess.DEVNULL, check=False)
    commands = [("du -sB1", "-")]
    if gdu is not None:
        commands.append(("gdu -n -p -s", "-"))
    commands.append(("du-exporter", "default"))
    commands += [("du-exporter", f"scan-threads {t}") for t in args.threads]
    runs: dict[tuple[str, str], list[Row]] = {c: [] for c in commands}
    total: int | None = None
    for round_ in range(args.repeat):
        for tool, setting in commands:
            row = _one(args, storage, tool, setting, gdu, run_dir, env, total)
            if tool == "du -sB1":
                total = row.size
            runs[tool, setting].append(row)
            log(f"{kind} #{round_ + 1}: {tool} {setting}: {row.wall:.2f} s, "
                f"rss {row.peak_rss_mib:.1f} MiB, {row.exact}")
    rows = []
    for rs in runs.values():
        pick = sorted(rs, key=lambda r: r.wall)[len(rs) // 2]
        if any(r.exact in {"NO", "failed"} for r in rs):
            pick.exact = next(r.exact for r in rs if r.exact in {"NO", "failed"})
        rows.append(pick)
    return rows


def kind_table(rows: list[Row]) -> str:
    du = rows[0].wall
    return markdown_table(
        ["tool", "setting", "wall s", "x du", "cpu s", "peak RSS MiB",
         "parent / worker MiB", "= du"],
        [[r.tool, r.setting, f"{r.wall:.2f}", f"{r.wall / du:.2f}",
          f"{r.cpu:.2f}", f"{r.peak_rss_mib:.1f}",
          f"{r.parent_mib:.1f} / {r.worker_mib:.1f}" if r.parent_mib else "-",
          r.exact] for r in rows],
    )


def summary(by_kind: dict[str, list[Row]]) -> str:
    out = []
    for kind, rows in by_kind.items():
        du = rows[0].wall
        default = next(r for r in rows if r.setting == "default")
        gdu = next((r for r in rows if r.tool.startswith("gdu")), None)
        sweep = [r for r in rows if r.setting.startswith("scan-threads")]
        best = min(sweep, key=lambda r: r.wall) if sweep else None
        met = default.wall / du <= TARGETS[kind] and (
            kind != "fuse" or gdu is None or default.wall < gdu.wall)
        out.append([
            kind, f"{du:.2f} s", f"{default.wall / du:.2f}x",
            f"≤ {TARGETS[kind]:.2f}x" + (", < gdu" if kind == "fuse" else ""),
            "met" if met else "missed",
            "-" if gdu is None else f"{gdu.wall / du:.2f}x",
            "-" if best is None else f"{best.setting}: {best.wall / du:.2f}x",
        ])
    return markdown_table(
        ["storage", "du -sB1", "du-exporter default", "target", "verdict",
         "gdu", "best sweep"], out)


def chart(by_kind: dict[str, list[Row]], path: Path) -> None:
    import matplotlib as mpl  # noqa: PLC0415 - optional (the docs extra)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    kinds = list(by_kind)
    labels: list[str] = []
    for rows in by_kind.values():
        for r in rows[1:]:
            label = r.tool if r.tool != "du-exporter" else r.setting
            if label not in labels:
                labels.append(label)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        values = []
        for kind in kinds:
            rows = by_kind[kind]
            hit = [r for r in rows[1:]
                   if (r.tool if r.tool != "du-exporter" else r.setting) == label]
            values.append(hit[0].wall / rows[0].wall if hit else 0.0)
        ax.bar([k + i * width for k in range(len(kinds))], values, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([k + width * (len(labels) - 1) / 2 for k in range(len(kinds))])
    ax.set_xticklabels([f"{k} (du {by_kind[k][0].wall:.1f} s)" for k in kinds])
    ax.set_ylabel("wall time ÷ du -sB1 (lower is better)")
    ax.set_title("du-exporter vs du and gdu by storage kind")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/du-bench"))
    p.add_argument("--entries", type=int, default=1_000_000,
                   help="tree for warm and cold (default: 1000000)")
    p.add_argument("--fuse-entries", type=int, default=20_000,
                   help="tree for fuse (default: 20000)")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help="comma-separated subset of " + ", ".join(KINDS))
    p.add_argument("--threads", default="1,4,16,64",
                   help="scan-threads values to sweep (default: 1,4,16,64)")
    p.add_argument("--delay-ms", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of all commands; the median run is reported")
    p.add_argument("--dir-level", type=int, default=3)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--no-gdu", action="store_true", help="leave gdu out")
    p.add_argument("--chart", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    if not set(args.kinds) <= set(KINDS):
        p.error(f"--kinds: one of {', '.join(KINDS)}")
    args.threads = [int(t) for t in args.threads.split(",") if t]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gdu = None if args.no_gdu else shutil.which("gdu")
    by_kind: dict[str, list[Row]] = {}
    args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        run_dir = Path(tmp)
        for kind in args.kinds:
            entries = args.fuse_entries if kind == "fuse" else args.entries
            info = maketree.build_tree(args.workdir / f"tree-{entries}", entries,
                                       progress=True)
            by_kind[kind] = bench_kind(args, kind, info.path, gdu, run_dir)
    for kind, rows in by_kind.items():
        entries = args.fuse_entries if kind == "fuse" else args.entries
        print(f"\n### {kind}: {entries:,} entries\n")
        print(kind_table(rows))
    print("\n### Ratios to du (default settings)\n")
    print(summary(by_kind))
    load = bench_scan._loadavg()  # noqa: SLF001 - one shared helper
    print(f"\nload average at the end: {load}")
    if args.chart:
        chart(by_kind, args.chart)
    if args.json:
        args.json.write_text(json.dumps(
            {k: [asdict(r) for r in rows] for k, rows in by_kind.items()},
            indent=1), encoding="utf-8")
    ok = all(r.exact in {"yes", "reference", "-"} for rows in by_kind.values()
             for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
