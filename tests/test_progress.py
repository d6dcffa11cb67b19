"""A one-shot scan on a terminal shows its progress; in a pipe it does not."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from pathlib import Path

from helpers import clean_env


def run_file_mode(tmp_path: Path, stderr: int) -> subprocess.CompletedProcess[bytes]:
    root = tmp_path / "t"
    for i in range(60):
        (root / f"d{i}").mkdir(parents=True)
    return subprocess.run(
        [sys.executable, "-m", "du_exporter", "--mode", "file",
         "--analyzed-path", str(root), "--output-file", str(tmp_path / "o.prom"),
         "--db-path", str(tmp_path / "db"), "--max-iops", "40",
         "--max-procs", "1", "--log-level", "error"],
        stderr=stderr, env=clean_env(tmp_path), check=False, timeout=60,
    )


class TestProgress:
    def test_terminal_gets_progress(self, tmp_path):
        master, slave = pty.openpty()
        try:
            proc = run_file_mode(tmp_path, slave)
            os.close(slave)
            out = b""
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the other side is closed
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            os.close(master)
        assert 0 == proc.returncode
        text = out.decode()
        assert f"scanning {tmp_path / 't'}: " in text
        assert " entries (" in text
        assert "roots done" in text

    def test_pipe_gets_none(self, tmp_path):
        proc = run_file_mode(tmp_path, subprocess.PIPE)
        assert 0 == proc.returncode
        assert b"scanning" not in proc.stderr
