"""Real TLS clients (Python's ssl) asking for a name by SNI. Blocking: run
them in a thread while the server under test runs on the reactor."""

from __future__ import annotations

import smtplib
import socket
import ssl

from cryptography import x509


def _context(cafile: str | None) -> ssl.SSLContext:
    if cafile is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=cafile)


def _leaf(sock: ssl.SSLSocket) -> x509.Certificate:
    assert sock.version() in ("TLSv1.2", "TLSv1.3"), sock.version()
    return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))


class _SNISMTP(smtplib.SMTP):
    """smtplib sends the connect host as SNI; this one sends C{serverName}."""

    def __init__(self, port: int, serverName: str | None) -> None:
        self._serverName = serverName
        super().__init__("127.0.0.1", port, timeout=20)

    def starttls(self, context: ssl.SSLContext) -> None:  # type: ignore[override]
        code, reply = self.docmd("STARTTLS")
        if code != 220:
            raise smtplib.SMTPResponseException(code, reply)
        self.sock = context.wrap_socket(self.sock, server_hostname=self._serverName)
        self.file = None


def starttlsCertificate(
    port: int, serverName: str | None, cafile: str | None = None
) -> x509.Certificate:
    """SMTP STARTTLS with SNI C{serverName}; verified against C{cafile} if given."""
    with _SNISMTP(port, serverName) as client:
        client.ehlo("client.example.org")
        client.starttls(_context(cafile))
        leaf = _leaf(client.sock)
        client.ehlo("client.example.org")
    return leaf


def httpsCertificate(
    port: int, serverName: str | None, cafile: str | None = None
) -> x509.Certificate:
    """An HTTPS GET /health with SNI C{serverName}; verified if C{cafile}."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    with _context(cafile).wrap_socket(raw, server_hostname=serverName) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
            % (serverName or "localhost").encode()
        )
        reply = sock.recv(64)
        assert reply.startswith(b"HTTP/1.1 "), reply
        return _leaf(sock)


def dnsNames(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.DNSName)
