"""Operator tools on real scans: diff, export, top --stale; contrib files.

A real tree is scanned three times by ``du-exporter --mode file`` (a real
process, a real SQLite file), changed between the scans, and every
number the tools print is checked against GNU du run in the test on the
same state of the tree.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from du_exporter.ops.select import parse_since
from du_exporter.paths import label_path
from du_exporter.store.reader import Reader
from du_exporter.store.rows import Generation, UnitRow
from du_exporter.store.writer import Store
from helpers import du, one_error_line, run


CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
RULES = CONTRIB / "prometheus" / "du-exporter.rules.yml"
RULE_TESTS = CONTRIB / "prometheus" / "du-exporter.rules.test.yml"
DASHBOARD = CONTRIB / "grafana" / "du-exporter.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (.ci/run installs it)"
)


def local(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0,
    second: int = 0,
) -> float:
    """Unix time of a local date and time."""
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))


# Modification times of the stale parts of the tree.
Y2019 = local(2019, 3, 1, 12)
Y2020 = local(2020, 6, 1, 12)


def put(path: bytes, size: int, mtime: float | None = None) -> None:
    """A file of ``size`` random bytes at a bytes path (hostile names)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def age(top: bytes, mtime: float) -> None:
    """Set every modification time in ``top``'s subtree, deepest first."""
    for dirpath, _dirs, files in os.walk(top, topdown=False):
        for name in files:
            os.utime(os.path.join(dirpath, name), (mtime, mtime))
        os.utime(dirpath, (mtime, mtime))


def state_1(t: bytes) -> None:
    put(t + b"/projects/alpha/a.bin", 300_000)
    put(t + b"/projects/beta/b.bin", 50_000)
    put(t + b"/scratch/tmp.bin", 120_000)
    put(t + b"/archive/2019/old.tar", 200_000)
    put(t + b"/archive/2019/deep/x.log", 10_000)  # below dir-level 2
    put(t + b"/archive/2020/old.tar", 90_000)
    put(t + b"/mixed/old/o.bin", 30_000)
    put(t + b"/mixed/new/n.bin", 1_000)
    put(t + b"/weird/bad\xffname/f", 5_000)  # not UTF-8
    put(t + b"/weird/new\nline/f", 1_000)
    put(t + b"/weird/back\\slash/f", 2_000)
    age(t + b"/archive/2019", Y2019)
    age(t + b"/archive/2020", Y2020)
    os.utime(t + b"/archive", (Y2020, Y2020))
    age(t + b"/mixed/old", Y2019)
    # Old directories, one recent file three levels down: not stale.
    put(t + b"/cold/sub/deeper/recent.txt", 1_000)
    put(t + b"/cold/old.bin", 1_000, mtime=Y2019)
    for d in (b"/cold/sub/deeper", b"/cold/sub", b"/cold"):
        os.utime(t + d, (Y2019, Y2019))


def state_2(t: bytes) -> None:
    put(t + b"/projects/alpha/b.bin", 2_000_000)
    shutil.rmtree(t + b"/scratch")
    put(t + b"/projects/gamma/c.bin", 70_000)
    put(t + b"/weird/bad\xffname/g", 40_000)


def state_3(t: bytes) -> None:
    put(t + b"/projects/beta/c.bin", 500_000)
    put(t + b"/weird/\xfe\xfdnew/f", 3_000)
    shutil.rmtree(t + b"/weird/new\nline")


def du_sizes(tree: bytes, flag: str) -> dict[str, int]:
    """``du FLAG D`` for every directory D down to level 2, by label."""
    sizes = {}
    for dirpath, dirs, _files in os.walk(tree):
        if dirpath.count(b"/") - tree.count(b"/") >= 2:
            dirs.clear()
        (size,) = du(dirpath, flag).values()
        sizes[label_path(dirpath)] = size
    return sizes


