"""The daemon's schedule and signals: SIGHUP, SIGUSR1, retries, start-up.

Real exporter processes and real signals; the retry schedule is also
checked as a unit, since its first wait is a minute.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from datetime import datetime
from pathlib import Path

import pytest

from du_exporter.config import Config, Root, build
from du_exporter.daemon import Schedule, changed_walks, retry_delay
from du_exporter.paths import plan_walks
from du_exporter.scan.walker import engine_name
from exporter import Exporter, descendants, parse, sizes, wait_gone
from helpers import clean_env, du_labels, run
from test_faults import generations, make_tree, units_written, until


def config(**values: object) -> Config:
    """A checked config; multi-paths from ``values`` or /srv=2."""
    flags = {"multi-paths": "/srv=2", **values}
    return build({}, {}, flags, {"HOME": "/tmp"})


def names(exp: Exporter) -> list[str]:
    return [str(e.get("event")) for e in exp.events]


def after(events: list[str], name: str, count: int = 1) -> list[str]:
    """The events after the ``count``-th ``name``."""
    seen = 0
    for i, event in enumerate(events):
        seen += event == name
        if seen == count:
            return events[i + 1:]
    msg = f"no {name!r} #{count} in {events}"
    raise AssertionError(msg)


class TestRetrySchedule:
    """A failed scan is retried after 1 min, 2, 4, … up to the interval."""

    def test_delays_double_up_to_the_interval(self) -> None:
        delays = [retry_delay(n, 3600) for n in range(1, 9)]
        assert [60, 120, 240, 480, 960, 1920, 3600, 3600] == delays

    def test_short_interval_caps_the_first_retry(self) -> None:
        assert 30 == retry_delay(1, 30)

    def test_interval_zero_still_retries(self) -> None:
        assert 60 == retry_delay(1, 0)
        assert 3600 == retry_delay(30, 0)

    def test_failed_walk_retried_others_keep_the_interval(self) -> None:
        walks = plan_walks([Root("/a", 1), Root("/b", 1)])
        sched = Schedule(walks, now=0.0, interval=3600)
        assert walks == sched.due_walks(walks, 0.0)
        sched.done(b"/a", ok=True, started=0.0, now=10.0)
        sched.done(b"/b", ok=False, started=0.0, now=10.0)
        assert 70.0 == sched.next_due()
        assert [walks[1]] == sched.due_walks(walks, 70.0)
        sched.done(b"/b", ok=False, started=70.0, now=80.0)
        assert 200.0 == sched.due[b"/b"]
        sched.done(b"/b", ok=True, started=200.0, now=210.0)
        assert (3600.0, 3800.0) == (sched.due[b"/a"], sched.due[b"/b"])

    def test_new_interval_applies_to_the_next_scan(self) -> None:
        walks = plan_walks([Root("/a", 1)])
        sched = Schedule(walks, now=0.0, interval=0)
        sched.done(b"/a", ok=True, started=0.0, now=5.0)
        assert sched.next_due() is None  # 0: scan once
        sched.keep(walks, 600)
        assert 600.0 == sched.next_due()

    def test_removed_walk_is_forgotten(self) -> None:
        walks = plan_walks([Root("/a", 1), Root("/b", 1)])
        sched = Schedule(walks, now=0.0, interval=60)
        sched.keep(walks[:1], 60)
        sched.done(b"/b", ok=False, started=0.0, now=1.0)
        assert {b"/a"} == set(sched.due)


class TestWhatIsScanned:
    """Which reloads need a rescan, and of which roots."""

    def test_unchanged(self) -> None:
        assert [] == changed_walks(config(), config())

    @pytest.mark.parametrize(("key", "value"), [
        ("size-mode", "apparent"), ("max-iops", 100), ("max-procs", 3),
        ("keep-generations", 5), ("dir-count", False),
        ("scan-interval-minutes", 5), ("log-level", "debug"),
    ])
    def test_shown_or_paced_only(self, key: str, value: object) -> None:
        assert [] == changed_walks(config(), config(**{key: value}))

    @pytest.mark.parametrize(("key", "value"), [
        ("ignore-dirs", "/a/x"), ("one-file-system", True),
        ("follow-symlinks", True), ("owner-usage", True),
    ])
    def test_every_walk(self, key: str, value: object) -> None:
        old = config(**{"multi-paths": "/a=1,/b=1"})
        new = config(**{"multi-paths": "/a=1,/b=1", key: value})
        assert [b"/a", b"/b"] == [w.top for w in changed_walks(old, new)]

    def test_only_the_changed_root(self) -> None:
        old = config(**{"multi-paths": "/a=1,/b=1,/b/c=1"})
        new = config(**{"multi-paths": "/a=1,/b=1,/b/c=2,/d=0"})
        assert [b"/b", b"/d"] == [w.top for w in changed_walks(old, new)]


SLOW = ("--max-iops", "150", "--batch-size", "1")


class TestSignals:
    """SIGHUP applies at once; SIGUSR1 scans now."""

    def test_sighup_mid_scan_with_new_levels_rescans_at_once(
        self, tmp_path: Path
    ) -> None:
        root = make_tree(tmp_path / "t", dirs=30)
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"analyzed-path: {root}\ndir-level: 1\n")
        with Exporter(tmp_path, "--config", str(cfg), *SLOW) as exp:
            exp.wait_event("scan_started")
            cfg.write_text(f"analyzed-path: {root}\ndir-level: 2\n")
            exp.signal(signal.SIGHUP)
            reloaded = exp.wait_event("reloaded")
            assert [str(root)] == reloaded["rescan"]
            exp.wait_event("scan_started", 2)  # the rescan is logged
            # The running scan was abandoned, not waited for.
            assert ["scan_aborted", "reloaded", "scan_started"] == [
                e for e in after(names(exp), "scan_started")
                if e in {"scan_aborted", "reloaded", "scan_started",
                         "scan_completed"}
            ][:3]
            exp.wait_event("scan_completed")
            samples = exp.scrape()
        assert du_labels(root, "-B1", "--max-depth=2") == sizes(samples)

    def test_reload_without_change_keeps_generations(
        self, tmp_path: Path
    ) -> None:
        root = make_tree(tmp_path / "t", dirs=3)
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"analyzed-path: {root}\nkeep-generations: 2\n")
        with Exporter(tmp_path, "--config", str(cfg)) as exp:
            exp.wait_event("scan_completed")
            exp.signal(signal.SIGUSR1)  # a second generation
            exp.wait_event("scan_requested")
            exp.wait_event("scan_completed", 2)
            kept = generations(exp.db)
            # Unchanged, shown differently only, then broken: no rescan.
            exp.signal(signal.SIGHUP)
            assert [] == exp.wait_event("reloaded")["rescan"]
            cfg.write_text(cfg.read_text() + "size-mode: apparent\n")
            exp.signal(signal.SIGHUP)
            assert [] == exp.wait_event("reloaded", 2)["rescan"]
            cfg.write_text("dir-levle: 3\n")
            exp.signal(signal.SIGHUP)
            exp.wait_event("reload_failed")
            # The next request is served at once: no scan ran meanwhile.
            exp.signal(signal.SIGUSR1)
            exp.wait_event("scan_requested", 2)
            exp.wait_event("scan_completed", 3)
        assert "scan_started" not in after(names(exp), "scan_completed", 2)[
            :after(names(exp), "scan_completed", 2).index("scan_requested")
        ]
        assert 3 == names(exp).count("scan_started")
        assert "scan_request_ignored" not in names(exp)
        # Only the second SIGUSR1 scan pushed a generation out.
        assert [kept[-1][0], kept[-1][0] + 1] == [g[0] for g in generations(exp.db)]

    def test_sigusr1_during_a_scan_is_ignored(self, tmp_path: Path) -> None:
        root = make_tree(tmp_path / "t", dirs=20)
        with Exporter(tmp_path, "--analyzed-path", str(root), *SLOW) as exp:
            exp.wait_event("scan_started")
            exp.signal(signal.SIGUSR1)
            exp.wait_event("scan_request_ignored")
            exp.wait_event("scan_completed")
        assert 1 == names(exp).count("scan_started")


class TestStartAndRetry:
    """One start-up line; a failed first scan is retried within minutes."""

    def test_start_up_line(self, tmp_path: Path) -> None:
        root = make_tree(tmp_path / "t", dirs=1)
        with Exporter(tmp_path, "--analyzed-path", str(root)) as exp:
            started = exp.wait_event("started")
        assert [str(root)] == started["roots"]
        assert engine_name("auto") == started["engine"]
        assert str(started["next_scan"]).endswith("Z")

    def test_failed_first_scan_retried_in_a_minute(self, tmp_path: Path) -> None:
        missing = tmp_path / "later"
        with Exporter(tmp_path, "--analyzed-path", str(missing)) as exp:
            failed = exp.wait_event("scan_failed")
            retry = exp.wait_event("scan_retry")
        assert [str(missing)] == retry["roots"]
        # Logged times have whole seconds: 60 s after, give or take one.
        at = datetime.fromisoformat(str(failed["timestamp"]))
        then = datetime.fromisoformat(str(retry["next_scan"]))
        assert 59 <= (then - at).total_seconds() <= 61


class TestFileModeStop:
    """Mode file stopped mid-scan: by the signal, cleanly, nothing written."""

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
    def test_stop_mid_scan(self, tmp_path: Path, sig: signal.Signals) -> None:
        root = make_tree(tmp_path / "t", dirs=30)
        out = tmp_path / "du.prom"
        out.write_text("# the previous textfile\n")
        db = tmp_path / "state" / "du.db"
        proc = subprocess.Popen(
            [sys.executable, "-m", "du_exporter", "--mode", "file",
             "--analyzed-path", str(root), "--output-file", str(out),
             "--db-path", str(db), "--log-format", "json", "--max-procs", "2",
             *SLOW],
            stderr=subprocess.PIPE, text=True, env=clean_env(tmp_path),
            cwd=tmp_path,
        )
        assert proc.stderr is not None
        first = proc.stderr.readline()
        while '"scan_started"' not in first:
            first = proc.stderr.readline()
        until(lambda: units_written(db) > 5)
        workers = descendants(proc.pid)
        assert len(workers) >= 2
        proc.send_signal(sig)
        assert -sig == proc.wait(15)  # ended by the signal: 143 / 130 in a shell
        stderr = first + proc.stderr.read()
        proc.stderr.close()
        assert [] == wait_gone(workers, timeout=3)
        assert "Traceback" not in stderr
        events = [json.loads(line)["event"] for line in stderr.splitlines()]
        assert ["scan_started", "scan_aborted", "stopped"] == events
        assert "# the previous textfile\n" == out.read_text()
        assert ["du.prom"] == [p.name for p in tmp_path.glob("*.prom*")]
        assert not Path(f"{db}-wal").exists(), "not closed cleanly"
        assert [] == generations(db)  # no running scan left behind


class TestEngineLabel:
    """``du_exporter_build_info`` says which scan engine runs."""

    @pytest.mark.parametrize("engine", ["auto", "python"])
    def test_textfile(self, tmp_path: Path, engine: str) -> None:
        root = make_tree(tmp_path / "t", dirs=1)
        out = tmp_path / "du.prom"
        proc = run(tmp_path, "--mode", "file", "--analyzed-path", root,
                   "--output-file", out, "--scan-engine", engine)
        assert 0 == proc.returncode, proc.stderr
        expected = engine_name(engine)  # c, or what auto falls back to
        assert expected in {"c", "scandir-rs", "python"}
        labels = [dict(k[1]) for k in parse(out.read_text())
                  if k[0] == "du_exporter_build_info"]
        assert [expected] == [lbl["engine"] for lbl in labels]


class TestNoTraceback:
    """A worker that cannot start says so in one line."""

    @pytest.mark.parametrize("args", [[], ["x"], ["999"]], ids=["none", "nan", "closed"])
    def test_worker_cannot_start(self, args: list[str]) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "du_exporter.scan.worker", *args],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
        )
        assert 1 == proc.returncode
        assert [proc.stderr.strip()] == proc.stderr.splitlines()
        assert proc.stderr.startswith("du-exporter worker: cannot start: ")


#: Run the CLI in-process and report, at exit, whether bcrypt was loaded.
_IMPORTS = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('bcrypt' in sys.modules, file=sys.stderr))\n"
    "from du_exporter.cli import main\n"
    "sys.argv = ['du-exporter', *sys.argv[1:]]\n"
    "main()\n"
)
#: bcrypt of "secret", cost 4.
_HASH = "$2b$04$Xtx1Mx7LQ3cB0hZqnh0L6e9m1QeT8Qm3m4y1S2uHEpOOj2rNl0yMu"


class TestNoSideEffects:
    """Commands that check a config with users never load bcrypt."""

    @pytest.mark.parametrize("command", [["check-config"], ["db", "check"]])
    def test_no_bcrypt(self, tmp_path: Path, command: list[str]) -> None:
        proc = subprocess.run(
            [sys.executable, "-c", _IMPORTS, *command,
             "--basic-auth-users", f"alice={_HASH}",
             "--db-path", str(tmp_path / "du.db")],
            capture_output=True, text=True, env=clean_env(tmp_path),
            cwd=tmp_path, check=False,
        )
        assert "Traceback" not in proc.stderr
        assert "False" == proc.stderr.splitlines()[-1], proc.stderr


#: What Kubernetes sets in a pod for a Service named du-exporter.
_SERVICE_LINKS = {
    "DU_EXPORTER_SERVICE_HOST": "10.96.0.12",
    "DU_EXPORTER_SERVICE_PORT": "9995",
    "DU_EXPORTER_SERVICE_PORT_METRICS": "9995",
    "DU_EXPORTER_PORT": "tcp://10.96.0.12:9995",
    "DU_EXPORTER_PORT_9995_TCP": "tcp://10.96.0.12:9995",
    "DU_EXPORTER_PORT_9995_TCP_PROTO": "tcp",
    "DU_EXPORTER_PORT_9995_TCP_PORT": "9995",
    "DU_EXPORTER_PORT_9995_TCP_ADDR": "10.96.0.12",
}


class TestServiceLinks:
    """Kubernetes service-link variables are not config; typos still are."""

    def test_ignored_with_a_debug_line(self, tmp_path: Path) -> None:
        root = make_tree(tmp_path / "t", dirs=1)
        env = {**clean_env(tmp_path), **_SERVICE_LINKS}
        proc = subprocess.run(
            [sys.executable, "-m", "du_exporter", "--mode", "file",
             "--analyzed-path", str(root), "--output-file", "o.prom",
             "--log-level", "debug", "--log-format", "json"],
            capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
        )
        assert 0 == proc.returncode, proc.stderr
        events = [json.loads(line) for line in proc.stderr.splitlines()]
        ignored = [e for e in events if e["event"] == "environment_ignored"]
        assert [sorted(_SERVICE_LINKS)] == [e["variables"] for e in ignored]

    @pytest.mark.parametrize("name", [
        "DU_EXPORTER_PORTS", "DU_EXPORTER_SERVICE_HOSTS", "DU_EXPORTER_PORT_9995",
        "DU_EXPORTER_DIR_LEVLE",
    ])
    def test_typos_still_fatal(self, tmp_path: Path, name: str) -> None:
        env = {**clean_env(tmp_path), name: "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "du_exporter", "check-config"],
            capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
        )
        assert 2 == proc.returncode
        assert name in proc.stderr


_ARENAS = """
import ctypes, sys, threading
from du_exporter.daemon import one_malloc_arena
print(one_malloc_arena(), flush=True)
def grab():
    blocks.append(bytearray(1 << 16))  # malloc, from this thread's arena
    alive.wait()  # none exits (freeing its arena for the next) before all ran
blocks = []
alive = threading.Barrier(4)
threads = [threading.Thread(target=grab) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, to stderr
"""


@pytest.mark.skipif(
    not hasattr(__import__("ctypes").CDLL(None), "malloc_stats"),
    reason="glibc only",
)
@pytest.mark.parametrize(("env", "arenas"), [({}, 1), ({"MALLOC_ARENA_MAX": "8"}, 5)])
def test_daemon_threads_share_one_malloc_arena(
    tmp_path: Path, env: dict[str, str], arenas: int
) -> None:
    """glibc gives each new thread its own arena and keeps what was freed
    in it: the daemon's HTTP and scan threads cost ~13 MiB that way at
    10,000 exported directories.  The daemon asks for one arena, unless
    the operator chose a number (``MALLOC_ARENA_MAX``)."""
    out = subprocess.run(
        [sys.executable, "-c", _ARENAS], env=clean_env(tmp_path, **env),
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == [str(not env)]
    assert out.stderr.count("Arena ") == arenas, out.stderr
