"""TLS for STARTTLS: the operator's certificate, else a self-signed one made once.

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
from OpenSSL import crypto
from twisted.internet import ssl

SELF_SIGNED_CERT = "selfsigned.crt"
SELF_SIGNED_KEY = "selfsigned.key"


def writePrivate(path: str, data: bytes) -> None:
    """Write a secret: created 0600 before a byte is written, replaced atomically."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def ensureSelfSigned(certDir: str, hostname: str) -> tuple[str, str]:
    """Paths of the self-signed certificate and key, created on first use."""
    os.makedirs(certDir, mode=0o700, exist_ok=True)
    os.chmod(certDir, 0o700)
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


def contextFactory(certFile: str, keyFile: str) -> ssl.CertificateOptions:
    """Server options: TLS 1.2 or newer, the chain in C{certFile} sent along."""
    with open(certFile, "rb") as f:
        chainPEM = f.read()
    with open(keyFile, "rb") as f:
        keyPEM = f.read()
    certs = [
        crypto.X509.from_cryptography(c)
        for c in x509.load_pem_x509_certificates(chainPEM)
    ]
    key = crypto.PKey.from_cryptography_key(
        serialization.load_pem_private_key(keyPEM, password=None)
    )
    return ssl.CertificateOptions(
        privateKey=key,
        certificate=certs[0],
        extraCertChain=certs[1:],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def serverContext(config, dataDir: str) -> ssl.CertificateOptions:
    certFile, keyFile = config["tls.cert_file"], config["tls.key_file"]
    if not certFile:
        certFile, keyFile = ensureSelfSigned(
            os.path.join(dataDir, "certs"), config["server.hostname"]
        )
    return contextFactory(certFile, keyFile)
