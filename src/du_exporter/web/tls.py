"""The ``tls_server_config`` section of the web config: an SSL context.

:class:`TlsSection` checks the section and builds the
:class:`ssl.SSLContext` the server wraps connections in; every error is
a one-line :class:`~du_exporter.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from du_exporter.errors import ConfigError


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

class TlsSection:
    """Reads one ``tls_server_config``; *fail* makes the error for a key."""

    def __init__(
        self, directory: Path, fail: Callable[[str, str], ConfigError]
    ) -> None:
        self.dir = directory
        self.fail = fail

    def context(self, tls: Mapping[str, object]) -> ssl.SSLContext:
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
            raise self.fail(join_key(where, "client_auth_type"), _auth_reason(auth))
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

    def check(self, tls: Mapping[str, object]) -> None:
        """The section's values, and that its files open (not loaded):
        for commands that read the configuration but serve nothing."""
        where = "tls_server_config"
        lowest = self.version(tls, "min_version") or ssl.TLSVersion.TLSv1_2
        highest = self.version(tls, "max_version")
        if highest is not None and highest < lowest:
            raise self.fail(where, "max_version is lower than min_version")
        self.boolean(tls, "prefer_server_cipher_suites", default=True)
        auth = self.string(tls, "client_auth_type") or "NoClientCert"
        if auth not in _CLIENT_AUTH:
            raise self.fail(join_key(where, "client_auth_type"), _auth_reason(auth))
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
                        join_key(where, f"{key}_file"),
                        f"{str(path)!r}: cannot read: {reason(e)}",
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
            raise self.fail(join_key("tls_server_config", key), reason)
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
                join_key(where, key.key),
                "the private key is encrypted; give an unencrypted key",
            )
        try:
            with _on_disk(cert) as cert_path, _on_disk(key) as key_path:
                ctx.load_cert_chain(cert_path, key_path, password=_no_password)
        except (ssl.SSLError, OSError) as e:
            raise self.fail(
                where,
                f"{cert} and {key} do not load as a certificate and its "
                f"private key: {reason(e)}",
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
                join_key("tls_server_config", ca.key),
                f"not a PEM CA certificate: {reason(e)}",
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
                    join_key(where, file_key),
                    f"{str(path)!r}: cannot read: {reason(e)}",
                ) from None
        else:
            return None
        marker = b" PRIVATE KEY-----" if kind == "PRIVATE KEY" else (
            b"-----BEGIN CERTIFICATE-----"
        )
        if marker not in pem.data:
            raise self.fail(
                join_key(where, pem.key), f"{pem}: no PEM {kind.lower()} in it"
            )
        return pem

    def string(self, data: Mapping[str, object], key: str) -> str | None:
        value = data.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str) or "\0" in value:
            raise self.fail(join_key("tls_server_config", key), "must be a string")
        return value

    def boolean(
        self, data: Mapping[str, object], key: str, *, default: bool
    ) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(
                join_key("tls_server_config", key), f"{value!r} is not true or false"
            )
        return value


def join_key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def reason(e: BaseException) -> str:
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


