"""Hostile trees: unreadable, changing, looping, huge, oddly named.

Each tree is scanned by the real exporter (mode ``file`` or ``http``)
and compared with GNU du run the same way in the test.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading

from collections.abc import Iterator
from pathlib import Path

import pytest

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)

from du_exporter.paths import label_path
from du_exporter.scan.model import MAX_ERRORS
from exporter import Exporter, Samples, parse, sizes, value
from helpers import clean_env, du, du_labels, run, write


#: Run as root but without the capabilities that let root read anything.
NO_DAC = [
    "setpriv", "--inh-caps=-all", "--ambient-caps=-all",
    "--bounding-set=-dac_override,-dac_read_search",
]


def file_mode(
    home: Path, root: Path | bytes | None, *args: str | Path,
    prefix: tuple[str, ...] = (),
) -> tuple[subprocess.CompletedProcess[str], Samples, list[dict[str, object]]]:
    """``du-exporter --mode file``: the process, the textfile, the log events."""
    out = home / "out.prom"
    out.unlink(missing_ok=True)
    if root is not None:
        args = ("--analyzed-path", os.fsdecode(root), *args)
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "du_exporter", "--mode", "file",
         "--output-file", str(out),
         "--db-path", str(home / "state" / "du.db"), "--log-format", "json",
         "--max-procs", "2", *map(str, args)],
        capture_output=True, text=True, cwd=home, env=clean_env(home),
        timeout=120, check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    samples = parse(out.read_bytes().decode()) if out.exists() else {}
    return proc, samples, events


def promtool(text: bytes) -> None:
    tool = shutil.which("promtool")
    if tool is None:
        return  # .ci/run installs it; the parser checks still ran
    check = subprocess.run(
        [tool, "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert 0 == check.returncode, check.stdout + check.stderr


#: One unit over ``argv[1]`` at dir-level 2, in messages: prints the
#: number of messages, unreadable paths counted and named.
_STREAMED_UNIT = """
import json, os, sys
from du_exporter.scan.model import Plan, Unit
from du_exporter.scan.walker import scan_unit
root = os.fsencode(sys.argv[1])
st = os.stat(root)
plan = Plan(exports=((root, 2),), ignore=(), one_file_system=False,
            follow_symlinks=False, root_dev=st.st_dev)
top = Unit(root, b"", st.st_blocks * 512, st.st_size, st.st_mtime,
           dev=st.st_dev, ino=st.st_ino)
sent = []
sent.append(scan_unit(plan, top, emit=sent.append))
print(json.dumps([len(sent), sum(m.unreadable for m in sent),
                  sum(len(m.errors) for m in sent)]))
