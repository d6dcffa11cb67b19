"""Deployment files pass their own linters: systemd-analyze, hadolint."""

from __future__ import annotations

import os
import shutil
import subprocess

from collections.abc import Iterator
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent
UNITS = sorted((REPO / "systemd").glob("du-exporter*.s*"))


@pytest.fixture(name="exec_path")
def _exec_path() -> Iterator[None]:
    """The units run /usr/local/bin/du-exporter: verify needs it to exist."""
    target = Path("/usr/local/bin/du-exporter")
    if target.exists():
        yield
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("#!/bin/sh\n")
        target.chmod(0o755)
    except OSError:
        pytest.skip("cannot create /usr/local/bin/du-exporter for verify")
    try:
        yield
    finally:
        target.unlink()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


class TestSystemd:
    """The units are valid and the daemon's sandbox is tight."""

    @pytest.mark.usefixtures("exec_path")
    @pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
    def test_verify(self, unit: Path):
        out = subprocess.run(
            [_tool("systemd-analyze"), "verify", str(unit)],
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


class TestDockerfile:
    def test_hadolint_clean(self):
        out = subprocess.run(
            [_tool("hadolint"), str(REPO / "Dockerfile")],
            capture_output=True, text=True, check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert (0, "") == (out.returncode, out.stdout)
