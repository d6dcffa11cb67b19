"""The HTTP layer: ``/metrics``, the landing page, ``/browse``, health checks.

:func:`start_server` runs an :mod:`asyncio` loop in a background thread
and returns a :class:`ServerHandle`.  Every page is computed on request
from :class:`Pages`, so this module holds no state of its own and knows
nothing about scans or the store.

Hostile or slow clients cost bounded memory and cannot starve the rest:

* the loop reads every request head itself, so a connection that sends
  slowly holds no thread -- only its buffer, at most ``max_head`` bytes
  (431 beyond), and only until ``request_timeout`` (TLS handshake and
  head together, like Go's ``ReadHeaderTimeout``);
* at most ``max_connections`` connections are open at once; beyond
  that a new one gets 503 (over TLS it is just closed);
* ``/-/healthy`` and ``/-/ready`` are answered without a slot;
* every other page needs basic auth first (bcrypt on a small pool,
  :class:`~du_exporter.web.auth.BasicAuth`), then one of ``max_threads``
  render slots, waiting for one at most ``queue_timeout`` seconds (a
  waiting request holds no thread), else 503;
* one request per connection (HTTP/1.0 style), so nothing idles.

Failures of single connections (resets, handshakes) log one line,
at most one per :data:`LOG_EVERY` seconds and kind, with the count of
the lines left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import re
import ssl
import threading
import time

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import urlsplit

import structlog

from du_exporter.errors import BadRequestError, NotFound
from du_exporter.web.auth import BasicAuth
from du_exporter.web.webconfig import WebConfig


_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_ALLOWED = "GET, HEAD"
# Load balancers and orchestrators probe these without credentials.
_OPEN_ROUTES = frozenset({"/-/healthy", "/-/ready"})
_REALM = 'Basic realm="du-exporter"'
_SERVER = "du-exporter"
#: Default cap on the request line and headers together.
MAX_HEAD = 64 * 1024
#: Default for open connections: each may buffer up to MAX_HEAD.
MAX_CONNECTIONS = 256
#: Seconds between two log lines of the same connection failure kind.
LOG_EVERY = 10.0
# The empty line that ends a head (bare LF accepted, as http.server does).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
# After an error answer, read what the client still sends for this long
# (bounded), so the kernel does not reset the connection under the answer.
_LINGER = 0.5
_LINGER_BYTES = 256 * 1024
#: Bytes of a body handed to the transport at once: asyncio copies what
#: the socket does not take at once into the connection's buffer, so a
#: cached body of many MiB written whole was copied once per connection.
SEND_BYTES = 1 << 20


@dataclass(frozen=True)
class Body:
    """A body sent piece by piece, ``length`` bytes in all: a large
    cached body goes out as stored, without a copy.  A tuple holds
    pieces already made, sent from the event loop; the pieces of any
    other iterable are produced on a render thread (they may
    decompress), one at a time as the socket takes them.  Either way a
    piece is handed to the socket :data:`SEND_BYTES` at a time."""

    length: int
    pieces: Iterable[bytes]


@dataclass(frozen=True)
class Pages:
    """What the server shows; each callable runs on every request."""

    #: Renders ``/metrics``: given the Accept header and whether gzip is
    #: accepted, it returns the body, its content type and whether the
    #: body is gzipped.
    render: Callable[[str, bool], tuple[Body, str, bool]]
    #: The full, already escaped HTML page served at ``/``.
    landing: Callable[[], str]
    #: ``/-/ready`` answers 200 when this returns True, else 503.
    ready: Callable[[], bool]
    #: ``/-/healthy`` answers 503 when this returns False (None: always
    #: 200); it runs on the event loop, so it must be a cheap check.
    healthy: Callable[[], bool] | None = None
    #: If set, serves ``/browse``: given the raw query string, it returns
    #: the full, already escaped HTML page, or raises
    #: :class:`~du_exporter.errors.NotFound` (answered 404).
    browse: Callable[[str], str] | None = None


@dataclass(frozen=True)
class _Response:
    status: HTTPStatus
    body: bytes | Body
    content_type: str = _TEXT
    headers: tuple[tuple[str, str], ...] = ()


def _text(status: HTTPStatus, body: str) -> _Response:
    return _Response(status, body.encode())


def gzip_accepted(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (``gzip;q=0`` refuses it)."""
    for part in accept_encoding.split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        if coding.lower() not in {"gzip", "*"}:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False


