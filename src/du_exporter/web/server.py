"""The HTTP layer: ``/metrics``, the landing page, ``/browse``, health checks.

:func:`start_server` runs a :class:`~http.server.ThreadingHTTPServer` in a
background thread and returns a :class:`ServerHandle`.  Every page is
computed on request from :class:`Pages`, so this module holds no state
of its own and knows nothing about scans or the store.

A slow or stalled client cannot starve the others: each connection gets a
socket timeout, and at most ``max_threads`` connections are served at
once; beyond that the server answers 503 at once and closes (over TLS it
just closes: a handshake on the accept loop could block it).

With a :class:`~du_exporter.web_config.WebConfig` the listening socket
is wrapped in its TLS context, and each connection's handshake runs in
the connection's own thread, under the same timeout.  Basic auth guards
every path but the two health checks, and the configured headers go on
every response.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import socketserver
import ssl
import threading

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import structlog

from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    choose_encoder,
    generate_latest,
)
from prometheus_client.registry import CollectorRegistry

from du_exporter.errors import NotFound
from du_exporter.web.webconfig import BasicAuth, WebConfig


_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_ALLOWED = "GET, HEAD"
# Load balancers and orchestrators probe these without credentials.
_OPEN_ROUTES = frozenset({"/-/healthy", "/-/ready"})
_REALM = 'Basic realm="du-exporter"'


def _busy_reply(headers: tuple[tuple[str, str], ...]) -> bytes:
    lines = [
        "HTTP/1.0 503 Service Unavailable",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Length: 5",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\nBusy\n").encode("latin-1")


@dataclass(frozen=True)
class Body:
    """A body sent piece by piece, ``length`` bytes in all: a large
    cached body goes out as stored, without a copy, and the GIL is
    released while the socket takes it."""

    length: int
    pieces: Iterable[bytes]


@dataclass(frozen=True)
class Pages:
    """What the server shows; each callable runs on every request."""

    #: Rendered by ``/metrics``.
    registry: CollectorRegistry
    #: The full, already escaped HTML page served at ``/``.
    landing: Callable[[], str]
    #: ``/-/ready`` answers 200 when this returns True, else 503.
    ready: Callable[[], bool]
    #: If set, renders ``/metrics`` instead of ``registry``: given the
    #: Accept header and whether gzip is accepted, it returns the body,
    #: its content type and whether the body is gzipped (a cache).
    render: Callable[[str, bool], tuple[Body, str, bool]] | None = None
    #: If set, serves ``/browse``: given the raw query string, it returns
    #: the full, already escaped HTML page, or raises
    #: :class:`~du_exporter.browse.NotFound` (answered 404).
    browse: Callable[[str], str] | None = None


@dataclass(frozen=True)
class _Response:
    status: HTTPStatus
    body: bytes | Body
    content_type: str = _TEXT
    headers: tuple[tuple[str, str], ...] = ()


def _text(status: HTTPStatus, body: str) -> _Response:
    return _Response(status, body.encode())


def _gzip_accepted(accept_encoding: str) -> bool:
    codings = (part.split(";")[0] for part in accept_encoding.split(","))
    return any(coding.strip().lower() == "gzip" for coding in codings)


def _metrics(pages: Pages, headers: Message) -> _Response:
    gzip_ok = _gzip_accepted(headers.get("Accept-Encoding", ""))
    extra = [("Vary", "Accept, Accept-Encoding")]
    if pages.render is not None:
        cached, content_type, gzipped = pages.render(
            headers.get("Accept", ""), gzip_ok
        )
        if gzipped:
            extra.append(("Content-Encoding", "gzip"))
        return _Response(HTTPStatus.OK, cached, content_type, tuple(extra))
    try:
        encoder, content_type = choose_encoder(headers.get("Accept", ""))
    except (TypeError, ValueError):
        # prometheus_client cannot compare a malformed "version=": serve
        # the classic text format, as for an Accept header it doesn't know.
        encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    body = encoder(pages.registry)
    if gzip_ok:
        body = gzip.compress(body)
        extra.append(("Content-Encoding", "gzip"))
    return _Response(HTTPStatus.OK, body, content_type, tuple(extra))


def _landing(pages: Pages, _headers: Message) -> _Response:
    return _Response(HTTPStatus.OK, pages.landing().encode(), _HTML)


def _browse(pages: Pages, query: str) -> _Response:
    if pages.browse is None:
        return _text(HTTPStatus.NOT_FOUND, "Not Found")
    try:
        page = pages.browse(query)
    except NotFound as e:
        return _text(HTTPStatus.NOT_FOUND, f"Not Found: {e}\n")
    return _Response(HTTPStatus.OK, page.encode(), _HTML)


def _healthy(_pages: Pages, _headers: Message) -> _Response:
    return _text(HTTPStatus.OK, "OK")


def _ready(pages: Pages, _headers: Message) -> _Response:
    if pages.ready():
        return _text(HTTPStatus.OK, "OK")
    return _text(HTTPStatus.SERVICE_UNAVAILABLE, "Not Ready")


_NOT_ALLOWED = _Response(
    HTTPStatus.METHOD_NOT_ALLOWED,
    b"Method Not Allowed",
    headers=(("Allow", _ALLOWED),),
)
_UNAUTHORIZED = _Response(
    HTTPStatus.UNAUTHORIZED,
    b"Unauthorized",
    headers=(("WWW-Authenticate", _REALM),),
)
_ROUTES: dict[str, Callable[[Pages, Message], _Response]] = {
    "/metrics": _metrics,
    "/": _landing,
    "/-/healthy": _healthy,
    "/-/ready": _ready,
}


def _render_page(pages: Pages, path: str, headers: Message) -> _Response:
    """Answer a GET of *path*; only ``/browse`` reads the query string."""
    split = urlsplit(path)
    route = split.path
    page = _ROUTES.get(route)
    if page is None and route != "/browse":
        return _text(HTTPStatus.NOT_FOUND, "Not Found")
    try:
        if page is None:
            return _browse(pages, split.query)
        return page(pages, headers)
    except Exception:  # noqa: BLE001 - HTTP boundary: logged, answered 500
        structlog.get_logger().exception("http_page_failed", path=route)
        return _text(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "Internal Server Error; see the exporter log.",
        )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    _handshake_failed = False

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except OSError as e:  # ssl.SSLError, timeout, reset
                self._handshake_failed = True
                structlog.get_logger().info(
                    "tls_handshake_failed",
                    client=self.client_address[0],
                    error=str(e),
                )

    def handle(self) -> None:
        if not self._handshake_failed:
            super().handle()

    def parse_request(self) -> bool:
        # Every method but GET and HEAD gets 405 here, before dispatch,
        # so unknown verbs too get 405 rather than the base class's 501.
        if not super().parse_request():
            return False
        if self.command in {"GET", "HEAD"}:
            return True
        self.close_connection = True
        self._send(_NOT_ALLOWED)
        return False

    def do_GET(self) -> None:
        self._send(self._page())

    def do_HEAD(self) -> None:
        self._send(self._page(), body=False)

    def _page(self) -> _Response:
        auth = self.server.auth
        if (
            auth is not None
            and urlsplit(self.path).path not in _OPEN_ROUTES
            and not auth.check(self.headers.get("Authorization"))
        ):
            structlog.get_logger().debug(
                "http_unauthorized", client=self.client_address[0]
            )
            return _UNAUTHORIZED
        return _render_page(self.server.pages, self.path, self.headers)

    def end_headers(self) -> None:
        # Every response, error pages from the base class included.
        for name, value in self.server.extra_headers:
            self.send_header(name, value)
        super().end_headers()

    def _send(self, response: _Response, *, body: bool = True) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        whole = response.body
        if isinstance(whole, Body):
            length, pieces = whole.length, whole.pieces
        else:
            length, pieces = len(whole), (whole,)
        self.send_header("Content-Length", str(length))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if body:
            for piece in pieces:
                self.wfile.write(piece)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        structlog.get_logger().debug(
            "http_request", client=self.client_address[0], msg=format % args
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        pages: Pages,
        *,
        max_threads: int,
        request_timeout: float,
        web: WebConfig | None,
    ) -> None:
        self.pages = pages
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_threads)
        self.auth = BasicAuth(web.users) if web and web.users else None
        self.extra_headers = web.headers if web else ()
        self._busy = _busy_reply(self.extra_headers)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.tls = bool(web and web.ssl_context)
        if web and web.ssl_context:
            # No handshake here: accept() must never wait on a client.
            self.socket = web.ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(), a DNS lookup
        # that can stall startup; the name is only used in CGI variables.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._reject(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(
        self, request: Any, client_address: Any
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _reject(self, request: socket.socket) -> None:
        # Runs on the accept loop, so it must never block.  Reading what
        # the client already sent avoids a reset that would eat the 503.
        # A TLS client cannot read a plain 503: it only sees the close.
        if not isinstance(request, ssl.SSLSocket):
            request.setblocking(False)
            with contextlib.suppress(OSError):
                request.recv(65536)
            with contextlib.suppress(OSError):
                request.send(self._busy)
        self.shutdown_request(request)

    def handle_error(self, _request: Any, client_address: Any) -> None:
        structlog.get_logger().warning(
            "http_connection_failed", client=str(client_address), exc_info=True
        )


class ServerHandle:
    """A running server; :meth:`close` stops it."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._lock = threading.Lock()
        self._closed = False
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if server.tls else "http"
        self.url: str = f"{scheme}://{netloc}:{self.port}"

    def alive(self) -> bool:
        """The serving thread runs (for the systemd watchdog)."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop serving, close the socket and join the thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def start_server(
    pages: Pages,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_threads: int = 32,
    request_timeout: float = 30.0,
    web: WebConfig | None = None,
) -> ServerHandle:
    """Serve *pages* on *host*:*port* (0 picks a free port) in a thread.

    *web* adds TLS, basic auth and response headers.  Raises
    :class:`OSError` when the address cannot be bound.
    """
    server = _Server(
        (host, port),
        pages,
        max_threads=max_threads,
        request_timeout=request_timeout,
        web=web,
    )
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name="du-exporter-http",
        daemon=True,
    )
    thread.start()
    return ServerHandle(server, thread)