@dataclass
class History:
    """A tree scanned three times, changed between the scans."""

    home: Path
    tree: Path
    db: Path
    gens: list[Generation]
    #: ``du -sB1`` / ``du -sb`` of every reported directory, per scan.
    disk: list[dict[str, int]]
    apparent: list[dict[str, int]]

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run(self.home, *args, "--db-path", self.db)

    def out(self, *args: str | Path) -> str:
        proc = self.run(*args)
        assert 0 == proc.returncode, proc.stderr
        assert "" == proc.stderr
        return proc.stdout

    def json(self, *args: str | Path) -> list[dict[str, Any]]:
        rows = json.loads(self.out(*args, "--format", "json"))
        assert isinstance(rows, list)
        return rows

    def label(self, rel: bytes) -> str:
        return label_path(os.fsencode(self.tree) + rel)


def scan(home: Path, tree: Path, db: Path) -> None:
    proc = run(
        home,
        "--mode", "file",
        "--analyzed-path", tree,
        "--dir-level", "2",
        "--keep-generations", "3",
        "--db-path", db,
        "--output-file", home / "out.prom",
        "--max-procs", "2",
    )  # fmt: skip
    assert 0 == proc.returncode, proc.stderr


@pytest.fixture(name="history", scope="module")
def _history(tmp_path_factory: pytest.TempPathFactory) -> History:
    home = tmp_path_factory.mktemp("tools")
    tree, db = home / "Tree", home / "state" / "du.db"
    disk, apparent = [], []
    for i, change in enumerate((state_1, state_2, state_3)):
        change(os.fsencode(tree))
        scan(home, tree, db)
        disk.append(du_sizes(os.fsencode(tree), "-sB1"))
        apparent.append(du_sizes(os.fsencode(tree), "-sb"))
        if i == 0:
            time.sleep(2)  # room for a --since between scans 1 and 2
    with Reader(db).session() as s:
        gens = s.complete_generations()
    assert 3 == len(gens)
    return History(home, tree, db, gens, disk, apparent)


def expected_diff(
    old: Mapping[str, int], new: Mapping[str, int]
) -> dict[str, tuple[int | None, int | None]]:
    return {p: (old.get(p), new.get(p)) for p in {*old, *new}}


