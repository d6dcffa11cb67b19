# The project asks for `assert expected == actual` (STYLE.md, structlog).
from __future__ import annotations

import contextlib
import gzip
import http.client
import shutil
import socket
import subprocess
import sys
import threading
import time

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import structlog

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from du_exporter.web.server import (
    SEND_BYTES,
    Body,
    Pages,
    ServerHandle,
    start_server,
)
from exporter import Exporter
from helpers import metrics_render


LANDING = "<!DOCTYPE html><title>du-exporter</title><a href='/metrics'>m</a>"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


class Response:
    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.body = resp.read()


def fetch(
    handle: ServerHandle,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Response:
    conn = http.client.HTTPConnection(handle.host, handle.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        return Response(conn.getresponse())
    finally:
        conn.close()


def raw_exchange(handle: ServerHandle, request: bytes) -> bytes:
    """Send *request* verbatim and read the reply until the server closes."""
    with socket.create_connection((handle.host, handle.port), 5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def poll_status(handle: ServerHandle, path: str, status: int) -> bool:
    """Whether *path* answers *status* within two seconds."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if status == fetch(handle, path).status:
            return True
        time.sleep(0.01)
    return False


def gauge_value(text: str) -> float:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return families["du_test_value"].samples[0].value


class BrokenCollector:
    def collect(self) -> Iterable[Metric]:
        msg = "database is locked"
        raise RuntimeError(msg)


@pytest.fixture(name="registry")
def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("du_test_value", "A test gauge.", registry=registry).set(42)
    return registry


@pytest.fixture(name="ready")
def _ready() -> threading.Event:
    return threading.Event()


@pytest.fixture(name="pages")
def _pages(
    registry: CollectorRegistry, ready: threading.Event, tmp_path: Path
) -> Pages:
    return Pages(
        render=metrics_render(tmp_path, registry),
        landing=lambda: LANDING,
        ready=ready.is_set,
    )


@pytest.fixture(name="server")
def _server(pages: Pages) -> Iterator[ServerHandle]:
    handle = start_server(pages)
    yield handle
    handle.close()


@contextlib.contextmanager
def serving(
    pages: Pages, *, max_threads: int = 32, request_timeout: float = 30.0
) -> Iterator[ServerHandle]:
    handle = start_server(
        pages, max_threads=max_threads, request_timeout=request_timeout
    )
    try:
        yield handle
    finally:
        handle.close()


class TestMetrics:
    def test_text_format_by_default(self, server: ServerHandle) -> None:
        """Without an Accept header /metrics is the 0.0.4 text format."""
        resp = fetch(server, "/metrics")

        assert 200 == resp.status
        assert resp.headers["Content-Type"].startswith(
            "text/plain; version=0.0.4"
        )
        assert resp.headers["Content-Encoding"] is None
        assert 42.0 == gauge_value(resp.body.decode())

    def test_reads_registry_on_each_scrape(
        self, ready: threading.Event, tmp_path: Path
    ) -> None:
        """A scrape sees the registry's current values, nothing cached."""
        registry = CollectorRegistry()
        gauge = Gauge("du_test_value", "A test gauge.", registry=registry)
        pages = Pages(
            metrics_render(tmp_path, registry),
            landing=lambda: LANDING,
            ready=ready.is_set,
        )

        with serving(pages) as handle:
            first = gauge_value(fetch(handle, "/metrics").body.decode())
            gauge.set(7)
            second = gauge_value(fetch(handle, "/metrics").body.decode())

        assert (0.0, 7.0) == (first, second)

    def test_openmetrics_on_request(self, server: ServerHandle) -> None:
        """Accept: application/openmetrics-text gets OpenMetrics + # EOF."""
        resp = fetch(server, "/metrics", headers={"Accept": OPENMETRICS})

        assert 200 == resp.status
        assert resp.headers["Content-Type"].startswith(
            "application/openmetrics-text; version=1.0.0"
        )
        assert resp.body.endswith(b"# EOF\n")
        assert b"du_test_value 42.0" in resp.body

    def test_malformed_accept_falls_back_to_text(
        self, server: ServerHandle
    ) -> None:
        """A version prometheus_client cannot parse gets plain text."""
        accept = "application/openmetrics-text; version=abc"
        resp = fetch(server, "/metrics", headers={"Accept": accept})

        assert 200 == resp.status
        assert resp.headers["Content-Type"].startswith("text/plain")

    def test_gzip_on_request(self, server: ServerHandle) -> None:
        """Accept-Encoding: gzip compresses the body, which still parses."""
        headers = {"Accept-Encoding": "deflate, gzip;q=0.9"}
        resp = fetch(server, "/metrics", headers=headers)

        assert 200 == resp.status
        assert "gzip" == resp.headers["Content-Encoding"]
        assert str(len(resp.body)) == resp.headers["Content-Length"]
        assert 42.0 == gauge_value(gzip.decompress(resp.body).decode())

    @pytest.mark.parametrize(
        "encoding", ["gzip;q=0", "gzip; q=0.0, identity", "br", "*;q=0"]
    )
    def test_gzip_refused_is_not_sent(
        self, server: ServerHandle, encoding: str
    ) -> None:
        """q=0 refuses a coding: the body is plain."""
        resp = fetch(server, "/metrics", headers={"Accept-Encoding": encoding})

        assert resp.headers["Content-Encoding"] is None
        assert 42.0 == gauge_value(resp.body.decode())

    def test_query_string_ignored(self, server: ServerHandle) -> None:
        """Routing looks at the path only; the query is ignored."""
        resp = fetch(server, "/metrics?name[]=other&x=1")

        assert 200 == resp.status
        assert 42.0 == gauge_value(resp.body.decode())

    def test_failing_collector_is_500(
        self, registry: CollectorRegistry, ready: threading.Event, tmp_path: Path
    ) -> None:
        """A collector that raises gives a one-line 500, logged, no trace."""
        registry.register(BrokenCollector())
        pages = Pages(
            metrics_render(tmp_path, registry),
            landing=lambda: LANDING,
            ready=ready.is_set,
        )

        with (
            serving(pages) as handle,
            structlog.testing.capture_logs() as logs,
        ):
            resp = fetch(handle, "/metrics")

        assert 500 == resp.status
        assert 1 == len(resp.body.decode().strip().splitlines())
        assert b"Traceback" not in resp.body
        assert b"database is locked" not in resp.body
        failures = [e for e in logs if e["event"] == "http_page_failed"]
        assert [("error", "/metrics")] == [
            (e["log_level"], e["path"]) for e in failures
        ]


class TestHead:
    def test_head_has_headers_and_no_body(self, server: ServerHandle) -> None:
        """HEAD sends the GET headers, Content-Length included, no body."""
        get = fetch(server, "/metrics")
        reply = raw_exchange(server, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")

        assert head.startswith(b"HTTP/1.0 200")
        assert f"Content-Length: {len(get.body)}".encode() in head
        assert b"" == body

    @pytest.mark.parametrize(
        ("path", "status"),
        [("/", 200), ("/-/healthy", 200), ("/-/ready", 503), ("/x", 404)],
    )
    def test_head_status_matches_get(
        self, server: ServerHandle, path: str, status: int
    ) -> None:
        """HEAD answers with the same status as GET on every route."""
        resp = fetch(server, path, method="HEAD")

        assert status == resp.status
        assert b"" == resp.body


class TestLanding:
    def test_landing_page(self, server: ServerHandle) -> None:
        """/ serves the landing callable's HTML as UTF-8."""
        resp = fetch(server, "/")

        assert 200 == resp.status
        assert "text/html; charset=utf-8" == resp.headers["Content-Type"]
        assert LANDING == resp.body.decode()


class TestHealth:
    def test_healthy(self, server: ServerHandle) -> None:
        """/-/healthy is always 200 OK while the server runs."""
        resp = fetch(server, "/-/healthy")

        assert (200, b"OK") == (resp.status, resp.body)

    def test_ready_flips(
        self, server: ServerHandle, ready: threading.Event
    ) -> None:
        """/-/ready is 503 until the ready callable says True, then 200."""
        before = fetch(server, "/-/ready").status
        ready.set()
        after = fetch(server, "/-/ready")

        assert 503 == before
        assert (200, b"OK") == (after.status, after.body)


class TestRouting:
    def test_unknown_path_is_404(self, server: ServerHandle) -> None:
        """Any path outside the four routes is 404."""
        assert 404 == fetch(server, "/metrics/extra").status

    @pytest.mark.parametrize(
        "method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"]
    )
    def test_other_methods_are_405(
        self, server: ServerHandle, method: str
    ) -> None:
        """Methods other than GET and HEAD get 405 with Allow, any path."""
        for path in ("/metrics", "/nowhere"):
            resp = fetch(server, path, method=method)

            assert 405 == resp.status
            assert "GET, HEAD" == resp.headers["Allow"]


class TestConcurrency:
    def test_stalled_client_does_not_block_scrape(
        self, server: ServerHandle
    ) -> None:
        """A client that connects and sends nothing holds one thread only."""
        with socket.create_connection((server.host, server.port), 5) as stalled:
            resp = fetch(server, "/metrics")
            # Served while the stalled connection is still open: the
            # scrape did not wait for the server to drop it.
            stalled.setblocking(False)
            with pytest.raises(BlockingIOError):
                stalled.recv(1)

        assert 200 == resp.status

    def test_stalled_client_times_out(self, pages: Pages) -> None:
        """The server drops a silent connection after request_timeout."""
        with serving(pages, request_timeout=0.2) as handle:
            addr = (handle.host, handle.port)
            with socket.create_connection(addr, 5) as sock:
                assert b"" == sock.recv(1024)

    def test_busy_server_answers_503(self, tmp_path: Path) -> None:
        """Beyond max_threads pages in flight the server answers 503 at
        once; the health checks need no slot and still answer."""
        release = threading.Event()
        entered = threading.Event()

        def landing() -> str:
            entered.set()
            release.wait(10)
            return LANDING

        pages = Pages(
            metrics_render(tmp_path, CollectorRegistry()), landing, lambda: True
        )
        with serving(pages, max_threads=1) as handle:
            holder = threading.Thread(target=fetch, args=(handle, "/"))
            holder.start()
            try:
                assert entered.wait(5)
                reply = raw_exchange(handle, b"GET /metrics HTTP/1.0\r\n\r\n")
                healthy = fetch(handle, "/-/healthy").status
                ready = fetch(handle, "/-/ready").status
            finally:
                release.set()
                holder.join()
            recovered = poll_status(handle, "/metrics", 200)

        assert reply.startswith(b"HTTP/1.0 503")
        assert (200, 200) == (healthy, ready)
        assert recovered

    def test_too_many_connections_answers_503(self, pages: Pages) -> None:
        """Beyond max_connections open connections a new one gets 503."""
        handle = start_server(pages, max_connections=1)
        try:
            addr = (handle.host, handle.port)
            # The loop accepts in order: the held one is counted first.
            with socket.create_connection(addr, 5):
                reply = raw_exchange(handle, b"GET /-/healthy HTTP/1.0\r\n\r\n")
            recovered = poll_status(handle, "/-/healthy", 200)
        finally:
            handle.close()

        assert reply.startswith(b"HTTP/1.0 503")
        assert recovered


class TestLargeBodies:
    """A body of many MiB (the cached exposition at a million
    directories) goes out whole, whether its pieces are already made
    (a tuple, sent from the loop a slice at a time) or made as they go."""

    @staticmethod
    def _pages(body: Callable[[], Body]) -> Pages:
        return Pages(lambda _a, _g: (body(), "text/plain", False),
                     lambda: LANDING, lambda: True)

    def test_pieces_arrive_whole(self) -> None:
        pieces = tuple(bytes([65 + i]) * (3 * SEND_BYTES + i) for i in range(3))
        whole = b"".join(pieces)
        for make in (lambda: Body(len(whole), pieces),
                     lambda: Body(len(whole), iter(pieces))):
            with serving(self._pages(make)) as handle:
                resp = fetch(handle, "/metrics")
            assert 200 == resp.status
            assert str(len(whole)) == resp.headers["Content-Length"]
            assert whole == resp.body

    def test_slow_reader_does_not_hold_up_others(self) -> None:
        """While one client takes a large body slowly, another gets it
        whole: the loop is not held by the first one's send."""
        big = (b"x" * (16 * SEND_BYTES),)
        pages = self._pages(lambda: Body(len(big[0]), big))
        with (
            serving(pages) as handle,
            socket.create_connection((handle.host, handle.port), 5) as slow,
        ):
            slow.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert slow.recv(1)  # its answer has begun; not read on
            resp = fetch(handle, "/metrics")
            got = 1
            while chunk := slow.recv(1 << 16):
                got += len(chunk)
        assert big[0] == resp.body
        assert got > len(big[0])  # head and whole body


class TestIdentity:
    def test_server_header_names_no_python(self, server: ServerHandle) -> None:
        """The Server header gives away no interpreter version."""
        resp = fetch(server, "/-/healthy")

        assert "du-exporter" == resp.headers["Server"]

    def test_web_imports_no_scan_machinery(self) -> None:
        """The HTTP side loads neither the walker, the pool nor the store
        writer (a fresh interpreter: what importing it really pulls in)."""
        code = (
            "import sys, du_exporter.web.server, du_exporter.web.browse, "
            "du_exporter.web.landing; print(' '.join(sorted(sys.modules)))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()

        heavy = {
            "du_exporter.scan.walker",
            "du_exporter.scan.pool",
            "du_exporter.scan.worker",
            "du_exporter.store.writer",
        }
        assert set() == heavy & set(out)


class TestServerHandle:
    def test_url_names_bound_port(self, server: ServerHandle) -> None:
        """port 0 binds a free port, reported in port and url."""
        assert 0 != server.port
        assert f"http://127.0.0.1:{server.port}" == server.url

    def test_close_is_idempotent_and_frees_port(self, pages: Pages) -> None:
        """close() stops the server; calling it again does nothing."""
        handle = start_server(pages)
        handle.close()
        handle.close()

        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((handle.host, handle.port), 1).close()

    def test_ipv6(self, pages: Pages) -> None:
        """A host with a colon binds IPv6; the url brackets it."""
        try:
            handle = start_server(pages, host="::1")
        except OSError:
            pytest.skip("no IPv6 loopback")
        try:
            resp = fetch(handle, "/-/healthy")
        finally:
            handle.close()

        assert f"http://[::1]:{handle.port}" == handle.url
        assert 200 == resp.status


class TestDatabaseDeleted:
    def test_deleted_database_is_recreated_and_rescanned(
        self, tmp_path: Path
    ) -> None:
        """The database directory removed under the running exporter: it
        notices (one log line), recreates the file, scans again and is
        ready; /-/healthy never lies about a store it cannot recreate."""
        root = tmp_path / "tree"
        root.mkdir()
        (root / "f").write_bytes(b"x" * 10000)
        with Exporter(tmp_path, "--analyzed-path", str(root)) as exp:
            exp.wait_event("scan_completed")
            assert 200 == exp.get("/-/ready")[0]
            shutil.rmtree(exp.db.parent)
            # The probe notices (nothing else is due for an hour).
            first = exp.get("/-/ready")[0]
            exp.wait_event("store_recreated")
            exp.wait_event("scan_completed", count=2)
            ready = exp.get("/-/ready")[0]
            healthy = exp.get("/-/healthy")[0]
            recreated = exp.db.exists()
            lines = [e for e in exp.events if e.get("event") == "store_recreated"]

        assert (503, 200, 200, True) == (first, ready, healthy, recreated)
        assert 1 == len(lines)

    def test_unrecoverable_database_makes_healthy_fail(
        self, tmp_path: Path
    ) -> None:
        """Where the database cannot be recreated (a file now sits where
        its directory was), /-/healthy and /-/ready answer 503."""
        root = tmp_path / "tree"
        root.mkdir()
        with Exporter(tmp_path, "--analyzed-path", str(root)) as exp:
            exp.wait_event("scan_completed")
            shutil.rmtree(exp.db.parent)
            exp.db.parent.write_bytes(b"not a directory")
            exp.get("/-/healthy")  # the probe notices
            exp.wait_event("store_lost")
            statuses = (exp.get("/-/healthy")[0], exp.get("/-/ready")[0])

        assert (503, 503) == statuses