"""


@pytest.fixture(name="no_dac")
def _no_dac(tmp_path: Path) -> tuple[str, ...]:
    """A prefix that runs commands unable to read a mode-000 directory."""
    if os.geteuid() != 0:
        return ()  # an ordinary user already cannot
    probe = tmp_path / "probe"
    probe.mkdir(mode=0)
    try:
        done = subprocess.run(
            [*NO_DAC, sys.executable, "-c",
             f"import os; os.listdir({str(probe)!r})"],
            capture_output=True, check=False,
        )
    except FileNotFoundError:
        pytest.skip("setpriv is not installed")
    finally:
        probe.rmdir()
    if b"PermissionError" not in done.stderr:
        pytest.skip(f"cannot drop CAP_DAC_*: {done.stderr!r}")
    return tuple(NO_DAC)


class TestUnreadable:
    """Permission denied: the scan completes, counts it, reports like du."""

    def test_named_at_most_max_errors_per_unit(
        self, tmp_path: Path, no_dac: tuple[str, ...]
    ) -> None:
        """A unit streamed in several messages names at most MAX_ERRORS
        unreadable paths in all (the rest are counted), not per message."""
        root = tmp_path / "t"
        locked = []
        for i in range(50):
            for j in range(50):
                write(root / f"a{i:02d}" / f"b{j:02d}" / "f", 10)
            locked.append(root / f"a{i:02d}" / "b00")
        for d in locked:
            d.chmod(0)
        try:
            done = subprocess.run(
                [*no_dac, sys.executable, "-c", _STREAMED_UNIT, str(root)],
                capture_output=True, check=False, env=clean_env(tmp_path),
            )
        finally:
            for d in locked:
                d.chmod(stat.S_IRWXU)
        assert 0 == done.returncode, done.stderr
        messages, unreadable, named = json.loads(done.stdout)
        assert messages > 1
        assert 50 == unreadable
        assert MAX_ERRORS == named

    def test_unreadable_directories(self, tmp_path: Path, no_dac: tuple[str, ...]) -> None:
        root = tmp_path / "t"
        write(root / "ok" / "f", 20_000)
        write(root / "locked" / "inside" / "f", 50_000)  # mode 000
        write(root / "nolist" / "f", 30_000)  # --x: no listing
        write(root / "nostat" / "f", 40_000)  # r--: names, no stat
        write(root / "ok" / "deeper" / "locked2" / "g", 10_000)
        (root / "locked").chmod(0)
        (root / "nolist").chmod(stat.S_IXUSR)
        (root / "nostat").chmod(stat.S_IRUSR)
        (root / "ok" / "deeper" / "locked2").chmod(0)
        try:
            proc, samples, events = file_mode(
                tmp_path, root, "--dir-level", "3", prefix=no_dac
            )
            expected = du_labels(root, "-B1", "--max-depth=3", prefix=no_dac)
        finally:
            for d in ("locked", "nolist", "nostat", "ok/deeper/locked2"):
                (root / d).chmod(stat.S_IRWXU)
        assert 0 == proc.returncode, proc.stderr
        assert expected == sizes(samples)
        unreadable = value(samples, "du_exporter_scan_unreadable_entries", path=str(root))
        assert unreadable is not None
        assert unreadable >= 4
        warned = {e["path"] for e in events if e["event"] == "unreadable"}
        assert {str(root / "locked"), str(root / "nolist"),
                str(root / "ok" / "deeper" / "locked2")} <= warned
        assert str(root / "nostat" / "f") in warned
        assert all(e["level"] == "warning" for e in events if e["event"] == "unreadable")


class TestChangingTree:
    """Files and directories appear and vanish while the scan runs."""

    def test_churn_during_scan(self, tmp_path: Path) -> None:
        root = tmp_path / "t"
        for i in range(30):
            for j in range(10):
                write(root / "static" / f"s{i}" / f"f{j}", 100 * j + i)
        churn = root / "churn"
        churn.mkdir()
        stop = threading.Event()
        changes = [0]

        def work() -> None:
            n = 0
            while not stop.is_set():
                d = churn / f"c{n % 7}"
                if d.exists():
                    shutil.rmtree(d, ignore_errors=True)
                else:
                    for k in range(15):
                        write(d / f"x{k}" / "y", 3000)
                n += 1
                changes[0] += 1

        thread = threading.Thread(target=work)
        thread.start()
        try:
            proc, samples, events = file_mode(
                tmp_path, root, "--dir-level", "3", "--max-iops", "1500",
                "--max-procs", "2",
            )
        finally:
            stop.set()
            thread.join()
        assert 0 == proc.returncode, proc.stderr
        assert changes[0] > 20
        assert any(e["event"] == "scan_completed" for e in events)
        got = sizes(samples)
        static = {p: s for p, s in got.items() if p.startswith(str(root / "static"))}
        assert du_labels(root / "static", "-B1", "--max-depth=2") == static
        assert got[str(root)] > static[str(root / "static")]
        text = (tmp_path / "out.prom").read_bytes()
        promtool(text)


class TestSymlinkLoops:
    """--follow-symlinks through loops: the scan ends and counts once."""

    def test_loops(self, tmp_path: Path) -> None:
        root = tmp_path / "t"
        write(root / "a" / "f", 100_000)
        write(root / "b" / "g", 30_000)
        (root / "a" / "up").symlink_to("..")
        (root / "a" / "self").symlink_to(".")
        (root / "a" / "to-b").symlink_to("../b")
        (root / "b" / "to-a").symlink_to("../a")
        (root / "b" / "abs-root").symlink_to(root)
        (root / "me").symlink_to("me")  # ELOOP on stat
        (root / "ping").symlink_to("pong")
        (root / "pong").symlink_to("ping")
        (root / "dangling").symlink_to("nowhere")
        proc, samples, _ = file_mode(  # the loops end: the scan completes
            tmp_path, root, "--dir-level", "2", "--follow-symlinks"
        )
        assert 0 == proc.returncode, proc.stderr
        got = sizes(samples)
        plain = du_labels(root, "-B1", "--max-depth=1")
        # Every inode once: the loops add only the links that cannot be
        # followed (self-loops, dangling), counted as links.
        assert plain[str(root / "a")] == got[str(root / "a")]
        assert plain[str(root / "b")] == got[str(root / "b")]
        assert plain[str(root)] == got[str(root)]
        assert du_labels(root, "-LB1", "--max-depth=0")[str(root)] == got[str(root)]
        promtool((tmp_path / "out.prom").read_bytes())


@pytest.fixture(name="ram_ext4", scope="class")
def _ram_ext4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh ext4 in RAM (loop device), else a directory on tmp_path.

    ext4 because du (GNU fts) sorts big directories by inode there; in
    RAM because creating 200,000 files on a busy disk takes a minute.
    """
    base = tmp_path_factory.mktemp("ext4")
    image = Path("/dev/shm") / f"du-exporter-test-{os.getpid()}.img"
    mnt = base / "mnt"
    mnt.mkdir()
    mounted = False
    try:
        with image.open("wb") as f:
            f.truncate(400 << 20)
        mounted = (
            subprocess.run(
                ["mkfs.ext4", "-q", "-F", "-N", "250000", str(image)],
                capture_output=True, check=False,
            ).returncode == 0
            and subprocess.run(
                ["mount", "-o", "loop", str(image), str(mnt)],
                capture_output=True, check=False,
            ).returncode == 0
        )
    except (OSError, FileNotFoundError):
        pass
    try:
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)
        else:
            shutil.rmtree(mnt, ignore_errors=True)
        image.unlink(missing_ok=True)