def by_path(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    return {r["path"]: (r["old_bytes"], r["new_bytes"]) for r in rows}


class TestDiff:
    """diff: growth per directory between two complete scans."""

    def test_sizes_equal_du(self, history: History) -> None:
        """Old and new sizes equal du -sB1 on the tree at each scan."""
        rows = history.json("diff", "-n", "1000")

        assert expected_diff(history.disk[1], history.disk[2]) == by_path(rows)

    def test_apparent(self, history: History) -> None:
        """With --size-mode apparent, they equal du -sb."""
        rows = history.json("diff", "-n", "1000", "--size-mode", "apparent")

        assert expected_diff(
            history.apparent[1], history.apparent[2]
        ) == by_path(rows)

    def test_change_status_percent(self, history: History) -> None:
        """Change, percent and status follow from the two sizes."""
        rows = history.json("diff", "-n", "1000")

        for r in rows:
            old, new = r["old_bytes"], r["new_bytes"]
            change = (new or 0) - (old or 0)
            status = (
                "new" if old is None else "gone" if new is None
                else "grew" if change > 0 else "shrank" if change else "same"
            )
            percent = round(100 * change / old, 2) if old else None
            assert (change, status, percent) == (
                r["change_bytes"], r["status"], r["change_percent"]
            ), r
        statuses = {r["path"]: r["status"] for r in rows}
        assert "new" == statuses[history.label(b"/weird/\xfe\xfdnew")]
        assert "gone" == statuses[history.label(b"/weird/new\nline")]
        assert "grew" == statuses[history.label(b"/projects/beta")]
        assert "same" == statuses[history.label(b"/archive")]

    def test_sorted_by_absolute_change(self, history: History) -> None:
        """Largest absolute change first; -n keeps the first N."""
        rows = history.json("diff", "-n", "1000")
        changes = [abs(r["change_bytes"]) for r in rows]

        assert sorted(changes, reverse=True) == changes
        assert rows[:3] == history.json("diff", "-n", "3")
        assert 20 >= len(history.json("diff"))

    def test_csv(self, history: History) -> None:
        """CSV carries the same rows, integers exact, empty for absent."""
        text = history.out("diff", "-n", "1000", "--format", "csv")

        rows = list(csv.DictReader(io.StringIO(text)))
        assert [
            "path", "level", "status", "old_bytes", "new_bytes",
            "change_bytes", "change_percent",
        ] == list(rows[0])
        as_json = by_path(history.json("diff", "-n", "1000"))
        assert as_json == {
            r["path"]: (
                int(r["old_bytes"]) if r["old_bytes"] else None,
                int(r["new_bytes"]) if r["new_bytes"] else None,
            )
            for r in rows
        }

    def test_table(self, history: History) -> None:
        """The table names the generations and marks new and gone.

        Control characters in names are escaped, so one line per row.
        """
        lines = history.out("diff", "-n", "1000").splitlines()

        g2, g3 = history.gens[1], history.gens[2]
        assert lines[0].startswith(
            f"{history.tree}: generation {g2.id} ("
        )
        assert f"-> generation {g3.id} (" in lines[0]
        assert ["CHANGE", "PERCENT", "OLD", "NEW", "PATH"] == lines[1].split()
        assert 2 + len(expected_diff(history.disk[1], history.disk[2])) == len(
            lines
        )
        gone = next(x for x in lines if x.endswith("/weird/new\\x0aline"))
        assert " gone " in gone
        new = next(x for x in lines if x.endswith("/weird/\\xfe\\xfdnew"))
        assert " new " in new

    def test_path(self, history: History) -> None:
        """diff PATH keeps PATH and the directories below it."""
        rows = history.json("diff", history.tree / "projects", "-n", "1000")

        prefix = str(history.tree / "projects")
        expected = {
            p: v
            for p, v in expected_diff(history.disk[1], history.disk[2]).items()
            if p == prefix or p.startswith(prefix + "/")
        }
        assert expected == by_path(rows)

    def test_since_timestamp(self, history: History) -> None:
        """--since TIMESTAMP compares with the newest scan at or before it."""
        g1, g2, g3 = history.gens
        between = (g1.finished + g2.finished) / 2
        since = dt.datetime.fromtimestamp(between, dt.UTC).isoformat()

        rows = history.json("diff", "--since", since, "-n", "1000")
        table = history.out("diff", "--since", since)

        assert expected_diff(history.disk[0], history.disk[2]) == by_path(rows)
        statuses = {r["path"]: r["status"] for r in rows}
        assert "gone" == statuses[history.label(b"/scratch")]
        assert "new" == statuses[history.label(b"/projects/gamma")]
        assert f"generation {g1.id} (" in table.splitlines()[0]
        assert f"-> generation {g3.id} (" in table.splitlines()[0]

    def test_since_duration(self, history: History) -> None:
        """--since DURATION counts back from now."""
        g1 = history.gens[0]
        ago = time.time() - (g1.finished + 0.1)

        rows = history.json("diff", "--since", f"{ago:.2f}s", "-n", "1000")

        assert expected_diff(history.disk[0], history.disk[2]) == by_path(rows)

    @pytest.mark.parametrize(
        ("since", "message"),
        [
            ("1y", "has no complete scan finished at or before"),
            ("0s", "has no complete scan finished after"),
        ],
    )
    def test_since_without_scans(
        self, history: History, since: str, message: str
    ) -> None:
        """No scan before (or after) --since: exit 1, one line saying so."""
        proc = history.run("diff", "--since", since)

        line = one_error_line(proc)
        assert 1 == proc.returncode
        assert message in line
        assert repr(str(history.tree)) in line
        assert "" == proc.stdout

    def test_one_generation(self, tmp_path: Path) -> None:
        """With only one scan kept: exit 1, one line explaining why."""
        tree, db = tmp_path / "t", tmp_path / "du.db"
        put(os.fsencode(tree / "a" / "f"), 1_000)
        scan(tmp_path, tree, db)

        proc = run(tmp_path, "diff", "--db-path", db)

        line = one_error_line(proc)
        assert 1 == proc.returncode
        assert (
            f"diff: root {str(tree)!r} has only one complete scan" in line
        )
        assert "keep-generations" in line
        assert "" == proc.stdout

    def test_path_outside_every_root(self, history: History) -> None:
        """A PATH no scan covers: exit 1, one line."""
        proc = history.run("diff", "/nonexistent/elsewhere")

        line = one_error_line(proc)
        assert 1 == proc.returncode
        assert "no complete scan covers '/nonexistent/elsewhere'" in line

    @pytest.mark.parametrize("since", ["yesterday", "10", "1d2", "-1d", ""])
    def test_bad_since(self, history: History, since: str) -> None:
        """A --since that is neither a duration nor a timestamp: exit 2."""
        proc = history.run("diff", "--since", since)

        assert 2 == proc.returncode
        assert "Traceback" not in proc.stderr
        assert "Invalid value for '--since'" in proc.stderr


def export_rows(history: History, *args: str) -> list[dict[str, Any]]:
    text = history.out("export", *args)
    return [
        {
            k: v if k in {"root", "path"} else float(v) if k == "latest_mtime"
            else int(v)
            for k, v in r.items()
        }
        for r in csv.DictReader(io.StringIO(text))
    ]


class TestExport:
    """export: every row of one generation, streamed."""

    def test_latest_equals_du(self, history: History) -> None:
        """Every directory to level 2, exactly, sizes equal du -sB1/-sb."""
        rows = export_rows(history)

        assert history.disk[2] == {r["path"]: r["disk_bytes"] for r in rows}
        assert history.apparent[2] == {
            r["path"]: r["apparent_bytes"] for r in rows
        }
        assert {history.gens[2].id} == {r["generation"] for r in rows}
        assert {str(history.tree)} == {r["root"] for r in rows}

    def test_json_lines(self, history: History) -> None:
        """--format json is JSON Lines with the same records as CSV."""
        text = history.out("export", "--format", "json")

        lines = text.splitlines()
        assert [json.loads(line) for line in lines] == export_rows(history)
        assert all(line.startswith("{") for line in lines)

    def test_generation(self, history: History) -> None:
        """--generation ID exports that (older) generation."""
        g1 = history.gens[0]

        rows = export_rows(history, "--generation", str(g1.id))

        assert history.disk[0] == {r["path"]: r["disk_bytes"] for r in rows}
        assert {g1.id} == {r["generation"] for r in rows}

    def test_hostile_names(self, history: History) -> None:
        r"""Paths render like labels: ``\xNN`` for bad bytes, ``\\``.

        A newline stays a newline (as in the label value); CSV quotes it
        and JSON escapes it, so both still parse.
        """
        g2 = history.gens[1]
        text = history.out("export", "--generation", str(g2.id))
        lines = history.out(
            "export", "--generation", str(g2.id), "--format", "json"
        ).splitlines()

        tree = str(history.tree)
        paths = {r["path"] for r in csv.DictReader(io.StringIO(text))}
        assert {
            tree + "/weird/bad\\xffname",
            tree + "/weird/back\\\\slash",
            tree + "/weird/new\nline",
        } <= paths
        assert paths == {json.loads(x)["path"] for x in lines}
        assert '"' + tree + '/weird/new\nline"' in text  # quoted CSV field

    def test_unknown_generation(self, history: History) -> None:
        """A generation that is not there: exit 1, one line, no output."""
        proc = history.run("export", "--generation", "999")

        line = one_error_line(proc)
        assert 1 == proc.returncode
        assert "no complete generation 999" in line
        assert "" == proc.stdout


def big_database(path: Path, count: int) -> Path:
    """A database with one generation of ``count`` + 1 exported rows."""
    store = Store.open(path)
    try:
        gen = store.begin_generation(b"/big", 1.0)
        store.write_batch(
            gen, [UnitRow(0, None, 0, b"/big", b"/big", 0, 0, 0, 0, 0, 1.0)], []
        )
        for start in range(1, count + 1, 20_000):
            store.write_batch(
                gen,
                [
                    UnitRow(
                        i, 0, 1, b"/big/d%09d" % i, b"/big", 1, 4096 * i, i,
                        1, 0, 1.0,
                    )
                    for i in range(start, min(count + 1, start + 20_000))
                ],
                [],
            )
        store.complete_generation(
            gen, finished=2.0, entries=count, unreadable=0, histogram=[],
            histogram_sum=0, keep=2,
        )
    finally:
        store.close()
    return path


PEAK_RSS = (
    "import resource, sys\n"
    "from du_exporter.cli import main\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "    print(rss, file=sys.stderr)\n"
)


def export_peak_rss_kib(db: Path, fmt: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, "export", "--db-path", db,
         "--format", fmt],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == proc.returncode, proc.stderr
    return int(proc.stderr.split()[-1])


@pytest.fixture(name="big", scope="module")
def _big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return big_database(tmp_path_factory.mktemp("big") / "big.db", 100_000)


class TestExportStreams:
    """export holds one row at a time, however big the generation."""

    @pytest.mark.parametrize("fmt", ["csv", "json"])
    def test_constant_memory(
        self, big: Path, tmp_path: Path, fmt: str
    ) -> None:
        """100,001 rows cost no more memory than 2.

        Held in a list, 100,000 rows would take about 45 MiB more.
        """
        small = big_database(tmp_path / "small.db", 1)

        growth = export_peak_rss_kib(big, fmt) - export_peak_rss_kib(small, fmt)

        assert growth < 12 * 1024, f"{growth} KiB more for 100,000 rows"

    def test_every_row_exact(self, big: Path, tmp_path: Path) -> None:
        """All rows come out, by path, sizes exact integers."""
        proc = run(tmp_path, "export", "--db-path", big, "--format", "json")

        assert 0 == proc.returncode, proc.stderr
        rows = [json.loads(x) for x in proc.stdout.splitlines()]
        assert 100_001 == len(rows)
        # The root's sum: exact far beyond 2**32 (float-free).
        assert 4096 * (100_000 * 100_001 // 2) == rows[0]["disk_bytes"]
        assert sorted(r["path"] for r in rows) == [r["path"] for r in rows]

    def test_closed_pipe(self, big: Path, tmp_path: Path) -> None:
        """``export | head -1``: stops quietly, no traceback."""
        with subprocess.Popen(
            [sys.executable, "-m", "du_exporter", "export", "--db-path", big],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stderr is not None
            header = proc.stdout.readline()
            proc.stdout.close()
            stderr = proc.stderr.read()
            proc.wait(timeout=60)

        assert header.startswith(b"generation,root,path,")
        assert 1 == proc.returncode
        assert b"" == stderr


class TestTopStale:
    """top --stale: the biggest directories nobody touched since."""

    def test_stale_365d(self, history: History) -> None:
        """Only subtrees without a change in a year, sizes equal du."""
        rows = history.json("top", "--stale", "365d", "-n", "100")

        expected = {
            history.label(p): history.disk[2][history.label(p)]
            for p in (b"/archive", b"/archive/2019", b"/archive/2020",
                      b"/mixed/old")
        }
        assert expected == {r["path"]: r["bytes"] for r in rows}
        sizes = [r["bytes"] for r in rows]
        assert sorted(sizes, reverse=True) == sizes
        assert max(r["latest_mtime"] for r in rows) == Y2020
        # A recent file deep below keeps its old ancestors off the list.
        assert history.label(b"/cold") in history.disk[2]

    def test_stale_timestamp(self, history: History) -> None:
        """--stale TIMESTAMP: newest mtime before it; one recent file in a
        subtree (archive/2020 for archive) keeps the parent out."""
        rows = history.json("top", "--stale", "2020-01-01", "-n", "100")

        assert {
            history.label(b"/archive/2019"), history.label(b"/mixed/old")
        } == {r["path"] for r in rows}
        assert {Y2019} == {r["latest_mtime"] for r in rows}

    def test_table(self, history: History) -> None:
        """The table adds the newest modification time."""
        lines = history.out("top", "--stale", "365d", "-n", "2").splitlines()

        assert [
            "SIZE", "FILES", "DIRS", "NEWEST", "MTIME", "PATH"
        ] == lines[0].split()
        assert 3 == len(lines)
        newest = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(Y2020))
        assert lines[1].endswith(f"  {newest}  {history.label(b'/archive')}")

    def test_nothing_stale(self, history: History) -> None:
        """Nothing older than 100 years: an empty list, exit 0."""
        assert [] == history.json("top", "--stale", "36500d")

    def test_bad_stale(self, history: History) -> None:
        """A bad --stale is a usage error."""
        proc = history.run("top", "--stale", "old")

        assert 2 == proc.returncode
        assert "Invalid value for '--stale'" in proc.stderr


class TestCommandLine:
    """The new commands have help and fail cleanly without a database."""

    @pytest.mark.parametrize("command", ["diff", "export"])
    def test_help(self, tmp_path: Path, command: str) -> None:
        proc = run(tmp_path, command, "--help")

        assert 0 == proc.returncode
        assert proc.stdout.startswith(f"Usage: du-exporter {command}")

    @pytest.mark.parametrize(
        "command", [["diff"], ["export"], ["top", "--stale", "1d"]]
    )
    def test_missing_database(self, tmp_path: Path, command: list[str]) -> None:
        db = tmp_path / "nothere" / "du.db"

        proc = run(tmp_path, *command, "--db-path", db)

        line = one_error_line(proc)
        assert 1 == proc.returncode
        assert str(db) in line
        assert not db.parent.exists()


NOW = 1_800_000_000.0


class TestParseSince:
    """Durations count back from now; timestamps are ISO 8601."""

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("90s", 90),
            ("30m", 1800),
            ("12h", 43_200),
            ("1d12h", 129_600),
            ("1.5h", 5400),
            ("2w", 1_209_600),
            ("365d", 31_536_000),
            ("1y", 31_536_000),
            (" 1d ", 86_400),
        ],
    )
    def test_durations(self, text: str, seconds: int) -> None:
        assert NOW - seconds == parse_since(text, NOW)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-20", local(2026, 11, 20)),
            ("2026-11-20T08:30", local(2026, 11, 20, 8, 30)),
            ("2026-11-20 08:30:15", local(2026, 11, 20, 8, 30, 15)),
            ("2026-11-20T00:00+00:00", 1_795_132_800.0),
            ("2026-11-20T00:00Z", 1_795_132_800.0),
        ],
    )
    def test_timestamps(self, text: str, expected: float) -> None:
        assert expected == parse_since(text, NOW)

    @pytest.mark.parametrize("text", ["", "10", "1d2", "-1d", "1 d", "week"])
    def test_invalid(self, text: str) -> None:
        with pytest.raises(ValueError, match="neither a duration"):
            parse_since(text, NOW)


