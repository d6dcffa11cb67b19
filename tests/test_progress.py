"""A one-shot scan on a terminal shows its progress; in a pipe it does not.

Log lines share the terminal with the progress line: each starts on a
clean line, and a path is written as people read it, never as a Python
bytes literal.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys

from pathlib import Path

from exporter import Exporter
from helpers import clean_env


def run_file_mode(
    tmp_path: Path, stderr: int, name: bytes = b"t", level: str = "error"
) -> subprocess.CompletedProcess[bytes]:
    root = os.path.join(os.fsencode(tmp_path), name)
    for i in range(60):
        os.makedirs(os.path.join(root, b"d%d" % i))
    return subprocess.run(
        [sys.executable, "-m", "du_exporter", "--mode", "file",
         "--analyzed-path", root, "--output-file", str(tmp_path / "o.prom"),
         "--db-path", str(tmp_path / "db"), "--max-iops", "40",
         "--max-procs", "1", "--log-level", level, "--log-format", "console"],
        stderr=stderr, env=clean_env(tmp_path), check=False, timeout=60,
    )


def on_terminal(tmp_path: Path, **kwargs: str | bytes) -> tuple[int, bytes]:
    """Mode file with stderr on a pseudo-terminal: exit code and output."""
    master, slave = pty.openpty()
    try:
        proc = run_file_mode(tmp_path, slave, **kwargs)  # type: ignore[arg-type]
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
    return proc.returncode, out


def screen(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw``: carriage return plus
    erase-line clears the line; newline ends it."""
    lines, line = [], ""
    for part in re.split(r"(\r\x1b\[K|\r?\n)", raw):
        if part == "\r\x1b[K":
            line = ""
        elif part in {"\n", "\r\n"}:
            lines.append(line)
            line = ""
        else:
            line += part
    return [*lines, line] if line else lines


class TestProgress:
    def test_terminal_gets_progress(self, tmp_path):
        code, out = on_terminal(tmp_path)
        assert 0 == code
        text = out.decode()
        assert f"scanning {tmp_path / 't'}: " in text
        assert " entries (" in text
        assert "roots done" in text

    def test_pipe_gets_none(self, tmp_path):
        proc = run_file_mode(tmp_path, subprocess.PIPE)
        assert 0 == proc.returncode
        assert b"scanning" not in proc.stderr


class TestLogLines:
    def test_log_lines_start_on_a_clean_line(self, tmp_path):
        """Log lines written while the progress line is up (scan_completed)
        and after it (textfile_written) are lines of their own; the
        progress line, erased at the end, never carries a log event."""
        code, out = on_terminal(tmp_path, name=b"t-\xff", level="info")
        assert 0 == code
        text = out.decode("utf-8", "replace")
        assert "\x1b[Kscanning " in text  # the progress line was drawn
        lines = screen(text)
        events = [line for line in lines if "scan_" in line or "textfile_" in line]
        assert 3 == len(events), lines  # started, completed, written
        for line in events:
            assert re.match(r"\d{4}-\d\d-\d\dT", line), line
            assert "scanning " not in line
        assert "textfile_written" in lines[-1]
        # The name's byte 0xff as people read it, in log and progress.
        assert f"{tmp_path}/t-\\xff" in text
        assert "b'" not in text

    def test_no_bytes_literal_when_a_worker_dies(self, tmp_path):
        """A scan worker killed on a directory with a non-UTF-8 name: the
        scan_failed line names it as \\xNN, not as b'...'."""
        root = os.path.join(os.fsencode(tmp_path), b"tree-\xff")
        for i in range(200):
            os.makedirs(os.path.join(root, b"d%d" % i))
        with Exporter(tmp_path, "--analyzed-path", os.fsdecode(root),
                      "--max-iops", "20", "--log-format", "json") as exp:
            exp.wait_event("scan_started")
            workers = exp.children()
            assert workers
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            failed = exp.wait_event("scan_failed")
        assert f"{tmp_path}/tree-\\xff" == failed["root"]
        assert f"'{tmp_path}/tree-\\xff" in str(failed["error"]), failed
        for line in exp.lines:
            assert "b'" not in line, line
            assert "\\udc" not in line, line
