"""One SMTP transaction to one remote host, on twisted.mail's client.

Opportunistic STARTTLS (used when offered, certificate not verified: RFC
7435); a host whose TLS handshake fails is tried again in clear, as Postfix
does at its "may" level. Under an enforced MTA-STS policy the caller passes
verifying TLS options instead, and TLS is then required. Each recipient's
reply is reported separately, so a message to several addresses at one
domain can be delivered to some and deferred or refused for others.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.mail import smtp


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ConnectionProblem(Exception):
    """No SMTP answer at all (refused, timeout, TLS): try the next host."""


class TLSProblem(ConnectionProblem):
    """The STARTTLS handshake failed: opportunistic TLS tries again in clear."""


class _Sender(smtp.ESMTPSender):
    """twisted's sender, with dot-stuffing that also holds across chunks, no
    plaintext read-ahead carried into TLS, and the reply to the final dot kept
    (it carries the remote's queue id; twisted reports only RCPT replies)."""

    _lineStart = True

    def sentMail(self, code, resp, numOk, addresses, log) -> None:
        self.factory.finalReply = Reply(code, _decode(resp))
        super().sentMail(code, resp, numOk, addresses, log)

    def esmtpState_starttls(self, code: int, resp: bytes) -> None:
        self.factory.triedTLS = True
        # RFC 3207 4.2, the client's side: bytes that arrived in clear after
        # the 220 must not be read as if TLS protected them (twisted.mail's
        # client would, line by line: a STARTTLS injection).
        self._buffer = b""
        super().esmtpState_starttls(code, resp)

    def transformChunk(self, chunk: bytes) -> bytes:
        self.resetTimeout()
        chunk = chunk.replace(b"\n", b"\r\n")  # the data was made LF-only
        if self._lineStart and chunk.startswith(b"."):
            chunk = b"." + chunk
        self._lineStart = chunk.endswith(b"\n")
        return chunk.replace(b"\r\n.", b"\r\n..")


class _SenderFactory(smtp.ESMTPSenderFactory):
    protocol = _Sender
    triedTLS = False
    useTLS = True
    finalReply: Reply | None = None

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if not self.useTLS:
            protocol.context = None  # twisted would make a default one
        return protocol


def _clientTLS() -> Any:
    return ssl.CertificateOptions(verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)


def send(
    reactor: Any,
    ip: str,
    port: int,
    hostname: str,
    sender: str,
    recipients: list[str],
    message: bytes,
    timeout: float = 300,
    tls: bool = True,
    verified: Any = None,
) -> Deferred:
    """
    Deferred {recipient: L{Reply}}; fails with L{ConnectionProblem} when the
    host never answered in SMTP (the caller tries the next MX). C{verified}:
    TLS options that check the host's certificate, and TLS is then required
    (MTA-STS enforce).
    """
    result: Deferred = Deferred()
    factory = _SenderFactory(
        None,
        None,
        sender,
        recipients,
        io.BytesIO(message.replace(b"\r\n", b"\n")),
        result,
        retries=0,
        timeout=timeout,
        contextFactory=verified or (_clientTLS() if tls else None),
        heloFallback=True,
        requireAuthentication=False,
        requireTransportSecurity=verified is not None,
        hostname=hostname,
    )
    factory.domain = hostname.encode() if isinstance(hostname, str) else hostname
    factory.useTLS = tls
    factory.verifiedTLS = verified is not None
    reactor.connectTCP(ip, port, factory, timeout=min(timeout, 30))
    return result.addCallbacks(
        _accepted, _failed, callbackArgs=(factory,), errbackArgs=(recipients, factory)
    )


def _decode(value: Any) -> str:
    """A reply's text on one line (twisted joins multi-line replies with LF),
    without control characters from the peer."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return "".join(
        " " if c in "\r\n\t" else c
        for c in str(value)
        if c.isprintable() or c in "\r\n\t"
    ).strip()


def _accepted(result: tuple[int, list], factory: Any) -> dict[str, Reply]:
    """Accepted recipients get the reply to the data; refused ones their own."""
    _, addresses = result
    final = factory.finalReply
    replies = {}
    for address, code, text in addresses:
        own = Reply(code, _decode(text))
        replies[_decode(address)] = final if code < 300 and final else own
    return replies


def _failed(failure: Any, recipients: list[str], factory: Any) -> dict[str, Reply]:
    error = failure.value
    if isinstance(error, smtp.SMTPDeliveryError) and error.code not in (-1, None):
        replies = {}
        perAddress = {
            _decode(a): Reply(c, _decode(t)) for a, c, t in (error.addresses or [])
        }
        for rcpt in recipients:
            own = perAddress.get(rcpt)
            if own is not None and own.code >= 400:
                replies[rcpt] = own
            else:
                replies[rcpt] = Reply(error.code, _decode(error.resp))
        return replies
    if isinstance(error, smtp.SMTPClientError) and error.code and error.code >= 400:
        return {rcpt: Reply(error.code, _decode(error.resp)) for rcpt in recipients}
    text = _decode(getattr(error, "resp", None) or error)
    if factory.verifiedTLS:
        raise ConnectionProblem(f"verified TLS required (MTA-STS): {text}")
    if factory.triedTLS:
        raise TLSProblem(f"TLS handshake failed: {text}")
    raise ConnectionProblem(text)