@needs_promtool
class TestAlertRules:
    """contrib/prometheus: valid rules, and their unit tests pass."""

    def test_check(self) -> None:
        assert PROMTOOL is not None
        proc = subprocess.run(
            [PROMTOOL, "check", "rules", RULES],
            capture_output=True, text=True, check=False,
        )

        assert 0 == proc.returncode, proc.stdout + proc.stderr
        assert "SUCCESS" in proc.stdout

    def test_unit_tests(self) -> None:
        assert PROMTOOL is not None
        proc = subprocess.run(
            [PROMTOOL, "test", "rules", RULE_TESTS.name],
            capture_output=True, text=True, check=False, cwd=RULE_TESTS.parent,
        )

        assert 0 == proc.returncode, proc.stdout + proc.stderr
        assert "SUCCESS" in proc.stdout

    def test_every_alert_is_tested(self) -> None:
        """Each alert appears in at least one unit test."""
        rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
        tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))

        alerts = {
            r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r
        }
        tested = {
            a["alertname"]
            for t in tests["tests"]
            for a in t.get("alert_rule_test", [])
            if a["exp_alerts"]
        }
        assert {
            "DuExporterDown", "DuExporterScanStale", "DuExporterScanErrors",
            "DiskUsageGrowingFast", "DiskUsageFillsFilesystemIn3Days",
        } <= alerts
        assert alerts == tested


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def panels(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in data["panels"]:
        yield panel
        yield from panel.get("panels", [])


# What Grafana puts in for its built-in variables, to parse the exprs.
BUILTINS = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h",
    "__range_s": "3600",
}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def recording_rules(exprs: list[str]) -> str:
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": e}
        for i, e in enumerate(exprs)
    ]
    return yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})


