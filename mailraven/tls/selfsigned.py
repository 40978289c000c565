"""The last-resort certificate: self-signed, made once, kept.

STARTTLS must always work (senders prefer encrypted delivery and MTA-STS-less
peers accept any certificate), so without a configured certificate one is
generated in C{data_dir/certs} (directory 0700, key 0600) and kept.
"""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mailraven.privatefiles import privateDirectory, writePrivate

SELF_SIGNED_CERT = "selfsigned.crt"
SELF_SIGNED_KEY = "selfsigned.key"


def ensureSelfSigned(certDir: str, hostname: str) -> tuple[str, str]:
    """Paths of the self-signed certificate and key, created on first use."""
    privateDirectory(certDir)
    cert = os.path.join(certDir, SELF_SIGNED_CERT)
    key = os.path.join(certDir, SELF_SIGNED_KEY)
    if os.path.exists(cert) and os.path.exists(key):
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
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), False)
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
