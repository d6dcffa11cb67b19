"""systemd notify: READY, WATCHDOG, RELOADING and STOPPING datagrams."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from pathlib import Path

from du_exporter.notify import notify, watchdog_interval
from helpers import clean_env


def receive(sock: socket.socket, want: str, timeout: float = 20) -> list[str]:
    """Datagrams until one equals ``want``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if want in got[-1].splitlines():
            return got
    msg = f"no {want!r}; got {got}"
    raise AssertionError(msg)


class TestNotify:
    """The protocol, against a real unix datagram socket."""

    def test_without_socket_does_nothing(self):
        assert notify("READY=1", {}) is False
        assert watchdog_interval({}) is None

    def test_sends_to_path_and_abstract(self, tmp_path: Path):
        path = tmp_path / "notify"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(str(path))
            assert notify("READY=1", {"NOTIFY_SOCKET": str(path)})
            assert "READY=1" == s.recv(100).decode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind("\0du-exporter-test-notify")
            assert notify("STATUS=x", {"NOTIFY_SOCKET": "@du-exporter-test-notify"})
            assert "STATUS=x" == s.recv(100).decode()

    def test_watchdog_interval_is_half(self):
        assert 15.0 == watchdog_interval({"WATCHDOG_USEC": "30000000"})
        assert watchdog_interval({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"}) is None


class TestDaemon:
    """The exporter under a fake systemd: its socket and watchdog."""

    def test_lifecycle(self, tmp_path: Path):
        root = tmp_path / "t"
        (root / "a").mkdir(parents=True)
        path = tmp_path / "notify"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            env = clean_env(tmp_path)
            env.update(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="200000")
            proc = subprocess.Popen(
                [sys.executable, "-m", "du_exporter", "--analyzed-path", str(root),
                 "--bind-address", "127.0.0.1:0", "--db-path", str(tmp_path / "db"),
                 "--log-format", "json"],
                env=env, stderr=subprocess.DEVNULL,
            )
            try:
                receive(sock, "READY=1")
                receive(sock, "WATCHDOG=1")
                receive(sock, "WATCHDOG=1")
                proc.send_signal(signal.SIGHUP)
                got = receive(sock, "READY=1")
                assert "RELOADING=1" in got
                proc.send_signal(signal.SIGTERM)
                receive(sock, "STOPPING=1")
                assert 0 == proc.wait(10)
            finally:
                proc.kill()
                proc.wait()
