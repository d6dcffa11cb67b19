"""Deployment files pass their own linters: systemd-analyze, hadolint."""

from __future__ import annotations

import os
import shutil
import subprocess

from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent
UNITS = sorted((REPO / "systemd").glob("du-exporter*.s*"))


EXEC = "/usr/local/bin/du-exporter"


@pytest.fixture(name="units_dir")
def _units_dir(tmp_path: Path) -> Path:
    """The units, their ExecStart pointed at a stub in ``tmp_path``.

    ``systemd-analyze verify`` needs the program to exist; the test
    writes nothing outside its own directory.
    """
    stub = tmp_path / "bin" / "du-exporter"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS:
        text = unit.read_text(encoding="utf-8")
        (units / unit.name).write_text(text.replace(EXEC, str(stub)))
    return units


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


class TestSystemd:
    """The units are valid and the daemon's sandbox is tight."""

    @pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
    def test_verify(self, unit: Path, units_dir: Path):
        if unit.suffix == ".service":  # the path the stub stands in for
            assert EXEC in unit.read_text(encoding="utf-8")
        out = subprocess.run(
            [_tool("systemd-analyze"), "verify", str(units_dir / unit.name)],
            capture_output=True, text=True, check=False,
        )
        assert (0, "") == (out.returncode, out.stderr)

    @pytest.mark.parametrize(
        "unit", ["du-exporter.service", "du-exporter-textfile.service"]
    )
    def test_security(self, unit: str):
        out = subprocess.run(
            [_tool("systemd-analyze"), "security", "--offline=true",
             "--threshold=25", str(REPO / "systemd" / unit)],
            capture_output=True, text=True, check=False,
        )
        assert 0 == out.returncode, out.stdout[-2000:] + out.stderr

    def test_notify_and_watchdog(self):
        text = "\n".join(
            line
            for line in (REPO / "systemd" / "du-exporter.service").read_text().splitlines()
            if not line.startswith("#")
        )
        for line in ("Type=notify", "WatchdogSec=", "ExecReload=",
                     "AmbientCapabilities=CAP_DAC_READ_SEARCH",
                     "ProtectSystem=strict", "StateDirectory=du-exporter"):
            assert line in text
        for trap in ("ProtectHome=yes", "PrivateTmp=yes", "ProcSubset=pid"):
            assert trap not in text


    def test_watch_drop_in_lifts_only_what_watch_needs(self, units_dir: Path):
        """The drop-in applies on top of the unit: CAP_SYS_ADMIN and the
        fanotify calls come back, the rest of the sandbox stays."""
        (units_dir / "du-exporter.service.d").mkdir()
        shutil.copy(
            REPO / "systemd" / "du-exporter-watch.conf",
            units_dir / "du-exporter.service.d" / "watch.conf",
        )
        env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units_dir}:"}
        out = subprocess.run(
            [_tool("systemd-analyze"), "verify", "du-exporter.service"],
            capture_output=True, text=True, check=False, cwd=units_dir, env=env,
        )
        assert (0, "") == (out.returncode, out.stderr)
        out = subprocess.run(
            [_tool("systemd-analyze"), "security", "--offline=true",
             "du-exporter.service"],
            capture_output=True, text=True, check=False, cwd=units_dir, env=env,
        )
        report = out.stdout
        assert "fanotify_init is allowed" in report
        assert "Service has administrator privileges" in report
        for kept in ("ProtectSystem=", "NoNewPrivileges=", "PrivateDevices="):
            line = next(x for x in report.splitlines() if kept in x)
            assert line.lstrip().startswith("✓"), line


class TestDockerfile:
    def test_hadolint_clean(self):
        out = subprocess.run(
            [_tool("hadolint"), str(REPO / "Dockerfile")],
            capture_output=True, text=True, check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert (0, "") == (out.returncode, out.stdout)
