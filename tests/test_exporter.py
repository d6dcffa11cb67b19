"""The exporter end to end: a real process, real HTTP, real signals."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time

from pathlib import Path

import pytest

from du_exporter.scan.walker import engine_name
from exporter import Exporter, parse, value
from helpers import clean_env, du, write


def tree(base: Path) -> Path:
    write(base / "a" / "f", 100_000)
    write(base / "a" / "sub" / "g", 30_000)
    write(base / "b" / "h", 5_000)
    write(base / "gone" / "x" / "y", 70_000)
    return base


def usage(samples, root: Path, level: int) -> dict[bytes, float]:
    """node_disk_usage_bytes by path, for dirs at or below ``level``."""
    out = {}
    for (name, labels), v in samples.items():
        d = dict(labels)
        if name == "node_disk_usage_bytes" and int(d["level"]) <= level:
            out[os.fsencode(d["path"])] = v
    return {p: v for p, v in out.items() if p.startswith(os.fsencode(root))}


class TestHttpMode:
    """``du-exporter`` serving /metrics from its background scans."""

    def test_metrics_equal_du(self, tmp_path):
        root = tree(tmp_path / "t")
        with Exporter(tmp_path, "--analyzed-path", str(root), "--dir-level", "2") as exp:
            samples = exp.wait_for(lambda s: bool(usage(s, root, 2)))
            assert du(root, "-B1", "--max-depth=2") == usage(samples, root, 2)
            files = value(samples, "node_disk_usage_file_count", path=str(root), level="0")
            assert 4 == files
            assert 1 == value(samples, "du_exporter_scans_total", path=str(root), result="success")
            engine = engine_name("auto")
            assert 1 == value(samples, "du_exporter_build_info", version=value_of_version(samples), python_version=sys.version.split()[0], engine=engine)

    def test_deleted_directory_disappears(self, tmp_path):
        """After the next complete scan, a deleted directory has no series."""
        root = tree(tmp_path / "t")
        gone = str(root / "gone")
        with Exporter(
            tmp_path, "--analyzed-path", str(root), "--dir-level", "2",
            "--scan-interval-minutes", "0.01",
        ) as exp:
            before = exp.wait_for(lambda s: value(s, "node_disk_usage_bytes", path=gone, level="1") is not None)
            done = value(before, "du_exporter_scans_total", path=str(root), result="success") or 0
            shutil.rmtree(gone)
            after = exp.wait_for(
                lambda s: (value(s, "du_exporter_scans_total", path=str(root), result="success") or 0) >= done + 2
            )
            assert value(after, "node_disk_usage_bytes", path=gone, level="1") is None
            assert value(after, "node_disk_usage_bytes", path=gone + "/x", level="2") is None
            assert du(root, "-B1", "--max-depth=2") == usage(after, root, 2)

    def test_endpoints(self, tmp_path):
        root = tree(tmp_path / "t")
        with Exporter(tmp_path, "--analyzed-path", str(root)) as exp:
            exp.wait_event("scan_completed")
            assert 200 == exp.get("/-/healthy")[0]
            assert 200 == exp.get("/-/ready")[0]
            status, headers, body = exp.get("/")
            assert 200 == status
            assert str(root) in body.decode()
            assert "/metrics" in body.decode()
            status, headers, body = exp.get(
                "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
            )
            assert headers["Content-Type"].startswith("application/openmetrics-text")
            assert body.rstrip().endswith(b"# EOF")
            status, headers, body = exp.get("/metrics", {"Accept-Encoding": "gzip"})
            assert "gzip" == headers["Content-Encoding"]
            samples = parse(gzip.decompress(body).decode())
            assert du(root, "-B1", "--max-depth=2") == usage(samples, root, 2)
            assert value(samples, "du_exporter_build_info", **build_labels(samples)) == 1

    def test_missing_root_is_reported_not_fatal(self, tmp_path):
        root = tree(tmp_path / "t")
        missing = tmp_path / "nope"
        with Exporter(
            tmp_path, "--multi-paths", f"{root}=1,{missing}=1"
        ) as exp:
            samples = exp.wait_for(lambda s: bool(usage(s, root, 1)))
            samples = exp.wait_for(
                lambda s: value(s, "du_exporter_scans_total", path=str(missing), result="error") == 1
            )
            assert du(root, "-B1", "--max-depth=1") == usage(samples, root, 1)
            assert 503 == exp.get("/-/ready")[0]
            # Its self series exist anyway, at 0 (initialised, not missing).
            for name in ("du_exporter_scan_entries", "du_exporter_scan_generation",
                         "du_exporter_scan_duration_seconds",
                         "du_exporter_last_success_timestamp_seconds",
                         "du_exporter_scan_unreadable_entries",
                         "du_exporter_scan_in_progress"):
                assert 0 == value(samples, name, path=str(missing)), name
            assert 1 <= (value(samples, "du_exporter_scan_generation", path=str(root)) or 0)


def build_labels(samples) -> dict[str, str]:
    for name, labels in samples:
        if name == "du_exporter_build_info":
            return dict(labels)
    msg = "no du_exporter_build_info"
    raise AssertionError(msg)


def value_of_version(samples) -> str:
    for (name, labels) in samples:
        if name == "du_exporter_build_info":
            return str(dict(labels)["version"])
    msg = "no du_exporter_build_info"
    raise AssertionError(msg)


def _alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    alive = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[0] != "Z":
            alive.append(pid)
    return alive


class TestSignals:
    """SIGTERM stops cleanly; SIGHUP re-reads the config."""

    def test_sigterm_mid_scan(self, tmp_path):
        """A scan is abandoned: exit 0 in seconds, no worker left behind."""
        root = tmp_path / "t"
        for i in range(300):
            for j in range(20):
                (root / f"d{i}" / f"e{j}").mkdir(parents=True)
        with Exporter(tmp_path, "--analyzed-path", str(root), "--max-iops", "2000") as exp:
            exp.wait_event("scan_started")
            workers = exp.children()
            assert workers
            assert 0 == exp.stop()
            # Abandoned, not finished: the scan was cut short.
            exp.wait_event("scan_aborted")
            assert not any(e.get("event") == "scan_completed" for e in exp.events)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _alive(workers):
                time.sleep(0.05)
            assert [] == _alive(workers)
        # Nothing half-written survives: no generation at all.
        out = subprocess.run(
            [sys.executable, "-m", "du_exporter", "db", "check", "--db-path", str(exp.db)],
            capture_output=True, text=True, env=clean_env(tmp_path), check=False,
        )
        assert 0 == out.returncode, out.stderr
        assert "running" not in out.stdout

    def test_sighup_reloads(self, tmp_path):
        root = tree(tmp_path / "t")
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"analyzed-path: {root}\ndir-level: 1\n")
        with Exporter(tmp_path, "--config", str(cfg)) as exp:
            exp.wait_for(lambda s: bool(usage(s, root, 1)))
            cfg.write_text(f"analyzed-path: {root}\ndir-level: 2\n")
            exp.signal(signal.SIGHUP)
            exp.wait_event("reloaded")
            samples = exp.wait_for(lambda s: usage(s, root, 2).keys() > usage(s, root, 1).keys())
            assert du(root, "-B1", "--max-depth=2") == usage(samples, root, 2)
            cfg.write_text("dir-levle: 3\n")
            exp.signal(signal.SIGHUP)
            event = exp.wait_event("reload_failed")
            assert "dir-levle" in str(event["error"])
            assert 200 == exp.get("/-/healthy")[0]


class TestFileMode:
    """``--mode file``: one scan, an atomic textfile, exit 0."""

    def test_textfile_matches_du(self, tmp_path):
        root = tree(tmp_path / "t")
        out = tmp_path / "out" / "du.prom"
        out.parent.mkdir()
        proc = subprocess.run(
            [sys.executable, "-m", "du_exporter", "--mode", "file",
             "--analyzed-path", str(root), "--dir-level", "1",
             "--output-file", str(out), "--db-path", str(tmp_path / "du.db")],
            capture_output=True, env=clean_env(tmp_path), check=False,
        )
        assert 0 == proc.returncode, proc.stderr
        samples = parse(out.read_text())
        assert du(root, "-B1", "--max-depth=1") == usage(samples, root, 1)
        assert ["du.prom"] == os.listdir(out.parent)  # no temporary left
        hist = value(samples, "node_disk_usage_file_size_bytes_count", path=str(root))
        assert 4 == hist

    def test_promtool_accepts_output(self, tmp_path):
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool not installed (.ci/run installs it)")
        root = tree(tmp_path / "t")
        weird = os.fsencode(root) + b'/bad\xff name\nwith "quotes" \\'
        os.makedirs(weird)
        out = tmp_path / "du.prom"
        subprocess.run(
            [sys.executable, "-m", "du_exporter", "--mode", "file",
             "--analyzed-path", str(root), "--output-file", str(out),
             "--db-path", str(tmp_path / "du.db")],
            check=True, env=clean_env(tmp_path), capture_output=True,
        )
        check = subprocess.run(
            [promtool, "check", "metrics"], input=out.read_bytes(),
            capture_output=True, check=False,
        )
        assert 0 == check.returncode, check.stdout + check.stderr
        assert 'bad\\\\xff name\\nwith \\"quotes\\" \\\\\\\\' in out.read_text()
