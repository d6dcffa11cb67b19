"""TLS, basic auth and headers: the exporter-toolkit web config.

Certificates come from tests/pki.py: a CA, a server and a
client certificate it signs, and a client certificate from another CA.
Clients are real: ``ssl`` + ``http.client`` against a real server on
127.0.0.1, and the real exporter as a subprocess.
"""

# The project asks for `assert expected == actual` (STYLE.md, structlog).
from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import bcrypt
import pytest
import structlog
import yaml

from prometheus_client import CollectorRegistry, Gauge

from du_exporter import config as config_mod
from du_exporter.errors import ConfigError
from du_exporter.web import webconfig as web_config
from du_exporter.web.auth import BasicAuth
from du_exporter.web.server import Pages, ServerHandle, start_server
from du_exporter.web.webconfig import WebConfig
from exporter import Exporter
from helpers import metrics_render, run
from pki import Ca, new_key, pem, pem_key


# --- certificates


def _make_pki() -> dict[str, bytes]:
    """File name -> PEM bytes for every certificate and key a test uses."""
    ca, rogue_ca = Ca("test CA"), Ca("rogue CA")
    server, server_key = ca.make("127.0.0.1")
    client, client_key = ca.make("scraper", server=False, client=True)
    rogue, rogue_key = rogue_ca.make("intruder", server=False, client=True)
    return {
        "ca.crt": pem(ca.cert),
        "server.crt": pem(server),
        "server.key": pem_key(server_key),
        "client.crt": pem(client),
        "client.key": pem_key(client_key),
        "rogue.crt": pem(rogue),
        "rogue.key": pem_key(rogue_key),
        "other.key": pem_key(new_key()),
        "encrypted.key": pem_key(server_key, b"secret"),
        "garbage.txt": b"this is not PEM\n",
    }


@pytest.fixture(scope="session")
def pki_files() -> dict[str, bytes]:
    return _make_pki()


@dataclass(frozen=True)
class Pki:
    """The certificates, written into the test's own directory."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    def client(
        self,
        cert: str | None = None,
        maximum: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A client trusting the test CA, with ``cert``.crt/.key if given."""
        ctx = ssl.create_default_context(cafile=self.path("ca.crt"))
        if cert:
            ctx.load_cert_chain(
                self.path(f"{cert}.crt"), self.path(f"{cert}.key")
            )
        if maximum:
            ctx.maximum_version = maximum
        return ctx

    def web(self, text: str, name: str = "web.yml") -> Path:
        """A web config file next to the certificates."""
        path = self.dir / name
        path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture(name="pki")
def _pki(tmp_path: Path, pki_files: dict[str, bytes]) -> Pki:
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    for name, data in pki_files.items():
        (tls_dir / name).write_bytes(data)
    return Pki(tls_dir)


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
MTLS = TLS + "  client_ca_file: ca.crt\n  client_auth_type: {}\n"


# --- passwords: bcrypt at cost 4 keeps the tests fast

PASSWORD = "correct horse"  # noqa: S105 - a test password


@pytest.fixture(scope="session")
def alice_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(name="checkpw_calls")
def _checkpw_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Counts bcrypt.checkpw calls (the hashes it checked against)."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


# --- a server and clients

class Response:
    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.body = resp.read()


class Address(Protocol):
    host: str
    port: int


