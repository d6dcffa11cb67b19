"""Certificates for tests of the running exporter: a CA and what it signs.

Made with ``cryptography``, written as PEM files into a directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


Key = ec.EllipticCurvePrivateKey


class Ca:
    """A certificate authority that issues server and client certificates."""

    def __init__(self, name: str = "test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self._sign(name, self.key, None)

    def _sign(
        self, name: str, key: Key, usages: list[x509.ObjectIdentifier] | None
    ) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject if usages is not None else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.BasicConstraints(ca=usages is None, path_length=None),
                critical=True,
            )
        )
        if usages is not None:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage(usages), critical=False
            ).add_extension(
                x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]),
                critical=False,
            )
        return builder.sign(self.key, hashes.SHA256())

    def write(self, directory: Path, name: str = "ca") -> Path:
        path = directory / f"{name}.crt"
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(
        self, directory: Path, name: str, *, server: bool = True, client: bool = False
    ) -> x509.Certificate:
        """``name``.crt and ``name``.key in ``directory``; the certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        cert = self._sign(name, key, usages)
        (directory / f"{name}.crt").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
        )
        (directory / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)
