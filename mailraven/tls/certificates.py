"""A certificate ready to serve: parsed once into an OpenSSL context.

Every source (operator files, ACME, self-signed) ends up as a
L{ServedCertificate}; the SNI creator only ever swaps contexts, so a handshake
never touches the disk.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto
from twisted.internet import ssl

SOURCE_FILE = "file"
SOURCE_ACME = "acme"
SOURCE_SELF_SIGNED = "self-signed"


class CertificateError(Exception):
    """PEM data that cannot be served (unreadable, mismatched key, no cert)."""


@dataclass(frozen=True)
class ServedCertificate:
    names: tuple[str, ...]
    notAfter: datetime.datetime
    serial: int
    source: str
    context: Any  # OpenSSL.SSL.Context

    def status(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "source": self.source,
            "not_after": self.notAfter.isoformat().replace("+00:00", "Z"),
            "serial": format(self.serial, "x"),
        }


def dnsNames(certificate: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate is valid for (SAN, else the CN)."""
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [
            str(a.value)
            for a in certificate.subject.get_attributes_for_oid(
                x509.NameOID.COMMON_NAME
            )
        ]
    return tuple(name.lower() for name in names)


def loadCertificate(chainPEM: bytes, keyPEM: bytes, source: str) -> ServedCertificate:
    """Parse and check a chain (leaf first) and its key; TLS 1.2+ context."""
    try:
        chain = x509.load_pem_x509_certificates(chainPEM)
        key = serialization.load_pem_private_key(keyPEM, password=None)
    except ValueError as e:
        raise CertificateError(f"not a PEM certificate chain and key: {e}") from None
    leaf = chain[0]
    if leaf.public_key().public_numbers() != key.public_key().public_numbers():
        raise CertificateError("the private key does not match the certificate")
    options = ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=crypto.X509.from_cryptography(leaf),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    return ServedCertificate(
        names=dnsNames(leaf),
        notAfter=leaf.not_valid_after_utc,
        serial=leaf.serial_number,
        source=source,
        context=options.getContext(),
    )


def readCertificate(certFile: str, keyFile: str, source: str) -> ServedCertificate:
    """L{loadCertificate} from files (blocking: start-up and reload only)."""
    try:
        with open(certFile, "rb") as f:
            chainPEM = f.read()
        with open(keyFile, "rb") as f:
            keyPEM = f.read()
    except OSError as e:
        raise CertificateError(f"cannot read {e.filename}: {e.strerror}") from None
    return loadCertificate(chainPEM, keyPEM, source)


def splitCombined(pem: bytes) -> tuple[bytes, bytes]:
    """(chain, key) from one PEM file holding both (how ACME results are kept)."""
    keyStart = pem.find(b"-----BEGIN PRIVATE KEY-----")
    keyEnd = pem.find(b"-----END PRIVATE KEY-----")
    if keyStart < 0 or keyEnd < 0:
        raise CertificateError("no private key in the PEM file")
    keyEnd += len(b"-----END PRIVATE KEY-----\n")
    return pem[:keyStart] + pem[keyEnd:], pem[keyStart:keyEnd]


def matches(pattern: str, name: str) -> bool:
    """RFC 6125 matching of one SAN entry: exact, or C{*.} for one label."""
    if pattern == name:
        return True
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return False