def get(
    handle: Address,
    path: str,
    *,
    tls: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Response:
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection(handle.host, handle.port, timeout=5)
    else:
        conn = http.client.HTTPSConnection(
            handle.host, handle.port, timeout=5, context=tls
        )
    try:
        conn.request(method, path, headers=headers or {})
        return Response(conn.getresponse())
    finally:
        conn.close()


def raw_exchange(handle: ServerHandle, request: bytes) -> bytes:
    with socket.create_connection((handle.host, handle.port), 5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(name="pages")
def _pages(tmp_path: Path) -> Pages:
    registry = CollectorRegistry()
    Gauge("du_test_value", "A test gauge.", registry=registry).set(42)
    return Pages(
        metrics_render(tmp_path, registry),
        landing=lambda: "<p>landing</p>",
        ready=lambda: True,
    )


Serve = Callable[..., ServerHandle]


@pytest.fixture(name="serve")
def _serve(pages: Pages) -> Iterator[Serve]:
    """serve(web, **kwargs): a server on 127.0.0.1:0, closed afterwards."""
    handles: list[ServerHandle] = []

    def serve(web: WebConfig | None, **kwargs: object) -> ServerHandle:
        handle = start_server(pages, web=web, **kwargs)  # type: ignore[arg-type]
        handles.append(handle)
        return handle

    yield serve
    for handle in handles:
        handle.close()


def load(path: Path, users: tuple[tuple[str, str], ...] = ()) -> WebConfig:
    web = web_config.load(path, users)
    assert web is not None
    return web


# Errors a client may see when the server ends the TLS session.
REFUSED = (ssl.SSLError, ConnectionError, http.client.HTTPException)


class TestTLS:
    def test_serves_https(self, pki: Pki, serve: Serve) -> None:
        """cert_file and key_file (relative to the file) serve HTTPS."""
        handle = serve(load(pki.web(TLS)))

        resp = get(handle, "/metrics", tls=pki.client())

        assert handle.url.startswith("https://127.0.0.1:")
        assert 200 == resp.status
        assert b"du_test_value 42.0" in resp.body

    def test_paths_relative_to_the_file(
        self, pki: Pki, serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Relative paths resolve against the web config's directory."""
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        handle = serve(load(pki.web(TLS)))

        assert 200 == get(handle, "/-/healthy", tls=pki.client()).status

    def test_inline_cert_key_and_client_ca(self, pki: Pki, serve: Serve) -> None:
        """cert, key and client_ca may be given inline as PEM text."""
        def block(name: str) -> str:
            text = pki.path(name).read_text()
            return "|\n" + "".join(f"    {line}\n" for line in text.splitlines())

        web = load(pki.web(
            "tls_server_config:\n"
            f"  cert: {block('server.crt')}"
            f"  key: {block('server.key')}"
            f"  client_ca: {block('ca.crt')}"
            "  client_auth_type: RequireAndVerifyClientCert\n"
        ))
        handle = serve(web)

        assert 200 == get(handle, "/", tls=pki.client("client")).status
        with pytest.raises(REFUSED):
            get(handle, "/", tls=pki.client())

    def test_plain_http_gets_nothing(self, pki: Pki, serve: Serve) -> None:
        """A plain HTTP client gets no page; HTTPS still works after."""
        handle = serve(load(pki.web(TLS)))

        with structlog.testing.capture_logs() as logs:
            with pytest.raises(REFUSED):
                get(handle, "/metrics")
            resp = get(handle, "/metrics", tls=pki.client())

        assert 200 == resp.status
        failed = [e for e in logs if e["event"] == "tls_handshake_failed"]
        assert ["info"] == [e["log_level"] for e in failed]

    def test_stalled_handshake_does_not_block(self, pki: Pki, serve: Serve) -> None:
        """A client that connects and never says hello holds one thread."""
        handle = serve(load(pki.web(TLS)))

        with socket.create_connection((handle.host, handle.port), 5) as stalled:
            resp = get(handle, "/-/healthy", tls=pki.client())
            # Served while the silent connection is still open: nothing
            # waited for its handshake to time out.
            stalled.setblocking(False)
            with pytest.raises(BlockingIOError):
                stalled.recv(1)

        assert 200 == resp.status

    def test_stalled_handshake_times_out(self, pki: Pki, serve: Serve) -> None:
        """The handshake is under the request timeout too."""
        handle = serve(load(pki.web(TLS)), request_timeout=0.2)

        with socket.create_connection((handle.host, handle.port), 5) as sock:
            assert b"" == sock.recv(1024)

    def test_busy_tls_server_closes(self, pki: Pki, serve: Serve) -> None:
        """Beyond max_connections a TLS connection is closed, not blocked on."""
        handle = serve(load(pki.web(TLS)), max_connections=1)

        with (
            socket.create_connection((handle.host, handle.port), 5),
            pytest.raises(REFUSED),
        ):
            get(handle, "/-/healthy", tls=pki.client())

    def test_min_version_tls13_refuses_tls12(self, pki: Pki, serve: Serve) -> None:
        """min_version: TLS13 refuses a client that stops at TLS 1.2."""
        handle = serve(load(pki.web(TLS + "  min_version: TLS13\n")))
        old = pki.client(maximum=ssl.TLSVersion.TLSv1_2)

        with pytest.raises(ssl.SSLError):
            get(handle, "/-/healthy", tls=old)
        assert 200 == get(handle, "/-/healthy", tls=pki.client()).status

    def test_max_version_tls12(self, pki: Pki, serve: Serve) -> None:
        """max_version: TLS12 caps what the handshake agrees on."""
        handle = serve(load(pki.web(TLS + "  max_version: TLS12\n")))
        conn = http.client.HTTPSConnection(
            handle.host, handle.port, timeout=5, context=pki.client()
        )
        try:
            conn.connect()
            assert isinstance(conn.sock, ssl.SSLSocket)
            assert "TLSv1.2" == conn.sock.version()
        finally:
            conn.close()


class TestClientCertificates:
    def test_require_and_verify(self, pki: Pki, serve: Serve) -> None:
        """RequireAndVerifyClientCert: only a cert from client_ca gets in."""
        handle = serve(load(pki.web(MTLS.format("RequireAndVerifyClientCert"))))

        assert 200 == get(handle, "/metrics", tls=pki.client("client")).status
        with pytest.raises(REFUSED):
            get(handle, "/metrics", tls=pki.client())
        with pytest.raises(REFUSED):
            get(handle, "/metrics", tls=pki.client("rogue"))

    def test_verify_if_given(self, pki: Pki, serve: Serve) -> None:
        """VerifyClientCertIfGiven: no cert is fine, a bad one is not."""
        handle = serve(load(pki.web(MTLS.format("VerifyClientCertIfGiven"))))

        assert 200 == get(handle, "/", tls=pki.client()).status
        assert 200 == get(handle, "/", tls=pki.client("client")).status
        with pytest.raises(REFUSED):
            get(handle, "/", tls=pki.client("rogue"))

    @pytest.mark.parametrize("auth", ["NoClientCert", "RequestClientCert"])
    def test_no_verification(self, pki: Pki, serve: Serve, auth: str) -> None:
        """NoClientCert and RequestClientCert let every client in."""
        handle = serve(load(pki.web(TLS + f"  client_auth_type: {auth}\n")))

        assert 200 == get(handle, "/", tls=pki.client()).status
        assert 200 == get(handle, "/", tls=pki.client("rogue")).status


@pytest.fixture(name="auth_web")
def _auth_web(pki: Pki, alice_hash: str) -> WebConfig:
    return load(pki.web(f"basic_auth_users:\n  alice: '{alice_hash}'\n"))


class TestBasicAuth:
    @pytest.mark.parametrize("path", ["/", "/metrics", "/nowhere"])
    def test_no_credentials_is_401(
        self, auth_web: WebConfig, serve: Serve, path: str
    ) -> None:
        """Without credentials every page but the health checks is 401."""
        resp = get(serve(auth_web), path)

        assert 401 == resp.status
        assert 'Basic realm="du-exporter"' == resp.headers["WWW-Authenticate"]
        assert b"du_test_value" not in resp.body

    @pytest.mark.parametrize("path", ["/-/healthy", "/-/ready", "/-/ready?x"])
    def test_health_checks_are_open(
        self, auth_web: WebConfig, serve: Serve, path: str
    ) -> None:
        """/-/healthy and /-/ready need no credentials."""
        assert 200 == get(serve(auth_web), path).status

    @pytest.mark.parametrize(
        "headers",
        [
            basic("alice", "wrong"),
            basic("alice", PASSWORD + "x"),
            basic("mallory", PASSWORD),
            basic("", PASSWORD),
            {"Authorization": "Bearer abc"},
            {"Authorization": "Basic !!!not-base64"},
            {"Authorization": "Basic " + base64.b64encode(b"alice").decode()},
            {"Authorization": "Basic"},
        ],
        ids=[
            "wrong-password", "longer-password", "unknown-user",
            "empty-user", "bearer", "bad-base64", "no-colon", "no-token",
        ],
    )
    def test_bad_credentials_are_401(
        self, auth_web: WebConfig, serve: Serve, headers: dict[str, str]
    ) -> None:
        """Wrong or malformed credentials get 401 and the challenge."""
        resp = get(serve(auth_web), "/metrics", headers=headers)

        assert 401 == resp.status
        assert 'Basic realm="du-exporter"' == resp.headers["WWW-Authenticate"]

    @pytest.mark.parametrize("path", ["/", "/metrics"])
    def test_right_password_is_200(
        self, auth_web: WebConfig, serve: Serve, path: str
    ) -> None:
        """The right user and password get the page."""
        resp = get(serve(auth_web), path, headers=basic("alice", PASSWORD))

        assert 200 == resp.status

    def test_head_is_protected(self, auth_web: WebConfig, serve: Serve) -> None:
        """HEAD needs credentials like GET."""
        handle = serve(auth_web)

        assert 401 == get(handle, "/metrics", method="HEAD").status
        assert 200 == get(
            handle, "/metrics", method="HEAD", headers=basic("alice", PASSWORD)
        ).status

    def test_success_is_cached(
        self, auth_web: WebConfig, serve: Serve, checkpw_calls: list[bytes]
    ) -> None:
        """Two identical successful scrapes run bcrypt once."""
        handle = serve(auth_web)
        creds = basic("alice", PASSWORD)

        statuses = [get(handle, "/metrics", headers=creds).status for _ in "ab"]

        assert [200, 200] == statuses
        assert 1 == len(checkpw_calls)

    def test_failure_is_not_cached(
        self, auth_web: WebConfig, serve: Serve, checkpw_calls: list[bytes]
    ) -> None:
        """Each wrong password runs bcrypt; a cached success is no key."""
        handle = serve(auth_web)

        ok = get(handle, "/", headers=basic("alice", PASSWORD)).status
        bad = [get(handle, "/", headers=basic("alice", "x")).status for _ in "ab"]

        assert (200, [401, 401]) == (ok, bad)
        assert 3 == len(checkpw_calls)

    def test_over_tls(self, pki: Pki, alice_hash: str, serve: Serve) -> None:
        """TLS and basic auth together."""
        web = load(pki.web(TLS + f"basic_auth_users:\n  alice: '{alice_hash}'\n"))
        handle = serve(web)

        assert 401 == get(handle, "/", tls=pki.client()).status
        assert 200 == get(
            handle, "/", tls=pki.client(), headers=basic("alice", PASSWORD)
        ).status

    def test_config_key_users_merge(
        self, pki: Pki, alice_hash: str, serve: Serve
    ) -> None:
        """basic-auth-users adds to the web config's basic_auth_users."""
        bob = bcrypt.hashpw(b"bobpw", bcrypt.gensalt(4)).decode()
        path = pki.web(f"basic_auth_users:\n  alice: '{alice_hash}'\n")
        handle = serve(load(path, (("bob", bob),)))

        assert 200 == get(handle, "/", headers=basic("alice", PASSWORD)).status
        assert 200 == get(handle, "/", headers=basic("bob", "bobpw")).status
        assert 401 == get(handle, "/", headers=basic("bob", PASSWORD)).status

    def test_users_without_file(self, alice_hash: str, serve: Serve) -> None:
        """basic-auth-users alone turns basic auth on, over plain HTTP."""
        web = web_config.load(None, (("alice", alice_hash),))
        handle = serve(web)

        assert 401 == get(handle, "/").status
        assert 200 == get(handle, "/", headers=basic("alice", PASSWORD)).status


class TestBasicAuthChecker:
    """BasicAuth.check on its own."""

    def test_unknown_user_runs_bcrypt(
        self, alice_hash: str, checkpw_calls: list[bytes]
    ) -> None:
        """An unknown user costs a bcrypt check too (no user probing)."""
        auth = BasicAuth([("alice", alice_hash)])

        assert not auth.check(basic("mallory", PASSWORD)["Authorization"])
        assert 1 == len(checkpw_calls)
        assert alice_hash.encode() != checkpw_calls[0]

    def test_long_password_compares_first_72_bytes(self) -> None:
        """As in Go's bcrypt and htpasswd, bytes past 72 do not count."""
        password = "p" * 72
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
        auth = BasicAuth([("alice", hashed)])

        assert auth.check(basic("alice", password + "tail")["Authorization"])
        assert not auth.check(basic("alice", "p" * 71)["Authorization"])

    def test_password_with_colon(self) -> None:
        """Only the first colon separates user and password."""
        hashed = bcrypt.hashpw(b"a:b:c", bcrypt.gensalt(4)).decode()
        auth = BasicAuth([("alice", hashed)])

        assert auth.check(basic("alice", "a:b:c")["Authorization"])

    def test_scheme_is_case_insensitive(self, alice_hash: str) -> None:
        """'basic' works as well as 'Basic' (RFC 7617)."""
        auth = BasicAuth([("alice", alice_hash)])
        header = basic("alice", PASSWORD)["Authorization"]

        assert auth.check("basic" + header.removeprefix("Basic"))

    def test_concurrent_checks(self, alice_hash: str) -> None:
        """Parallel checks of right and wrong passwords stay correct."""
        auth = BasicAuth([("alice", alice_hash)])
        good = basic("alice", PASSWORD)["Authorization"]
        bad = basic("alice", "nope")["Authorization"]
        results: list[tuple[bool, bool]] = []

        def check() -> None:
            results.append((auth.check(good), auth.check(bad)))

        threads = [threading.Thread(target=check) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert [(True, False)] * 8 == results


ALL_HEADERS = (
    "http_server_config:\n  headers:\n"
    "    Strict-Transport-Security: max-age=31536000\n"
    "    X-Content-Type-Options: nosniff\n"
    "    x-frame-options: DENY\n"
    "    X-XSS-Protection: '1; mode=block'\n"
    "    Content-Security-Policy: default-src 'self'\n"
)
EXPECTED_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-XSS-Protection": "1; mode=block",
    "Content-Security-Policy": "default-src 'self'",
}


class TestHeaders:
    @pytest.mark.parametrize(
        ("path", "method", "status"),
        [
            ("/metrics", "GET", 200),
            ("/", "HEAD", 200),
            ("/-/healthy", "GET", 200),
            ("/nowhere", "GET", 404),
            ("/metrics", "POST", 405),
        ],
    )
    def test_on_every_response(
        self, pki: Pki, serve: Serve, path: str, method: str, status: int
    ) -> None:
        """The configured headers go on every response, errors too."""
        handle = serve(load(pki.web(ALL_HEADERS)))

        resp = get(handle, path, method=method)

        assert status == resp.status
        assert EXPECTED_HEADERS == {
            name: resp.headers[name] for name in EXPECTED_HEADERS
        }

    def test_on_401(self, pki: Pki, alice_hash: str, serve: Serve) -> None:
        """A 401 carries them too."""
        web = load(pki.web(
            ALL_HEADERS + f"basic_auth_users:\n  alice: '{alice_hash}'\n"
        ))

        resp = get(serve(web), "/metrics")

        assert 401 == resp.status
        assert "nosniff" == resp.headers["X-Content-Type-Options"]

    def test_on_malformed_request_and_busy(self, pki: Pki, serve: Serve) -> None:
        """Error answers and the busy 503 carry them too."""
        handle = serve(load(pki.web(ALL_HEADERS)), max_connections=1)
        too_many = b"GET / HTTP/1.0\r\n" + b"X: y\r\n" * 101 + b"\r\n"
        bad = raw_exchange(handle, too_many)
        # The loop accepts in order: the held connection is counted first.
        with socket.create_connection((handle.host, handle.port), 5):
            busy = raw_exchange(handle, b"GET / HTTP/1.0\r\n\r\n")

        assert bad.startswith(b"HTTP/1.0 431")
        assert busy.startswith(b"HTTP/1.0 503")
        for reply in (bad, busy):
            assert b"\r\nX-Frame-Options: DENY\r\n" in reply

    def test_blank_value_is_unset(self, pki: Pki) -> None:
        """A blank header value sets nothing, as in exporter-toolkit."""
        web = load(pki.web(
            "http_server_config:\n  headers:\n    X-Frame-Options: ''\n"
        ))

        assert () == web.headers

    def test_without_web_config(self, serve: Serve) -> None:
        """No web config, no extra headers and no auth."""
        resp = get(serve(None), "/metrics")

        assert 200 == resp.status
        assert resp.headers["X-Frame-Options"] is None


class TestLoad:
    def test_no_file_no_users(self) -> None:
        """Nothing configured: None, plain open HTTP."""
        assert web_config.load(None) is None

    def test_empty_file(self, pki: Pki) -> None:
        """An empty file configures nothing (no TLS, no auth)."""
        web = load(pki.web("# nothing\n"))

        assert (None, (), ()) == (web.ssl_context, web.users, web.headers)

    def test_http2_accepted(self, pki: Pki) -> None:
        """http2 is accepted for compatibility (HTTP/1.1 is served)."""
        assert () == load(pki.web("http_server_config:\n  http2: false\n")).headers

    def test_same_user_same_hash_is_no_conflict(
        self, pki: Pki, alice_hash: str
    ) -> None:
        """The same user with the same hash in both places is fine."""
        path = pki.web(f"basic_auth_users:\n  alice: '{alice_hash}'\n")

        assert (("alice", alice_hash),) == load(path, (("alice", alice_hash),)).users

    def test_conflicting_user(self, pki: Pki, alice_hash: str) -> None:
        """A user in both places with different hashes is refused."""
        other = bcrypt.hashpw(b"other", bcrypt.gensalt(4)).decode()
        path = pki.web(f"basic_auth_users:\n  alice: '{alice_hash}'\n")

        with pytest.raises(ConfigError) as exc:
            web_config.load(path, (("alice", other),))

        assert str(exc.value).startswith(
            "config key 'basic-auth-users': user 'alice' is also in "
            f"web-config-file {str(path)!r}"
        )


HASH = "$2y$04$" + "a" * 53
BAD_FILES = [
    pytest.param("", "cannot read: No such file or directory", id="missing-file"),
    pytest.param("tls_server_config: [\n", "not valid YAML", id="bad-yaml"),
    pytest.param("- a\n", "must be a mapping", id="not-a-mapping"),
    pytest.param(
        "tls_config: {}\n",
        "unknown key 'tls_config'; did you mean 'tls_server_config'?",
        id="unknown-section",
    ),
    pytest.param(
        "tls_server_config:\n  certfile: server.crt\n",
        "tls_server_config: unknown key 'certfile'; did you mean 'cert_file'?",
        id="unknown-tls-key",
    ),
    pytest.param(
        "http_server_config:\n  header: {}\n",
        "http_server_config: unknown key 'header'; did you mean 'headers'?",
        id="unknown-http-key",
    ),
    pytest.param(
        "rate_limit:\n  interval: 1s\n  burst: 2\n",
        "rate_limit: rate limiting is not supported",
        id="rate-limit",
    ),
    pytest.param(
        TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
        "tls_server_config.cipher_suites: ",
        id="cipher-suites",
    ),
    pytest.param(
        MTLS.format("RequireAndVerifyClientCert")
        + "  client_allowed_sans: [scraper]\n",
        "tls_server_config.client_allowed_sans: not supported",
        id="client-allowed-sans",
    ),
    pytest.param("tls_server_config: x\n", "tls_server_config: must be a mapping",
                 id="tls-not-a-mapping"),
    pytest.param(
        "tls_server_config:\n  cert_file: server.crt\n",
        "key_file is required (cert_file and key_file go together)",
        id="cert-without-key",
    ),
    pytest.param(
        "tls_server_config:\n  key_file: server.key\n",
        "cert_file is required",
        id="key-without-cert",
    ),
    pytest.param(
        "tls_server_config:\n  min_version: TLS13\n",
        "cert_file is required",
        id="tls-without-cert",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: nope.key\n",
        "tls_server_config.key_file: 'DIR/nope.key': cannot read: "
        "No such file or directory",
        id="missing-key-file",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n",
        "tls_server_config.cert_file: 'DIR/nope.crt': cannot read",
        id="missing-cert-file",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: garbage.txt\n  key_file: server.key\n",
        "tls_server_config.cert_file: cert_file 'DIR/garbage.txt': "
        "no PEM certificate in it",
        id="cert-not-pem",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n",
        "no PEM private key in it",
        id="key-not-a-key",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
        "cert_file 'DIR/server.crt' and key_file 'DIR/other.key' do not load "
        "as a certificate and its private key: ",
        id="key-does-not-match",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: encrypted.key\n",
        "tls_server_config.key_file: the private key is encrypted",
        id="encrypted-key",
    ),
    pytest.param(
        TLS + "  cert: abc\n",
        "give cert or cert_file, not both",
        id="cert-twice",
    ),
    pytest.param(
        TLS + "  client_auth_type: Sometimes\n",
        "tls_server_config.client_auth_type: 'Sometimes' is not one of "
        "NoClientCert, RequestClientCert, VerifyClientCertIfGiven, "
        "RequireAndVerifyClientCert",
        id="bad-client-auth",
    ),
    pytest.param(
        MTLS.format("RequireAnyClientCert"),
        "RequireAnyClientCert (a certificate without verification) is not "
        "supported",
        id="require-any-client-cert",
    ),
    pytest.param(
        TLS + "  client_ca_file: ca.crt\n",
        "client_ca_file is set but client_auth_type is NoClientCert",
        id="client-ca-without-auth",
    ),
    pytest.param(
        TLS + "  client_ca_file: garbage.txt\n"
        "  client_auth_type: RequireAndVerifyClientCert\n",
        "tls_server_config.client_ca_file: client_ca_file 'DIR/garbage.txt': "
        "no PEM certificate in it",
        id="client-ca-not-pem",
    ),
    pytest.param(
        TLS + "  client_ca_file: nope.crt\n"
        "  client_auth_type: RequireAndVerifyClientCert\n",
        "tls_server_config.client_ca_file: 'DIR/nope.crt': cannot read",
        id="missing-client-ca",
    ),
    pytest.param(
        TLS + "  min_version: TLS11\n",
        "tls_server_config.min_version: 'TLS11' is not one of TLS12, TLS13 "
        "(TLS 1.0 and 1.1 are insecure and not supported)",
        id="tls11",
    ),
    pytest.param(
        TLS + "  max_version: TLS14\n",
        "tls_server_config.max_version: 'TLS14' is not one of TLS12, TLS13",
        id="unknown-version",
    ),
    pytest.param(
        TLS + "  min_version: TLS13\n  max_version: TLS12\n",
        "max_version is lower than min_version",
        id="max-below-min",
    ),
    pytest.param(
        TLS + "  cert_file: 5\n",
        "tls_server_config.cert_file: must be a string",
        id="cert-file-not-string",
    ),
    pytest.param(
        TLS + "  prefer_server_cipher_suites: 1\n",
        "tls_server_config.prefer_server_cipher_suites: 1 is not true or false",
        id="bad-boolean",
    ),
    pytest.param(
        "http_server_config:\n  headers:\n    Content-Type: text/html\n",
        "http_server_config.headers: header 'Content-Type' cannot be set; "
        "allowed: Strict-Transport-Security, ",
        id="content-type-header",
    ),
    pytest.param(
        "http_server_config:\n  headers:\n    Authorization: x\n",
        "header 'Authorization' cannot be set",
        id="authorization-header",
    ),
    pytest.param(
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        "http_server_config.headers.X-Frame-Options: 'allow' is not one of "
        "deny, sameorigin",
        id="frame-options-value",
    ),
    pytest.param(
        "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
        "'sniff' is not one of nosniff",
        id="content-type-options-value",
    ),
    pytest.param(
        'http_server_config:\n  headers:\n    X-XSS-Protection: "1\\nX: y"\n',
        "http_server_config.headers.X-XSS-Protection: must be printable ASCII",
        id="header-injection",
    ),
    pytest.param(
        "http_server_config:\n  headers: [a]\n",
        "http_server_config.headers: must be a mapping",
        id="headers-not-a-mapping",
    ),
    pytest.param(
        "http_server_config:\n  http2: 'yes'\n",
        "http_server_config.http2: is not true or false",
        id="http2-not-boolean",
    ),
    pytest.param(
        "basic_auth_users: [alice]\n",
        "basic_auth_users: must be a mapping of user: hash",
        id="users-not-a-mapping",
    ),
    pytest.param(
        "basic_auth_users:\n  alice: hunter2\n",
        "basic_auth_users: the password of user 'alice' is not a bcrypt hash",
        id="plain-password",
    ),
    pytest.param(
        f"basic_auth_users:\n  alice: '{HASH[:-1]}'\n",
        "is not a bcrypt hash",
        id="short-hash",
    ),
    pytest.param(
        f"basic_auth_users:\n  'a:b': '{HASH}'\n",
        "user name 'a:b' cannot be sent in basic auth",
        id="user-with-colon",
    ),
    pytest.param(
        f"basic_auth_users:\n  7: '{HASH}'\n",
        "user name 7 is not a non-empty string",
        id="user-not-a-string",
    ),
]


class TestBadFiles:
    @pytest.mark.parametrize(("text", "fragment"), BAD_FILES)
    def test_one_line_naming_the_key(
        self, pki: Pki, text: str, fragment: str
    ) -> None:
        """Each class of bad web config is one line naming file and key."""
        path = pki.web(text) if text else pki.dir / "missing.yml"

        with pytest.raises(ConfigError) as exc:
            web_config.load(path)

        message = str(exc.value)
        assert message.startswith(
            f"config key 'web-config-file': {str(path)!r}: "
        )
        assert fragment.replace("DIR", str(pki.dir)) in message
        assert "\n" not in message
        assert "hunter2" not in message


class TestConfigKeys:
    """The two config keys, through config.build()."""

    @staticmethod
    def build(tmp_path: Path, **flags: object) -> config_mod.Config:
        return config_mod.build({}, {}, flags, {"HOME": str(tmp_path)})

    def test_flag_form(self, tmp_path: Path, alice_hash: str) -> None:
        """USER=HASH,USER=HASH: hashes hold '$', '/' and '.', never '='."""
        bob = "$2b$04$abcdefghijklmnopqrstu./ABCDEFGHIJKLMNOPQRSTUVWXYZ0123"
        cfg = self.build(
            tmp_path, **{"basic-auth-users": f"bob={bob}, alice={alice_hash}"}
        )

        assert (("alice", alice_hash), ("bob", bob)) == cfg.basic_auth_users

    def test_user_may_hold_equals(self, tmp_path: Path) -> None:
        """The last '=' of an item splits user and hash."""
        cfg = self.build(tmp_path, **{"basic-auth-users": f"a=b={HASH}"})

        assert (("a=b", HASH),) == cfg.basic_auth_users

    def test_environment(self, tmp_path: Path, alice_hash: str) -> None:
        """DU_EXPORTER_BASIC_AUTH_USERS takes the flag form."""
        environ = {
            "HOME": str(tmp_path),
            "DU_EXPORTER_BASIC_AUTH_USERS": f"alice={alice_hash}",
        }

        cfg = config_mod.load(None, {}, environ)

        assert (("alice", alice_hash),) == cfg.basic_auth_users

    def test_file_form_and_summary(self, tmp_path: Path, alice_hash: str) -> None:
        """A YAML map in the file; the summary never shows the hash."""
        path = tmp_path / "c.yml"
        path.write_text(
            yaml.safe_dump({"basic-auth-users": {"alice": alice_hash}}),
            encoding="utf-8",
        )

        cfg = config_mod.load(path, {}, {"HOME": str(tmp_path)})
        summary = cfg.summary()

        assert (("alice", alice_hash),) == cfg.basic_auth_users
        assert {"alice": "<secret>"} == summary["basic-auth-users"]
        assert alice_hash not in yaml.safe_dump(summary)

    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            ("alice", "each item must be USER=BCRYPT_HASH"),
            (f"={HASH}", "each item must be USER=BCRYPT_HASH"),
            ("alice=hunter2", "the password of user 'alice' is not a bcrypt"),
            (f"alice={HASH},alice={HASH}", "user 'alice' is listed twice"),
            (["alice"], "is not a map of user: bcrypt hash"),
            ({"alice": 5}, "is not a bcrypt hash"),
        ],
    )
    def test_bad_users(
        self, tmp_path: Path, value: object, fragment: str
    ) -> None:
        """Bad values name the key, and never echo a password."""
        with pytest.raises(ConfigError) as exc:
            self.build(tmp_path, **{"basic-auth-users": value})

        message = str(exc.value)
        assert message.startswith("config key 'basic-auth-users': ")
        assert fragment in message
        assert "hunter2" not in message

    def test_web_config_checked_by_build(self, tmp_path: Path) -> None:
        """A bad web config stops build(), so check-config catches it."""
        with pytest.raises(ConfigError, match=r"^config key 'web-config-file'"):
            self.build(tmp_path, **{"web-config-file": str(tmp_path / "x")})

    def test_blank_web_config_file(self, tmp_path: Path) -> None:
        """An empty web-config-file means none."""
        cfg = self.build(tmp_path, **{"web-config-file": ""})

        assert cfg.web_config_file is None


# --- the real program

CLI_BAD = [
    pytest.param(None, "cannot read: No such file", id="missing-file"),
    pytest.param("tls_server_config: {cert_file: server.crt\n", "not valid YAML",
                 id="bad-yaml"),
    pytest.param("tls_server_config:\n  certfile: x\n", "unknown key 'certfile'",
                 id="unknown-key"),
    pytest.param(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: gone.key\n",
        "tls_server_config.key_file: ",
        id="missing-key-file",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: garbage.txt\n  key_file: server.key\n",
        "no PEM certificate",
        id="bad-cert",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
        "do not load as a certificate and its private key",
        id="key-mismatch",
    ),
    pytest.param("basic_auth_users:\n  alice: hunter2\n", "not a bcrypt hash",
                 id="bad-hash"),
]


class TestCommandLine:
    @pytest.mark.parametrize(("text", "fragment"), CLI_BAD)
    def test_bad_web_config_is_exit_2(
        self, tmp_path: Path, pki: Pki, text: str | None, fragment: str
    ) -> None:
        """The exporter stops before starting: one line, exit 2."""
        web = pki.dir / "missing.yml" if text is None else pki.web(text)
        state = tmp_path / "state"

        proc = run(
            tmp_path, "--web-config-file", str(web), "--db-path",
            str(state / "du.db"), "--bind-address", "127.0.0.1:0",
        )

        assert 2 == proc.returncode, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.splitlines()
        assert 1 == len(lines), proc.stderr
        assert lines[0].startswith(
            f"du-exporter: error: config key 'web-config-file': {str(web)!r}: "
        )
        assert fragment in lines[0]
        assert "hunter2" not in proc.stderr
        assert not state.exists()

    def test_bad_basic_auth_users_flag(self, tmp_path: Path) -> None:
        """--basic-auth-users with a password instead of a hash: exit 2."""
        proc = run(tmp_path, "check-config", "--basic-auth-users", "a=hunter2")

        assert 2 == proc.returncode
        assert proc.stderr.startswith(
            "du-exporter: error: config key 'basic-auth-users': "
        )
        assert "hunter2" not in proc.stderr

    def test_check_config_shows_web_keys(
        self, tmp_path: Path, pki: Pki, alice_hash: str
    ) -> None:
        """check-config prints the file and the users, not their hashes."""
        web = pki.web(TLS)

        proc = run(
            tmp_path, "check-config", "--web-config-file", str(web),
            "--basic-auth-users", f"alice={alice_hash}",
        )

        assert 0 == proc.returncode, proc.stderr
        data = yaml.safe_load(proc.stdout)
        assert str(web) == data["web-config-file"]
        assert {"alice": "<secret>"} == data["basic-auth-users"]
        assert alice_hash not in proc.stdout

    def test_exporter_over_tls_with_auth(
        self, tmp_path: Path, pki: Pki, alice_hash: str
    ) -> None:
        """The daemon serves HTTPS, asks for credentials, health stays open."""
        tree = tmp_path / "tree"
        (tree / "a").mkdir(parents=True)
        web = pki.web(TLS + f"basic_auth_users:\n  alice: '{alice_hash}'\n")

        with Exporter(
            tmp_path, "--web-config-file", str(web),
            "--analyzed-path", str(tree), "--scan-interval-minutes", "0",
        ) as exporter:
            host, port = exporter.url.removeprefix("https://").rsplit(":", 1)
            handle = _Remote(host, int(port))
            creds = basic("alice", PASSWORD)
            anonymous = get(handle, "/metrics", tls=pki.client())
            healthy = get(handle, "/-/healthy", tls=pki.client())
            metrics = get(handle, "/metrics", tls=pki.client(), headers=creds)

        assert exporter.url.startswith("https://127.0.0.1:")
        assert (401, 200, 200) == (
            anonymous.status, healthy.status, metrics.status
        )
        assert b"du_exporter_build_info" in metrics.body


@dataclass
class _Remote:
    """The subprocess exporter's address, for get()."""

    host: str
    port: int
