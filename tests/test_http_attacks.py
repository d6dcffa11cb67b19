"""Hostile clients on loopback: memory, slow heads, bcrypt floods, resets.

Each test replays one attack found by outside testing against a real
server on 127.0.0.1 (the memory test against the real exporter process)
and checks the bound that holds now.  The time targets (answers within
1 s, a first login within 500 ms) are measured by
``benchmarks/http_attacks.py``; these tests check what must never
happen: refusals, unbounded memory, serialized bcrypt, log floods.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import resource
import socket
import struct
import threading

from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import structlog

from prometheus_client import CollectorRegistry, Gauge

from du_exporter.web.server import Pages, ServerHandle, start_server
from du_exporter.web.webconfig import WebConfig
from exporter import Exporter
from helpers import metrics_render


MiB = 1024 * 1024


def status_of(
    handle: ServerHandle | tuple[str, int],
    path: str,
    headers: dict[str, str] | None = None,
) -> int | None:
    """The status of GET *path*, or None when refused or reset."""
    host, port = (
        (handle.host, handle.port) if isinstance(handle, ServerHandle) else handle
    )
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


@pytest.fixture(name="pages")
def _pages(tmp_path: Path) -> Pages:
    registry = CollectorRegistry()
    Gauge("du_test_value", "A test gauge.", registry=registry).set(42)
    return Pages(metrics_render(tmp_path, registry), lambda: "<p/>", lambda: True)


@contextlib.contextmanager
def serving(pages: Pages, **kwargs: object) -> Iterator[ServerHandle]:
    handle = start_server(pages, **kwargs)  # type: ignore[arg-type]
    try:
        yield handle
    finally:
        handle.close()


def vm_hwm(pid: int) -> int:
    """Peak resident memory of *pid* in bytes (VmHWM, from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    msg = "no VmHWM"
    raise AssertionError(msg)


def huge_head(sock: socket.socket) -> None:
    """The standard library's limits: 99 header lines of 64 KiB each."""
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    line = b"X-Big-%02d: " + b"a" * (64 * 1024 - 16) + b"\r\n"
    with contextlib.suppress(OSError):
        for n in range(99):
            sock.sendall(line.replace(b"%02d", b"%02d" % n))
        sock.sendall(b"\r\n")
        while sock.recv(65536):
            pass


def hang_head(sock: socket.socket, stop: threading.Event) -> None:
    """Most of a head, then nothing until *stop*."""
    with contextlib.suppress(OSError):
        sock.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Slow: " + b"b" * 60000)
        stop.wait(5)


class TestMemory:
    def test_huge_and_hanging_heads_keep_rss_bounded(self, tmp_path: Path) -> None:
        """48 requests with 6 MiB heads and 48 unfinished 60 KiB heads at
        once: the exporter's peak RSS stays under 128 MiB, and it serves."""
        root = tmp_path / "tree"
        root.mkdir()
        with Exporter(tmp_path, "--analyzed-path", str(root)) as exp:
            host, port = exp.url.removeprefix("http://").rsplit(":", 1)
            addr = (host, int(port))
            stop = threading.Event()
            socks = [socket.create_connection(addr, 10) for _ in range(96)]
            threads = [
                threading.Thread(target=huge_head, args=(s,)) for s in socks[:48]
            ] + [
                threading.Thread(target=hang_head, args=(s, stop))
                for s in socks[48:]
            ]
            try:
                for t in threads:
                    t.start()
                for t in threads[:48]:
                    t.join(30)
                served = status_of(addr, "/-/healthy")
                peak = vm_hwm(exp.proc.pid)
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
                for s in socks:
                    s.close()

        assert 200 == served
        assert peak <= 128 * MiB, f"peak RSS {peak / MiB:.0f} MiB"


class TestHeadLimits:
    def test_head_over_64_kib_is_431(self, pages: Pages) -> None:
        """The whole head is capped at 64 KiB, however few its lines."""
        small = b"X-A: " + b"a" * 30000 + b"\r\n"
        with serving(pages) as handle:
            fits = exchange(handle, b"GET / HTTP/1.0\r\n" + small * 2 + b"\r\n")
            big = exchange(handle, b"GET / HTTP/1.0\r\n" + small * 3 + b"\r\n")

        assert fits.startswith(b"HTTP/1.0 200")
        assert big.startswith(b"HTTP/1.0 431")

    def test_slow_head_is_cut_at_the_deadline(self, pages: Pages) -> None:
        """A client sending a header line every 0.1 s is dropped when the
        head's deadline passes, though no single read ever times out."""
        with serving(pages, request_timeout=0.5) as handle:
            sock = socket.create_connection((handle.host, handle.port), 5)
            with sock:
                sock.sendall(b"GET / HTTP/1.0\r\n")
                closed = False
                for n in range(100):  # 10 s of dripping at most
                    try:
                        sock.sendall(b"X-%d: y\r\n" % n)
                    except OSError:
                        closed = True
                        break
                    sock.settimeout(0.1)
                    try:
                        if sock.recv(1024) == b"":
                            closed = True
                            break
                    except TimeoutError:
                        pass
                    except OSError:
                        closed = True
                        break

        assert closed

    def test_http09_request_answered_at_once(self, pages: Pages) -> None:
        """A request line without a version gets 400 and a close, not a
        wait for headers that never come."""
        with serving(pages, request_timeout=30) as handle:
            reply = exchange(handle, b"GET /\r\n", timeout=5)

        assert reply.startswith(b"HTTP/1.0 400")


def exchange(handle: ServerHandle, request: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection((handle.host, handle.port), timeout) as sock:
        sock.sendall(request)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


class TestSlowClients:
    def test_160_slow_clients_starve_neither_health_nor_scrapes(
        self, pages: Pages
    ) -> None:
        """160 connections dripping their heads (more than the 32 render
        slots): every health probe and every scrape is still served."""
        with serving(pages) as handle:
            addr = (handle.host, handle.port)
            slow = [socket.create_connection(addr, 5) for _ in range(160)]
            try:
                for s in slow:
                    s.sendall(b"GET /metrics HTTP/1.1\r\n")
                probes: list[int | None] = []
                for n in range(20):
                    for s in slow:
                        with contextlib.suppress(OSError):
                            s.sendall(b"X-%d: y\r\n" % n)
                    probes.append(status_of(handle, "/-/healthy"))
                    probes.append(status_of(handle, "/metrics"))
            finally:
                for s in slow:
                    s.close()

        assert [200] * 40 == probes


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class TestBcryptFlood:
    def test_identical_wrong_passwords_share_one_check(
        self, pages: Pages
    ) -> None:
        """60 clients sending the same wrong password at once cost a few
        bcrypt checks of CPU, not 60 in a row; the valid user gets in."""
        hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(10)).decode()
        start = resource.getrusage(resource.RUSAGE_SELF)
        bcrypt.checkpw(b"wrong", hashed.encode())
        one = cpu_since(start)
        web = WebConfig(None, (("alice", hashed),), ())
        with serving(pages, web=web) as handle:
            results: list[int | None] = []
            go = threading.Barrier(61)

            def flood() -> None:
                go.wait()
                results.append(status_of(handle, "/metrics", basic("alice", "x")))

            threads = [threading.Thread(target=flood) for _ in range(60)]
            for t in threads:
                t.start()
            before = resource.getrusage(resource.RUSAGE_SELF)
            go.wait()
            valid = status_of(handle, "/metrics", basic("alice", "secret"))
            for t in threads:
                t.join()
            spent = cpu_since(before)

        assert 200 == valid
        assert [401] * 60 == results
        # The old server ran 61 checks one after the other.
        assert spent < 20 * one, f"{spent:.2f} s CPU, one check {one:.3f} s"


def cpu_since(start: resource.struct_rusage) -> float:
    now = resource.getrusage(resource.RUSAGE_SELF)
    return (now.ru_utime - start.ru_utime) + (now.ru_stime - start.ru_stime)


class TestResets:
    def test_resets_log_one_line_without_traceback(self, pages: Pages) -> None:
        """50 connections reset mid-head: at most one log line, no trace."""
        with (
            serving(pages) as handle,
            structlog.testing.capture_logs() as logs,
        ):
            for _ in range(50):
                sock = socket.create_connection((handle.host, handle.port), 5)
                sock.sendall(b"GET /metrics HTTP/1.1\r\nX-A: b")
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                sock.close()  # RST
            served = status_of(handle, "/-/healthy")

        assert 200 == served
        warnings = [e for e in logs if e["log_level"] in {"warning", "error"}]
        assert len(warnings) <= 1
        assert not any("exc_info" in e or "exception" in e for e in logs)


class TestOddHeads:
    @pytest.mark.parametrize(
        "request_line",
        [b"GET\xa0/ HTTP/1.0", b"GET / HTTP/1.0\x85x", b"GET / HTTP/9.9", b"\r\n"],
    )
    def test_odd_request_line_is_one_answer(
        self, pages: Pages, request_line: bytes
    ) -> None:
        """Latin-1 spaces, unknown versions, an empty line: a 4xx/5xx
        answer and no log line with a traceback."""
        with (
            serving(pages) as handle,
            structlog.testing.capture_logs() as logs,
        ):
            reply = exchange(handle, request_line + b"\r\n\r\n", timeout=5)

        assert reply[9:10] in {b"4", b"5"}, reply[:40]
        assert [] == [e for e in logs if e["log_level"] == "error"]
