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
:class:`~du_exporter.errors.ConfigError` naming the key.  The TLS
section is built in :mod:`du_exporter.web.tls`; the server checks
``Authorization`` headers with :mod:`du_exporter.web.auth`.
"""

from __future__ import annotations

import re
import ssl

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from du_exporter.errors import ConfigError, did_you_mean
from du_exporter.web.tls import TlsSection, join_key, reason


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
        ssl_context=TlsSection(loader.dir, loader.fail).context(tls)
        if tls
        else None,
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
        TlsSection(loader.dir, loader.fail).check(tls)


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
    section = TlsSection(loader.dir, loader.fail)
    section.check(tls)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if section.string(tls, "client_auth_type") == "RequireAndVerifyClientCert":
        section.load_cert_chain(ctx, tls)
    return ctx


def requires_client_cert(path: Path | None) -> bool:
    """Whether the web config at ``path`` makes every client present a
    certificate (``RequireAndVerifyClientCert``)."""
    if path is None:
        return False
    loader = _Loader(path)
    tls = loader.section(loader.read(), "tls_server_config", _TLS_KEYS)
    section = TlsSection(loader.dir, loader.fail)
    return section.string(tls, "client_auth_type") == "RequireAndVerifyClientCert"


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
            raise self.fail("", f"cannot read: {reason(e)}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            why = " ".join(str(e).split())
            raise self.fail("", f"not valid YAML: {why}") from None
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
                raise self.fail(join_key(where, key), _UNSUPPORTED[key])
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
                    join_key(where, canonical),
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
        where = join_key("http_server_config.headers", name)
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


