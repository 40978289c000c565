"""TLS-ALPN-01 (RFC 8737): the challenge answered inside a TLS handshake.

A CA validating a name connects to port 443 offering only the ALPN protocol
C{acme-tls/1}; it must get a self-signed certificate for that name carrying
the critical acmeIdentifier extension (the SHA-256 of the key authorization).
Every served context gets an ALPN callback: a client that asks for
C{acme-tls/1} while a challenge for its SNI name is pending is switched to the
challenge certificate; every other client is untouched (no ALPN protocol is
chosen, as before). So the API's HTTPS listener on 443 can answer while it
keeps serving: what mox and Stalwart do by default, and txacme never had.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto
from twisted.internet import ssl

ACME_TLS_1 = b"acme-tls/1"
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def validationContext(name: str, keyAuthorization: str) -> Any:
    """An OpenSSL context serving the RFC 8737 certificate for C{name}."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(keyAuthorization.encode("ascii")).digest()
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        # DER OCTET STRING of the 32-byte digest, marked critical (RFC 8737 3)
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest), True
        )
        .sign(key, hashes.SHA256())
    )
    options = ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=crypto.X509.from_cryptography(certificate),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    context = options.getContext()
    context.set_alpn_select_callback(lambda conn, protos: ACME_TLS_1)
    return context


class TLSALPN01Responder:
    """Pending TLS-ALPN-01 challenges by name."""

    def __init__(self) -> None:
        self._contexts: dict[str, Any] = {}

    def add(self, name: str, keyAuthorization: str) -> None:
        self._contexts[name.lower()] = validationContext(name, keyAuthorization)

    def remove(self, name: str) -> None:
        self._contexts.pop(name.lower(), None)

    def select(self, connection: Any, protocols: list[bytes]) -> bytes:
        """The ALPN callback of every served context."""
        if ACME_TLS_1 in protocols:
            name = (connection.get_servername() or b"").decode("ascii", "replace")
            context = self._contexts.get(name.lower())
            if context is not None:
                connection.set_context(context)
                return ACME_TLS_1
        return SSL.NO_OVERLAPPING_PROTOCOLS
