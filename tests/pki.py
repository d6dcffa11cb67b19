"""Certificates for the TLS tests: a CA and what it signs.

Made with ``cryptography`` (EC P-256, valid from an hour ago for a day),
written as PEM files into a directory.  The one certificate maker of the
test suite.
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


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key: Key, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with ``password`` if given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


class Ca:
    """A certificate authority that issues server and client certificates."""

    def __init__(self, name: str = "test CA") -> None:
        self.key = new_key()
        self.cert = self._sign(name, self.key, None)

    def _sign(
        self, name: str, key: Key, usages: list[x509.ObjectIdentifier] | None
    ) -> x509.Certificate:
        """A certificate for ``key``: this CA's own when ``usages`` is None."""
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()
                ),
                critical=False,
            )
        )
        if usages is None:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False,
                    key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage(usages), critical=False
            )
        if usages is not None and ExtendedKeyUsageOID.SERVER_AUTH in usages:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]),
                critical=False,
            )
        return builder.sign(self.key, hashes.SHA256())

    def write(self, directory: Path, name: str = "ca") -> Path:
        path = directory / f"{name}.crt"
        path.write_bytes(pem(self.cert))
        return path

    def make(
        self, name: str, *, server: bool = True, client: bool = False
    ) -> tuple[x509.Certificate, Key]:
        """A certificate (common name ``name``) and its key."""
        key = new_key()
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        return self._sign(name, key, usages), key

    def issue(
        self, directory: Path, name: str, *, server: bool = True, client: bool = False
    ) -> x509.Certificate:
        """``name``.crt and ``name``.key in ``directory``; the certificate."""
        cert, key = self.make(name, server=server, client=client)
        (directory / f"{name}.crt").write_bytes(pem(cert))
        (directory / f"{name}.key").write_bytes(pem_key(key))
        return cert
