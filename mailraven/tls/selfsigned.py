"""The last-resort certificate: self-signed, made once, kept.

STARTTLS must always work (senders prefer encrypted delivery and MTA-STS-less
peers accept any certificate), so without a configured certificate one is
generated in C{data_dir/certs} (directory 0700, key 0600) and kept until the
names it should carry change (a new C{server.hostname} or mail domain).
"""

from __future__ import annotations

import datetime
import os
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mailraven.privatefiles import privateDirectory, writePrivate

SELF_SIGNED_CERT = "selfsigned.crt"
SELF_SIGNED_KEY = "selfsigned.key"


def _names(cert: str) -> list[str] | None:
    """The DNS names in C{cert}'s SAN, or None when it is unreadable."""
    try:
        with open(cert, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    return san.value.get_values_for_type(x509.DNSName)


def ensureSelfSigned(
    certDir: str, hostname: str, otherNames: Sequence[str] = ()
) -> tuple[str, str]:
    """
    Paths of the self-signed certificate and key for C{hostname} and
    C{otherNames} (the MTA-STS policy hosts), made when missing or when
    those names changed.
    """
    privateDirectory(certDir)
    cert = os.path.join(certDir, SELF_SIGNED_CERT)
    key = os.path.join(certDir, SELF_SIGNED_KEY)
    names = list(dict.fromkeys([hostname, *otherNames]))
    if os.path.exists(key) and _names(cert) == names:
        return cert, key
    privateKey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(privateKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False
        )
        .sign(privateKey, hashes.SHA256())
    )
    writePrivate(
        key,
        privateKey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    writePrivate(cert, certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key