class TestDashboard:
    """contrib/grafana/du-exporter.json: valid, every expr parses."""

    def test_datasource_variable(self) -> None:
        """Every panel and query uses the ${datasource} variable."""
        data = dashboard()

        variables = {v["name"]: v for v in data["templating"]["list"]}
        assert "datasource" == variables["datasource"]["type"]
        assert "prometheus" == variables["datasource"]["query"]
        queries = [p for p in panels(data) if p["type"] != "row"]
        assert len(queries) >= 8
        for panel in queries:
            assert "${datasource}" == panel["datasource"]["uid"], panel["title"]
            for target in panel["targets"]:
                assert "${datasource}" == target["datasource"]["uid"]

    def exprs(self) -> list[str]:
        data = dashboard()
        variables = {v["name"]: v for v in data["templating"]["list"]}
        values = {
            "instance": "fs1:9995", "root": "/data", "level": "1", "topn": "10",
        }
        assert set(values) == set(variables) - {"datasource"}
        values |= BUILTINS
        exprs = [
            t["expr"]
            for p in panels(data) if p["type"] != "row"
            for t in p["targets"]
        ]
        # Variable queries: label_values(SELECTOR, label) -> SELECTOR.
        for v in variables.values():
            if v["type"] == "query":
                match = re.fullmatch(r"label_values\((.*), *\w+\)", v["definition"])
                assert match, v["definition"]
                exprs.append(match.group(1))

        def fill(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            assert name in values, f"undefined variable ${name}"
            return values[name]

        return [VARIABLE.sub(fill, e) for e in exprs]

    def test_covers_the_brief(self) -> None:
        """Top-N, growth, forecast and scan health are all there."""
        text = " ".join(self.exprs())

        for needle in ("topk(10, node_disk_usage_bytes", "offset 1h",
                       "deriv(", "predict_linear(",
                       "du_exporter_scan_age_seconds",
                       "du_exporter_scans_total", "up{"):
            assert needle in text

    @needs_promtool
    def test_exprs_parse(self, tmp_path: Path) -> None:
        """promtool parses every expr, wrapped as recording rules."""
        assert PROMTOOL is not None
        exprs = self.exprs()
        # Grafana's :regex format would write "\/": invalid in PromQL.
        wrong = [*exprs, 'topk(10, foo{a=~"\\/x"})']
        good = tmp_path / "dashboard.rules.yml"
        good.write_text(recording_rules(exprs), encoding="utf-8")
        bad = tmp_path / "broken.rules.yml"
        bad.write_text(recording_rules(wrong), encoding="utf-8")

        ok = subprocess.run(
            [PROMTOOL, "check", "rules", good],
            capture_output=True, text=True, check=False,
        )
        broken = subprocess.run(
            [PROMTOOL, "check", "rules", bad],
            capture_output=True, text=True, check=False,
        )

        assert 0 == ok.returncode, ok.stdout + ok.stderr
        assert 0 != broken.returncode  # the check does catch parse errors
