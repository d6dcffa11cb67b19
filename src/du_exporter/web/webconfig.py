"""TLS, basic auth and response headers: the exporter-toolkit web config.

The file has the format every Prometheus exporter built on the Go
exporter-toolkit reads with ``--web.config.file``::

    tls_server_config:
      cert_file: server.crt       # relative to this file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      min_version: TLS13
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      alice: $2y$10$...           # bcrypt hash

:func:`load` checks all of it up front (keys, hashes, and that the
certificate, key and client CA really load) and raises a one-line
:class:`~du_exporter.errors.ConfigError` naming the key.
:class:`BasicAuth` checks ``Authorization`` headers for the server.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import ssl
import threading

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from du_exporter.errors import ConfigError, did_you_mean


_SECTIONS = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS_KEYS = (
    "cert_file",
    "key_file",
    "cert",
    "key",
    "client_ca_file",
    "client_ca",
    "client_auth_type",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
)
_HTTP_KEYS = ("headers", "http2")
# exporter-toolkit options this implementation does not have: refused
# with the reason rather than silently ignored (they restrict access).
_UNSUPPORTED = {
    "rate_limit": "rate limiting is not supported by du-exporter",
    "cipher_suites": "Go cipher suite names are not supported; "
    "Python's defaults apply",
    "curve_preferences": "not supported; OpenSSL's defaults apply",
    "client_allowed_sans": "not supported by du-exporter",
}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    # Python's ssl module cannot ask for a certificate without verifying
    # it.  The exporter never looks at an unverified certificate, so not
    # asking lets exactly the same clients in.
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# The headers exporter-toolkit lets a web config set, and the values it
# accepts for each (None: any).  Everything else is refused, as there.
_HEADERS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    name.lower(): (name, values)
    for name, values in (
        ("Strict-Transport-Security", None),
        ("X-Content-Type-Options", ("nosniff",)),
        ("X-Frame-Options", ("deny", "sameorigin")),
        ("X-XSS-Protection", None),
        ("Content-Security-Policy", None),
    )
}
# $2a$, $2b$ or $2y$, a two-digit cost 04-31, 22 characters of salt and
# 31 of hash: what htpasswd -B and every bcrypt library write.
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# bcrypt only ever reads this many bytes of a password.
_BCRYPT_MAX = 72


@dataclass(frozen=True, eq=False)
class WebConfig:
    """What the server needs: a TLS context, users and extra headers."""

    #: Wraps the listening socket; None serves plain HTTP.
    ssl_context: ssl.SSLContext | None
    #: (user, bcrypt hash) pairs; empty means no basic auth.
    users: tuple[tuple[str, str], ...]
    #: Added to every response.
    headers: tuple[tuple[str, str], ...]


def check_user(user: object) -> str:
    """A user name basic auth can carry, or :class:`ValueError`."""
    if not isinstance(user, str) or not user:
        msg = f"user name {user!r} is not a non-empty string"
        raise ValueError(msg)
    if ":" in user or not user.isprintable():
        msg = f"user name {user!r} cannot be sent in basic auth"
        raise ValueError(msg)
    return user


def check_hash(user: str, hashed: object) -> str:
    """A bcrypt hash, or :class:`ValueError` (never quoting the value,
    which may be a password pasted by mistake)."""
    if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
        msg = (
            f"the password of user {user!r} is not a bcrypt hash "
            "(like $2y$10$ and 53 more characters; see htpasswd -nB)"
        )
        raise ValueError(msg)
    return hashed


def load(
    path: Path | None, extra_users: Iterable[tuple[str, str]] = ()
) -> WebConfig | None:
    """Read and check the web config file, adding ``basic-auth-users``.

    None when there is neither a file nor a user: plain HTTP, open.
    """
    extra = tuple(extra_users)
    if path is None:
        return WebConfig(None, extra, ()) if extra else None
    loader = _Loader(path)
    data = loader.read()
    tls = loader.section(data, "tls_server_config", _TLS_KEYS)
    http = loader.section(data, "http_server_config", _HTTP_KEYS)
    return WebConfig(
        ssl_context=loader.ssl_context(tls) if tls else None,
        users=loader.merge_users(data.get("basic_auth_users"), extra),
        headers=loader.headers(http),
    )


def check(path: Path | None, extra_users: Iterable[tuple[str, str]] = ()) -> None:
    """What :func:`load` checks, without loading TLS material: every key,
    hash and header, and that each certificate and key file can be
    opened.  For commands that read the configuration but serve nothing
    (``top``, ``db check``...): a bad file still stops them, and no
    private key enters their memory.
    """
    if path is None:
        return
    loader = _Loader(path)
    data = loader.read()
    tls = loader.section(data, "tls_server_config", _TLS_KEYS)
    loader.headers(loader.section(data, "http_server_config", _HTTP_KEYS))
    loader.merge_users(data.get("basic_auth_users"), extra_users)
    if tls:
        loader.check_tls(tls)


def probe_context(path: Path | None) -> ssl.SSLContext | None:
    """The client side for ``du-exporter healthcheck``; None for plain HTTP.

    The probe talks to its own process over loopback and sends no
    secret, so it checks neither the certificate nor the host name (the
    certificate names the public host, and its issuer need not be
    configured here).  When the server requires a client certificate,
    the probe offers the server's own certificate and key, which it can
    read: accepted when ``client_ca_file`` issued it for client
    authentication too.
    """
    if path is None:
        return None
    loader = _Loader(path)
    tls = loader.section(loader.read(), "tls_server_config", _TLS_KEYS)
    if not tls:
        return None
    loader.check_tls(tls)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if loader.string(tls, "client_auth_type") == "RequireAndVerifyClientCert":
        loader.load_cert_chain(ctx, tls)
    return ctx


class _Loader:
    """Checks one file; every error names the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dir = path.parent

    def fail(self, where: str, reason: str) -> ConfigError:
        return ConfigError(
            f"config key 'web-config-file': {str(self.path)!r}: "
            f"{where}{': ' if where else ''}{reason}"
        )

    def read(self) -> dict[str, object]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise self.fail("", f"cannot read: {_reason(e)}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            reason = " ".join(str(e).split())
            raise self.fail("", f"not valid YAML: {reason}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise self.fail("", "must be a mapping of section: settings")
        self.known_keys(data, "", _SECTIONS)
        return data

    def known_keys(
        self, data: Mapping[object, object], where: str, known: Iterable[str]
    ) -> None:
        known = tuple(known)
        for key in data:
            if isinstance(key, str) and key in known:
                continue
            if isinstance(key, str) and key in _UNSUPPORTED:
                raise self.fail(_join(where, key), _UNSUPPORTED[key])
            raise self.fail(where, f"unknown key {key!r}{did_you_mean(key, known)}")

    def section(
        self, data: Mapping[str, object], name: str, known: Iterable[str]
    ) -> dict[str, object]:
        value = data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(name, "must be a mapping")
        self.known_keys(value, name, known)
        return value

    # --- tls_server_config

    def ssl_context(self, tls: Mapping[str, object]) -> ssl.SSLContext:
        where = "tls_server_config"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        lowest = self.version(tls, "min_version") or ssl.TLSVersion.TLSv1_2
        highest = self.version(tls, "max_version")
        if highest is not None and highest < lowest:
            raise self.fail(where, "max_version is lower than min_version")
        ctx.minimum_version = lowest
        if highest is not None:
            ctx.maximum_version = highest
        if not self.boolean(tls, "prefer_server_cipher_suites", default=True):
            ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        self.load_cert_chain(ctx, tls)
        auth = self.string(tls, "client_auth_type") or "NoClientCert"
        if auth not in _CLIENT_AUTH:
            raise self.fail(_join(where, "client_auth_type"), _auth_reason(auth))
        ctx.verify_mode = _CLIENT_AUTH[auth]
        has_ca = self.load_client_ca(ctx, tls)
        if has_ca and auth == "NoClientCert":
            raise self.fail(
                where, "client_ca_file is set but client_auth_type is "
                "NoClientCert; use RequireAndVerifyClientCert"
            )
        if not has_ca and ctx.verify_mode != ssl.CERT_NONE:
            # Go verifies client certificates against the system roots
            # when no client CA is given; so do we.
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        return ctx

    def check_tls(self, tls: Mapping[str, object]) -> None:
        """The section's values, and that its files open (not loaded)."""
        where = "tls_server_config"
        lowest = self.version(tls, "min_version") or ssl.TLSVersion.TLSv1_2
        highest = self.version(tls, "max_version")
        if highest is not None and highest < lowest:
            raise self.fail(where, "max_version is lower than min_version")
        self.boolean(tls, "prefer_server_cipher_suites", default=True)
        auth = self.string(tls, "client_auth_type") or "NoClientCert"
        if auth not in _CLIENT_AUTH:
            raise self.fail(_join(where, "client_auth_type"), _auth_reason(auth))
        for key in ("cert", "key", "client_ca"):
            inline, file_name = self.string(tls, key), self.string(tls, f"{key}_file")
            if inline and file_name:
                raise self.fail(where, f"give {key} or {key}_file, not both")
            if file_name:
                path = self.dir / file_name
                try:
                    path.open("rb").close()
                except OSError as e:
                    raise self.fail(
                        _join(where, f"{key}_file"),
                        f"{str(path)!r}: cannot read: {_reason(e)}",
                    ) from None
            elif not inline and key != "client_ca":
                raise self.fail(
                    where, f"{key}_file is required (cert_file and key_file go together)"
                )

    def version(
        self, tls: Mapping[str, object], key: str
    ) -> ssl.TLSVersion | None:
        name = self.string(tls, key)
        if name is None:
            return None
        if name not in _VERSIONS:
            reason = f"{name!r} is not one of {', '.join(_VERSIONS)}"
            if name in {"TLS10", "TLS11"}:
                reason += " (TLS 1.0 and 1.1 are insecure and not supported)"
            raise self.fail(_join("tls_server_config", key), reason)
        return _VERSIONS[name]

    def load_cert_chain(
        self, ctx: ssl.SSLContext, tls: Mapping[str, object]
    ) -> None:
        where = "tls_server_config"
        cert = self.pem(tls, "cert", "CERTIFICATE")
        key = self.pem(tls, "key", "PRIVATE KEY")
        if cert is None or key is None:
            missing = "cert_file" if cert is None else "key_file"
            raise self.fail(
                where,
                f"{missing} is required (cert_file and key_file go together)",
            )
        if b"ENCRYPTED" in key.data:
            raise self.fail(
                _join(where, key.key),
                "the private key is encrypted; give an unencrypted key",
            )
        try:
            with _on_disk(cert) as cert_path, _on_disk(key) as key_path:
                ctx.load_cert_chain(cert_path, key_path, password=_no_password)
        except (ssl.SSLError, OSError) as e:
            raise self.fail(
                where,
                f"{cert} and {key} do not load as a certificate and its "
                f"private key: {_reason(e)}",
            ) from None

    def load_client_ca(
        self, ctx: ssl.SSLContext, tls: Mapping[str, object]
    ) -> bool:
        ca = self.pem(tls, "client_ca", "CERTIFICATE")
        if ca is None:
            return False
        try:
            ctx.load_verify_locations(cadata=ca.data.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError) as e:
            raise self.fail(
                _join("tls_server_config", ca.key),
                f"not a PEM CA certificate: {_reason(e)}",
            ) from None
        return True

    def pem(
        self, tls: Mapping[str, object], key: str, kind: str
    ) -> _Pem | None:
        """The PEM of inline ``key`` or of the file ``key_file``."""
        where = "tls_server_config"
        file_key = f"{key}_file"
        inline, file_name = self.string(tls, key), self.string(tls, file_key)
        if inline and file_name:
            raise self.fail(where, f"give {key} or {file_key}, not both")
        if inline:
            pem = _Pem(key, inline.encode(), None)
        elif file_name:
            path = self.dir / file_name
            try:
                pem = _Pem(file_key, path.read_bytes(), path)
            except OSError as e:
                raise self.fail(
                    _join(where, file_key),
                    f"{str(path)!r}: cannot read: {_reason(e)}",
                ) from None
        else:
            return None
        marker = b" PRIVATE KEY-----" if kind == "PRIVATE KEY" else (
            b"-----BEGIN CERTIFICATE-----"
        )
        if marker not in pem.data:
            raise self.fail(
                _join(where, pem.key), f"{pem}: no PEM {kind.lower()} in it"
            )
        return pem

    def string(self, data: Mapping[str, object], key: str) -> str | None:
        value = data.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str) or "\0" in value:
            raise self.fail(_join("tls_server_config", key), "must be a string")
        return value

    def boolean(
        self, data: Mapping[str, object], key: str, *, default: bool
    ) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(
                _join("tls_server_config", key), f"{value!r} is not true or false"
            )
        return value

    # --- http_server_config

    def headers(self, http: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
        if not isinstance(http.get("http2", True), bool):
            # Accepted for compatibility; du-exporter speaks HTTP/1.1 only.
            raise self.fail("http_server_config.http2", "is not true or false")
        headers = http.get("headers")
        if headers is None:
            return ()
        where = "http_server_config.headers"
        if not isinstance(headers, dict):
            raise self.fail(where, "must be a mapping of header: value")
        out = []
        for name, value in headers.items():
            canonical, allowed = self.header_name(name)
            text = self.header_value(canonical, value)
            if not text:
                continue  # blank: unset, as in exporter-toolkit
            if allowed is not None and text.lower() not in allowed:
                raise self.fail(
                    _join(where, canonical),
                    f"{text!r} is not one of {', '.join(allowed)}",
                )
            out.append((canonical, text))
        return tuple(out)

    def header_name(self, name: object) -> tuple[str, tuple[str, ...] | None]:
        if isinstance(name, str) and name.lower() in _HEADERS:
            return _HEADERS[name.lower()]
        allowed = ", ".join(canonical for canonical, _ in _HEADERS.values())
        raise self.fail(
            "http_server_config.headers",
            f"header {name!r} cannot be set; allowed: {allowed}",
        )

    def header_value(self, name: str, value: object) -> str:
        where = _join("http_server_config.headers", name)
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.fail(where, f"{value!r} is not a string")
        text = str(value).strip()
        if not (text.isascii() and text.isprintable()):
            raise self.fail(where, "must be printable ASCII on one line")
        return text

    # --- basic_auth_users

    def merge_users(
        self, value: object, extra: Iterable[tuple[str, str]]
    ) -> tuple[tuple[str, str], ...]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail("basic_auth_users", "must be a mapping of user: hash")
        users: dict[str, str] = {}
        for user, hashed in value.items():
            try:
                users[check_user(user)] = check_hash(str(user), hashed)
            except ValueError as e:
                raise self.fail("basic_auth_users", str(e)) from None
        for user, hashed in extra:
            if users.get(user, hashed) != hashed:
                msg = (
                    f"config key 'basic-auth-users': user {user!r} is also "
                    f"in web-config-file {str(self.path)!r}, with another "
                    "hash; keep one"
                )
                raise ConfigError(msg)
            users[user] = hashed
        return tuple(sorted(users.items()))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _reason(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):
        text = str(e.args[1]) if len(e.args) > 1 else str(e)
        return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


def _auth_reason(auth: str) -> str:
    if auth in {"RequireAnyClientCert", "RequireClientCert"}:
        return (
            f"{auth} (a certificate without verification) is not supported: "
            "Python's ssl module verifies every certificate it asks for; use "
            "RequireAndVerifyClientCert with client_ca_file"
        )
    return f"{auth!r} is not one of {', '.join(_CLIENT_AUTH)}"


def _no_password() -> bytes:
    # Never prompt on the terminal for a key's passphrase.
    return b""


@dataclass(frozen=True)
class _Pem:
    #: The key that gave it: ``cert_file`` or ``cert`` (inline), ...
    key: str
    data: bytes
    path: Path | None

    def __str__(self) -> str:
        return f"{self.key} {str(self.path)!r}" if self.path else self.key


@contextlib.contextmanager
def _on_disk(pem: _Pem) -> Iterator[str]:
    """A path to the PEM: its file, or an anonymous in-memory file.

    ``ssl`` loads certificates only from paths; an inline ``cert`` or
    ``key`` goes through ``memfd_create``, so the key never touches disk.
    """
    if pem.path is not None:
        yield str(pem.path)
        return
    fd = os.memfd_create(pem.key)
    try:
        os.write(fd, pem.data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    bcrypt is slow on purpose (tens of milliseconds at cost 10), and
    Prometheus sends the same credentials on every scrape.  So a success
    is remembered: per user, a keyed digest of user, password and hash,
    compared with :func:`hmac.compare_digest` on the next request.  One
    entry per configured user bounds the cache; a failure is never
    cached.  An unknown user is checked against a dummy hash, so the
    answer takes as long as for a wrong password, and bcrypt runs one
    check at a time, so a flood of bad passwords costs one core at most.
    """

    def __init__(self, users: Iterable[tuple[str, str]]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users}
        self._key = secrets.token_bytes(32)
        self._cache: dict[str, bytes] = {}
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()
        self._dummy: bytes | None = None

    def check(self, authorization: str | None) -> bool:
        """Whether the header carries a configured user's password."""
        credentials = _credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        if hashed is None:
            with self._bcrypt_lock:
                _checkpw(password, self._dummy_hash())
            return False
        digest = hmac.new(
            self._key,
            b"\0".join((user.encode(), hashlib.sha256(password).digest(), hashed)),
            hashlib.sha256,
        ).digest()
        with self._cache_lock:
            known = self._cache.get(user)
        if known is not None and hmac.compare_digest(known, digest):
            return True
        with self._bcrypt_lock:
            ok = _checkpw(password, hashed)
        if ok:
            with self._cache_lock:
                self._cache[user] = digest
        return ok

    def _dummy_hash(self) -> bytes:
        # Made on first use, at the cost of the configured hashes, so an
        # unknown user takes as long as a known one.
        if self._dummy is None:
            cost = max((int(h[4:6]) for h in self._users.values()), default=10)
            password = secrets.token_urlsafe(16).encode()
            import bcrypt  # noqa: PLC0415 - only a serving daemon checks passwords

            self._dummy = bcrypt.hashpw(password, bcrypt.gensalt(cost))
        return self._dummy


def _credentials(authorization: str | None) -> tuple[str, bytes] | None:
    """(user, password) from a ``Basic`` header, or None."""
    if authorization is None:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, sep, password = decoded.partition(b":")
        return (user.decode(), password) if sep else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    # bcrypt reads 72 bytes at most; Go's bcrypt (and htpasswd) silently
    # ignore the rest, while Python's bcrypt 5 raises: cut it here.
    try:
        import bcrypt  # noqa: PLC0415 - only a serving daemon checks passwords

        return bcrypt.checkpw(password[:_BCRYPT_MAX], hashed)
    except ValueError:
        return False