def _metrics(pages: Pages, headers: Message) -> _Response:
    gzip_ok = gzip_accepted(headers.get("Accept-Encoding", ""))
    extra = [("Vary", "Accept, Accept-Encoding")]
    body, content_type, gzipped = pages.render(headers.get("Accept", ""), gzip_ok)
    if gzipped:
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


def _ready(pages: Pages) -> _Response:
    try:
        ready = pages.ready()
    except Exception:  # noqa: BLE001 - HTTP boundary: logged, answered 503
        structlog.get_logger().exception("http_page_failed", path="/-/ready")
        ready = False
    if ready:
        return _text(HTTPStatus.OK, "OK")
    return _text(HTTPStatus.SERVICE_UNAVAILABLE, "Not Ready")


_HEALTHY = _text(HTTPStatus.OK, "OK")
_UNHEALTHY = _text(HTTPStatus.SERVICE_UNAVAILABLE, "Unhealthy; see the exporter log.\n")
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
_BUSY = _text(HTTPStatus.SERVICE_UNAVAILABLE, "Busy\n")
_TOO_LARGE_ARGS = (
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE.phrase,
)
_ROUTES: dict[str, Callable[[Pages, Message], _Response]] = {
    "/metrics": _metrics,
    "/": _landing,
}


def _render_page(pages: Pages, target: str, headers: Message) -> _Response:
    """Answer a GET of *target*; only ``/browse`` reads the query string."""
    split = urlsplit(target)
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


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    headers: Message


class _HeadScanner:
    """Finds the end of a head as it arrives, scanning each byte once."""

    def __init__(self) -> None:
        self.scanned = 0
        self.line_done = False

    def end(self, buffer: bytearray) -> int | None:
        """Where the head in *buffer* ends, or None while incomplete.

        Raises :class:`~du_exporter.errors.BadRequestError` at once for a request line without an
        HTTP version (HTTP/0.9 style), which no header will follow.
        """
        start, self.scanned = max(0, self.scanned - 3), len(buffer)
        if not self.line_done:
            line_end = buffer.find(b"\n", start)
            if line_end < 0:
                return None
            if len(buffer[:line_end].split()) != 3:  # noqa: PLR2004
                raise BadRequestError(HTTPStatus.BAD_REQUEST, "Bad Request")
            self.line_done = True
        match = _HEAD_END.search(buffer, start)
        return None if match is None else match.end()


def _parse_head(head: bytes) -> _Request:
    line, _, rest = head.partition(b"\n")
    # Split the bytes (ASCII whitespace only), as _HeadScanner counted.
    method, target, version = (w.decode("latin-1") for w in line.split())
    if not re.fullmatch(r"HTTP/\d\.\d", version):
        raise BadRequestError(HTTPStatus.BAD_REQUEST, "Bad Request")
    if version not in {"HTTP/1.0", "HTTP/1.1"}:
        status = HTTPStatus.HTTP_VERSION_NOT_SUPPORTED
        raise BadRequestError(status, status.phrase)
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException:  # more than 100 header lines
        raise BadRequestError(*_TOO_LARGE_ARGS) from None
    return _Request(method, target, headers)