#: GNU fts reads a directory in batches of this many entries and sorts
#: each batch by inode on its own (gnulib fts.c FTS_MAX_READDIR_ENTRIES).
FTS_BATCH = 100_000


@pytest.fixture(name="big_dir", scope="class")
def _big_dir(ram_ext4: Path) -> Path:
    """200,000 entries in one directory, plus hard links around it."""
    root = ram_ext4 / "t"
    big = root / "big"
    big.mkdir(parents=True)
    fd = os.open(big, os.O_RDONLY)
    try:
        for i in range(199_990):
            f = os.open(f"f{i}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            if i % 1000 == 0:
                os.write(f, b"x" * (i // 10 + 1))
            os.close(f)
            if i % 20_000 == 10_000:  # inode numbers amid the files'
                os.mkdir(f"sub{i // 20_000}", dir_fd=fd)
    finally:
        os.close(fd)
    for k in range(10):
        sub = big / f"sub{k}"
        write(sub / "own", 5000 * (k + 1))
        os.link(sub / "own", root / f"outside-{k}")  # root: 11 entries
        os.link(big / f"f{k * 1000}", big / f"f{k * 1000}-again")
    return root


class TestHugeDirectory:
    """One directory of 200,000 entries, on ext4."""

    @pytest.mark.slow
    def test_200k_entries(self, tmp_path: Path, big_dir: Path) -> None:
        proc, samples, _ = file_mode(tmp_path, big_dir, "--dir-level", "2")
        assert 0 == proc.returncode, proc.stderr
        assert du_labels(big_dir, "-B1", "--max-depth=2") == sizes(samples)
        files = sizes(samples, "node_disk_usage_file_count")
        assert 199_990 + 10 + 10 == files[str(big_dir / "big")]
        assert 199_990 + 10 + 10 + 10 == files[str(big_dir)]
        assert 10 == sizes(samples, "node_disk_usage_directory_count")[str(big_dir / "big")]

    @pytest.mark.slow
    def test_hard_links_follow_du_order(self, tmp_path: Path, big_dir: Path) -> None:
        big = big_dir / "big"
        entries = [(e.name, e.inode()) for e in os.scandir(big)]
        assert len(entries) > FTS_BATCH

        def rank(order: list[tuple[str, int]]) -> dict[str, int]:
            return {name: i for i, (name, _) in enumerate(order)}

        whole = rank(sorted(entries, key=lambda e: e[1]))
        batched = rank([
            e for start in range(0, len(entries), FTS_BATCH)
            for e in sorted(entries[start:start + FTS_BATCH], key=lambda e: e[1])
        ])
        # Link into each sub a file that du meets on the other side of it
        # than a whole-directory sort would.
        used: set[str] = set()
        for k in range(10):
            sub = f"sub{k}"
            for name, _ in entries:
                if name.startswith("f") and "-" not in name and (
                    whole[name] < whole[sub]
                ) != (batched[name] < batched[sub]) and name not in used:
                    write(big / name, 3000 * (k + 1))  # the order stays
                    os.link(big / name, big / sub / "link")
                    used.add(name)
                    break
        assert len(used) >= 5
        proc, samples, _ = file_mode(tmp_path, big_dir, "--dir-level", "2")
        assert 0 == proc.returncode, proc.stderr
        assert du_labels(big_dir, "-B1", "--max-depth=2") == sizes(samples)


class TestBadRoots:
    """A root that is missing or not a directory fails alone, clearly."""

    @pytest.mark.parametrize("kind", ["missing", "file", "dangling-link"])
    def test_file_mode(self, tmp_path: Path, kind: str) -> None:
        good = tmp_path / "good"
        write(good / "a" / "f", 10_000)
        bad = tmp_path / "bad"
        reason = "No such file or directory"
        if kind == "file":
            write(bad, 100)
            reason = "not a directory"
        elif kind == "dangling-link":
            bad.symlink_to(tmp_path / "nowhere")
        proc, samples, events = file_mode(
            tmp_path, None, "--multi-paths", f"{good}=1,{bad}=1"
        )
        assert 1 == proc.returncode
        errors = [e for e in events if e["level"] == "error"]
        assert 1 == len(errors), proc.stderr
        assert str(bad) in json.dumps(errors[0])
        assert reason in str(errors[0]["error"])
        assert du_labels(good, "-B1", "--max-depth=1") == {
            p: s for p, s in sizes(samples).items() if p.startswith(str(good))
        }
        assert 1 == value(samples, "du_exporter_scans_total", path=str(bad), result="error")
        assert 0 == value(samples, "du_exporter_last_success_timestamp_seconds", path=str(bad))

    def test_console_log_is_one_line(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad"
        write(bad, 100)
        proc = run(tmp_path, "--mode", "file", "--analyzed-path", bad,
                   "--log-format", "console", "--log-level", "error",
                   "--output-file", tmp_path / "o.prom")
        assert 1 == proc.returncode
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.splitlines()
        assert 1 == len(lines), proc.stderr
        assert str(bad) in lines[0]
        assert "not a directory" in lines[0]

    def test_daemon_serves_other_roots(self, tmp_path: Path) -> None:
        good = tmp_path / "good"
        write(good / "a" / "f", 10_000)
        bad = tmp_path / "bad"
        write(bad, 100)
        with Exporter(tmp_path, "--multi-paths", f"{good}=1,{bad}=1") as exp:
            samples = exp.wait_for(lambda s: value(
                s, "du_exporter_scans_total", path=str(bad), result="error"
            ) == 1 and value(
                s, "du_exporter_scans_total", path=str(good), result="success"
            ) == 1 and value(  # the new generation's bytes are rendered
                s, "node_disk_usage_bytes", path=str(good), level="0"
            ) is not None)
            assert 503 == exp.get("/-/ready")[0]
            assert 200 == exp.get("/-/healthy")[0]
        assert du_labels(good, "-B1", "--max-depth=1") == sizes(samples)
        failed = [e for e in exp.events if e.get("event") == "scan_failed"]
        assert 1 == len(failed)
        assert "not a directory" in str(failed[0]["error"])


def hostile_names(root: Path) -> None:
    base = os.fsencode(root)
    names = [
        b"new\nline", b"carriage\rreturn", b'dq"uote', b"sq'uote",
        b"back\\slash", b"\\xff", b"bad\xff", b"\xed\xa0\x80surrogate",
        b"tab\there", b"brace}{=,", b"#comment", b" space ", b"\xe2\x82",
        b"emoji-\xf0\x9f\x92\xbe", b"n" * 255,
    ]
    for i, name in enumerate(names):
        d = base + b"/" + name
        os.makedirs(d + b"/in" + name[:20])
        with open(d + b"/in" + name[:20] + b"/f", "wb") as f:
            f.write(b"x" * (1000 * (i + 1)))
    deep = base + b"/long"
    while len(deep) < 1500:
        deep += b"/" + b"\xc3\xa9\n\\" * 20
    os.makedirs(deep)
    with open(deep + b"/f", "wb") as f:
        f.write(b"y" * 7000)


class TestHostileNames:
    """Names that break naive exposition: it still parses, sizes equal du."""

    def test_textfile(self, tmp_path: Path) -> None:
        root = tmp_path / "t"
        hostile_names(root)
        proc, samples, _ = file_mode(tmp_path, root, "--dir-level", "30")
        assert 0 == proc.returncode, proc.stderr
        expected = du_labels(root, "-B1", "--max-depth=30")
        assert len(expected) == len(du(root, "-B1", "--max-depth=30"))  # no collision
        assert expected == sizes(samples)
        text = (tmp_path / "out.prom").read_bytes()
        text.decode("utf-8")  # valid UTF-8
        promtool(text)
        assert '"\\\\xff"' not in text.decode()  # rendered, not raw
        assert label_path(b"/\\xff") != label_path(b"/\xff")

    def test_http_both_formats(self, tmp_path: Path) -> None:
        root = tmp_path / "t"
        hostile_names(root)
        with Exporter(tmp_path, "--analyzed-path", str(root), "--dir-level", "30") as exp:
            exp.wait_event("scan_completed")
            _, _, text = exp.get("/metrics")
            _, headers, om = exp.get(
                "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
            )
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        expected = du_labels(root, "-B1", "--max-depth=30")
        assert expected == sizes(parse(text.decode()))
        promtool(text)
        om_sizes = {
            s.labels["path"]: int(s.value)
            for family in om_families(om.decode())  # type: ignore[no-untyped-call]
            for s in family.samples
            if s.name == "node_disk_usage_bytes"
        }
        assert expected == om_sizes

    def test_deeper_than_path_max(self, tmp_path: Path) -> None:
        root = tmp_path / "t"
        root.mkdir()
        fd = os.open(root, os.O_RDONLY)
        length = len(os.fsencode(root))
        while length < 5000:
            os.mkdir("d" * 200, dir_fd=fd)
            sub = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = sub
            length += 201
        f = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(f, b"z" * 10_000)
        os.close(f)
        os.close(fd)
        proc, samples, _ = file_mode(tmp_path, root, "--dir-level", "1")
        assert 0 == proc.returncode, proc.stderr
        assert du_labels(root, "-B1", "--max-depth=1") == sizes(samples)


class TestBackupDuringScan:
    """``db backup`` while the daemon writes a generation."""

    def test_backup_while_writing(self, tmp_path: Path) -> None:
        root = tmp_path / "t"
        for i in range(20):
            for j in range(5):
                write(root / f"d{i}" / f"e{j}" / "f", 1000 * i + j)
        # A scan of ~6 s: it outlasts three backup processes, also when
        # ./scripts/test measures coverage in them.
        with Exporter(
            tmp_path, "--analyzed-path", str(root), "--dir-level", "2",
            "--batch-size", "1", "--max-iops", "40",
            "--scan-interval-minutes", "0.001",
        ) as exp:
            exp.wait_event("scan_completed")
            completed = sum(e.get("event") == "scan_completed" for e in exp.events)
            exp.wait_for(lambda s: (value(
                s, "du_exporter_scan_progress_entries", path=str(root)
            ) or 0) > 10)
            backups = []
            for k in range(3):
                dest = tmp_path / f"backup{k}.db"
                done = run(tmp_path, "db", "backup", dest, "--db-path", exp.db)
                assert 0 == done.returncode, done.stderr
                backups.append(dest)
            # One and the same scan was writing during every backup.
            assert 1 == value(exp.scrape(), "du_exporter_scan_in_progress", path=str(root))
            assert completed == sum(
                e.get("event") == "scan_completed" for e in exp.events
            )
        expected = du(root, "-B1", "--max-depth=2")
        for dest in backups:
            check = run(tmp_path, "db", "check", "--db-path", dest)
            assert 0 == check.returncode, check.stdout + check.stderr
            assert "integrity: ok" in check.stdout
            top = run(tmp_path, "top", "--db-path", dest, "--format", "json",
                      "-n", "1000")
            assert 0 == top.returncode, top.stderr
            rows = {os.fsencode(r["path"]): r["bytes"] for r in json.loads(top.stdout)}
            assert expected == rows
            assert not Path(f"{dest}.partial").exists()
