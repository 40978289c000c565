"""Which certificate a TLS client gets: operator files, then ACME, then self-signed.

One L{SNIConnectionCreator} serves SMTP STARTTLS, submission (STARTTLS and
implicit TLS) and HTTPS. Certificates are swapped in memory (an ACME renewal,
a changed operator file), so new handshakes pick them up without a restart and
a handshake never reads the disk.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Callable, Sequence

from OpenSSL import SSL
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from mailraven.interfaces import ICertificateManager
from mailraven.tls.alpn import TLSALPN01Responder
from mailraven.tls.certificates import (
    SOURCE_FILE,
    SOURCE_SELF_SIGNED,
    CertificateError,
    ServedCertificate,
    matches,
    readCertificate,
)
from mailraven.tls.selfsigned import ensureSelfSigned

# Below this many days left a certificate makes /health "degraded".
EXPIRY_WARNING = datetime.timedelta(days=7)


def _fileStamp(*paths: str) -> tuple:
    """What changes when an operator replaces a file (even with the same mtime)."""
    stamp = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            return ()
        stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


@implementer(IOpenSSLServerConnectionCreator)
class SNIConnectionCreator:
    """Starts every handshake on the default context; switches on SNI."""

    def __init__(self, manager: CertificateManager) -> None:
        self._manager = manager

    def serverConnectionForTLS(self, tlsProtocol: Any) -> Any:
        return SSL.Connection(self._manager.default().context, None)


@implementer(ICertificateManager)
class CertificateManager(TimerService):
    """
    Holds the served certificates and re-reads the operator's files every
    C{reloadInterval} seconds when they changed (a bad new file is logged and
    the previous certificate kept).
    """

    log = Logger()

    def __init__(
        self,
        certFile: str,
        keyFile: str,
        selfSignedDir: str,
        hostname: str,
        reloadInterval: float = 60,
        metrics: Any = None,
        clock: Any = None,
        blocking: Callable[..., Deferred] = maybeDeferred,
        otherNames: Sequence[str] = (),
    ) -> None:
        super().__init__(reloadInterval, self.reloadFiles)
        self._blocking = blocking
        if clock is not None:
            self.clock = clock
        self._certFile = certFile
        self._keyFile = keyFile
        self._metrics = metrics
        self._operator: ServedCertificate | None = None
        self._operatorStamp: tuple = ()
        self._operatorError: str | None = None
        self._acme: dict[str, ServedCertificate] = {}
        self._acmeOrder: list[str] = []
        self._acmeStatus: Callable[[], list[dict]] = list
        self._selfSigned: ServedCertificate | None = None
        self.alpnChallenges = TLSALPN01Responder()
        if certFile:
            self._operatorStamp = _fileStamp(certFile, keyFile)
            self._setOperator(readCertificate(certFile, keyFile, SOURCE_FILE))
        else:
            cert, key = ensureSelfSigned(selfSignedDir, hostname, otherNames)
            self._selfSigned = self._prepare(
                readCertificate(cert, key, SOURCE_SELF_SIGNED)
            )

    # Sources

    def _prepare(self, certificate: ServedCertificate) -> ServedCertificate:
        certificate.context.set_tlsext_servername_callback(self._onServerName)
        certificate.context.set_alpn_select_callback(self.alpnChallenges.select)
        if self._metrics is not None:
            for name in certificate.names:
                self._metrics.tlsCertExpiry.labels(name).set(
                    certificate.notAfter.timestamp()
                )
        return certificate

    def _setOperator(self, certificate: ServedCertificate) -> None:
        self._operator = self._prepare(certificate)
        self._operatorError = None
        self.log.info(
            "serving certificate for {names} from {path} until {notAfter}",
            names=",".join(certificate.names),
            path=self._certFile,
            notAfter=certificate.notAfter.isoformat(),
            event="tls_certificate_loaded",
        )

    def reloadFiles(self) -> Deferred | None:
        """Re-read the operator's files if they changed (stat and read off the
        reactor thread: C{blocking})."""
        if not self._certFile:
            return None
        d = self._blocking(self._readIfChanged)
        d.addCallback(self._reloaded)
        d.addErrback(lambda f: self.log.failure("certificate reload failed", f))
        return d

    def _readIfChanged(self) -> tuple | None:
        """(stamp, certificate or None, error or None); None when unchanged."""
        stamp = _fileStamp(self._certFile, self._keyFile)
        if stamp == self._operatorStamp:
            return None
        try:
            return (
                stamp,
                readCertificate(self._certFile, self._keyFile, SOURCE_FILE),
                None,
            )
        except CertificateError as e:
            return stamp, None, str(e)

    def _reloaded(self, result: tuple | None) -> None:
        if result is None:
            return
        stamp, certificate, error = result
        self._operatorStamp = stamp
        if error is not None:
            self._operatorError = error
            self.log.error(
                "keeping the previous certificate: {path}: {error}",
                path=self._certFile,
                error=error,
                event="tls_reload_failed",
            )
            return
        self._setOperator(certificate)

    def install(self, key: str, certificate: ServedCertificate) -> None:
        """Serve an ACME certificate under C{key} (its order's first name)."""
        if key not in self._acmeOrder:
            self._acmeOrder.append(key)
        self._acme[key] = self._prepare(certificate)

    def acmeCertificate(self, key: str) -> ServedCertificate | None:
        return self._acme.get(key)

    def setAcmeStatus(self, status: Callable[[], list[dict]]) -> None:
        """Where L{status} finds the ACME orders' errors and next checks."""
        self._acmeStatus = status

    # Choosing

    def _candidates(self) -> list[ServedCertificate]:
        found = [self._operator] if self._operator is not None else []
        found.extend(self._acme[key] for key in self._acmeOrder)
        if self._selfSigned is not None:
            found.append(self._selfSigned)
        return found

    def certificateFor(self, name: str | None) -> ServedCertificate:
        if name:
            name = name.lower().rstrip(".")
            for certificate in self._candidates():
                if any(matches(pattern, name) for pattern in certificate.names):
                    return certificate
        return self.default()

    def default(self) -> ServedCertificate:
        return self._candidates()[0]

    def _onServerName(self, connection: Any) -> None:
        name = connection.get_servername()
        if not name:
            return
        chosen = self.certificateFor(name.decode("ascii", "replace"))
        if chosen.context is not connection.get_context():
            connection.set_context(chosen.context)

    def serverCreator(self) -> SNIConnectionCreator:
        return SNIConnectionCreator(self)

    # Reporting

    def status(self) -> list[dict[str, Any]]:
        entries = []
        if self._operator is not None:
            entries.append(
                {
                    **self._operator.status(),
                    "path": self._certFile,
                    "last_error": self._operatorError,
                }
            )
        entries.extend(self._acmeStatus())
        if self.default() is self._selfSigned:
            entries.append({**self._selfSigned.status(), "last_error": None})
        return entries

    def health(self) -> dict[str, Any]:
        """The C{tls} entry of /health: degraded near expiry or after errors."""
        now = datetime.datetime.now(datetime.UTC)
        certificates = self.status()
        degraded = any(
            entry.get("last_error")
            or (
                entry.get("not_after")
                and datetime.datetime.fromisoformat(entry["not_after"]) - now
                < EXPIRY_WARNING
            )
            for entry in certificates
        )
        return {
            "status": "degraded" if degraded else "ok",
            "certificates": certificates,
        }