class _LogLimiter:
    """At most one line per kind per *every* seconds, counting the rest."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def log(self, level: str, event: str, **fields: object) -> None:
        now = time.monotonic()
        last = self._last.get(event)
        if last is not None and now - last < self.every:
            self._dropped[event] = self._dropped.get(event, 0) + 1
            return
        self._last[event] = now
        dropped = self._dropped.pop(event, 0)
        if dropped:
            fields["suppressed"] = dropped
        getattr(structlog.get_logger(), level)(event, **fields)


class _Server:
    """One listening socket's connections, run on one event loop."""

    def __init__(
        self,
        pages: Pages,
        *,
        max_threads: int,
        queue_timeout: float,
        max_connections: int,
        max_head: int,
        request_timeout: float,
        web: WebConfig | None,
    ) -> None:
        self.pages = pages
        self.max_threads = max_threads
        self.max_connections = max_connections
        self.max_head = max_head
        self.request_timeout = request_timeout
        self.ssl_context = web.ssl_context if web else None
        self.auth = BasicAuth(web.users) if web and web.users else None
        self.extra_headers = web.headers if web else ()
        self.render_pool = ThreadPoolExecutor(
            max_threads, thread_name_prefix="du-exporter-http"
        )
        # /-/ready reads the store: off the loop, but not behind renders.
        self.health_pool = ThreadPoolExecutor(
            2, thread_name_prefix="du-exporter-health"
        )
        self.limiter = _LogLimiter(LOG_EVERY)
        self.open = 0
        self.queue_timeout = queue_timeout
        # Made on the loop (start_server), used only there.
        self.slots: asyncio.Semaphore | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else "?"
        full = self.open >= self.max_connections
        self.open += 1
        try:
            if full:
                if self.ssl_context is None:
                    await self._answer(writer, _BUSY, linger=reader)
            else:
                await self._serve(reader, writer, client)
        except (OSError, EOFError) as e:
            self.limiter.log(
                "warning", "http_connection_failed", client=client, error=_why(e)
            )
        except Exception as e:  # noqa: BLE001 - one client's bug, not the server's end
            self.limiter.log(
                "error", "http_connection_failed", client=client, error=repr(e)
            )
        finally:
            self.open -= 1
            await _close(writer)
            if task is not None:
                self.tasks.discard(task)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> None:
        try:
            async with asyncio.timeout(self.request_timeout):
                if self.ssl_context is not None:
                    try:
                        await writer.start_tls(self.ssl_context)
                    except (OSError, ssl.SSLError) as e:
                        self.limiter.log(
                            "info", "tls_handshake_failed", client=client, error=_why(e)
                        )
                        return
                request = await self._read_head(reader)
        except TimeoutError:
            structlog.get_logger().debug("http_head_timeout", client=client)
            return
        except BadRequestError as e:
            bad = _text(HTTPStatus(e.status), f"{e}\n")
            await self._answer(writer, bad, linger=reader)
            return
        if request is None:
            return  # closed before a whole head
        if request.method not in {"GET", "HEAD"}:
            await self._answer(writer, _NOT_ALLOWED, linger=reader)
            return
        response = await self._respond(request, client)
        await self._answer(writer, response, body=request.method == "GET")

    async def _read_head(self, reader: asyncio.StreamReader) -> _Request | None:
        buffer = bytearray()
        scanner = _HeadScanner()
        while (end := scanner.end(buffer)) is None:
            if len(buffer) > self.max_head:
                raise BadRequestError(*_TOO_LARGE_ARGS)
            chunk = await reader.read(self.max_head + 1 - len(buffer) + 4)
            if not chunk:
                return None
            buffer += chunk
        if end > self.max_head:
            raise BadRequestError(*_TOO_LARGE_ARGS)
        return _parse_head(bytes(buffer[:end]))

    async def _respond(self, request: _Request, client: str) -> _Response:
        loop = asyncio.get_running_loop()
        route = urlsplit(request.target).path
        if route == "/-/healthy":
            if self.pages.healthy is None or self.pages.healthy():
                return _HEALTHY
            return _UNHEALTHY
        if route == "/-/ready":
            return await loop.run_in_executor(self.health_pool, _ready, self.pages)
        if self.auth is not None and not await self.auth.check_async(
            request.headers.get("Authorization")
        ):
            structlog.get_logger().debug("http_unauthorized", client=client)
            return _UNAUTHORIZED
        if self.slots is None:
            self.slots = asyncio.Semaphore(self.max_threads)
        try:
            async with asyncio.timeout(self.queue_timeout):
                await self.slots.acquire()
        except TimeoutError:
            return _BUSY
        try:
            return await loop.run_in_executor(
                self.render_pool,
                _render_page,
                self.pages,
                request.target,
                request.headers,
            )
        finally:
            self.slots.release()

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        response: _Response,
        *,
        body: bool = True,
        linger: asyncio.StreamReader | None = None,
    ) -> None:
        status = response.status
        whole = response.body
        length = whole.length if isinstance(whole, Body) else len(whole)
        lines = [
            f"HTTP/1.0 {status.value} {status.phrase}",
            f"Server: {_SERVER}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {length}",
            *(f"{name}: {value}" for name, value in response.headers),
            *(f"{name}: {value}" for name, value in self.extra_headers),
            "Connection: close",
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not body:
            pass
        elif isinstance(whole, Body) and isinstance(whole.pieces, tuple):
            for piece in whole.pieces:
                await self._send(writer, piece)
        elif isinstance(whole, Body):
            await self._stream(writer, iter(whole.pieces))
        else:
            writer.write(whole)
        # Each wait for the client to take data is under the timeout (a
        # large body to a slow network may take longer in all).
        async with asyncio.timeout(self.request_timeout):
            await writer.drain()
        if linger is not None and writer.can_write_eof():
            writer.write_eof()
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(_LINGER):
                    left = _LINGER_BYTES
                    while left > 0 and (chunk := await linger.read(65536)):
                        left -= len(chunk)

    async def _stream(
        self, writer: asyncio.StreamWriter, pieces: Iterator[bytes]
    ) -> None:
        """Send *pieces*, each made on a render thread (it may inflate
        gzip) once the socket has taken the previous one."""
        loop = asyncio.get_running_loop()
        while (
            piece := await loop.run_in_executor(self.render_pool, next, pieces, None)
        ) is not None:
            await self._send(writer, piece)

    async def _send(self, writer: asyncio.StreamWriter, piece: bytes) -> None:
        """Hand *piece* to the socket :data:`SEND_BYTES` at a time, each
        wait for the client to take data under the timeout (a large body
        to a slow network may take longer in all)."""
        view = memoryview(piece)
        for at in range(0, len(view), SEND_BYTES):
            writer.write(view[at:at + SEND_BYTES])
            async with asyncio.timeout(self.request_timeout):
                await writer.drain()

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.render_pool.shutdown(wait=False, cancel_futures=True)
        self.health_pool.shutdown(wait=False, cancel_futures=True)
        if self.auth is not None:
            self.auth.close()


def _why(e: BaseException) -> str:
    return str(e) or type(e).__name__


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()


class ServerHandle:
    """A running server; :meth:`close` stops it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: _Server,
        listener: asyncio.Server,
    ) -> None:
        self._loop = loop
        self._server = server
        self._listener = listener
        self._lock = threading.Lock()
        self._closed = False
        address = listener.sockets[0].getsockname()
        self.host: str = str(address[0])
        self.port: int = int(address[1])
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if server.ssl_context else "http"
        self.url: str = f"{scheme}://{netloc}:{self.port}"
        self._thread = threading.Thread(
            target=loop.run_forever, name="du-exporter-http", daemon=True
        )
        self._thread.start()

    def alive(self) -> bool:
        """The serving thread runs (for the systemd watchdog)."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop serving, close the socket and join the thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True

        async def stop() -> None:
            self._listener.close()
            self._server.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def start_server(
    pages: Pages,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_threads: int = 32,
    queue_timeout: float = 1.0,
    max_connections: int = MAX_CONNECTIONS,
    max_head: int = MAX_HEAD,
    request_timeout: float = 10.0,
    web: WebConfig | None = None,
) -> ServerHandle:
    """Serve *pages* on *host*:*port* (0 picks a free port) in a thread.

    *max_threads* pages are rendered at once (others wait up to
    *queue_timeout* seconds for a slot, then get 503), *max_connections* are
    open at once, a request head is at most *max_head* bytes and must
    arrive (TLS handshake included) within *request_timeout* seconds.
    *web* adds TLS, basic auth and response headers.  Raises
    :class:`OSError` when the address cannot be bound.
    """
    server = _Server(
        pages,
        max_threads=max_threads,
        queue_timeout=queue_timeout,
        max_connections=max_connections,
        max_head=max_head,
        request_timeout=request_timeout,
        web=web,
    )
    loop = asyncio.new_event_loop()
    try:
        listener = loop.run_until_complete(
            asyncio.start_server(
                server.connected,
                host,
                port,
                backlog=64,
                reuse_address=True,
                limit=max_head,
            )
        )
    except BaseException:
        server.close()
        loop.close()
        raise
    return ServerHandle(loop, server, listener)
