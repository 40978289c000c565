"""A listener per endpoint string, remembering whether it came up.

Two prefixes wrap the endpoint: C{tls:} (implicit TLS with the server's
SNI-aware certificates: submission on 465, HTTPS) and C{haproxy:} (a PROXY
header first). Both may be combined as C{haproxy:tls:tcp:465}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailraven.proxyprotocol import wrapForProxy

TLS_PREFIX = "tls:"


class ListenerError(Exception):
    """A listener description that cannot work (e.g. C{tls:} without TLS)."""


def wrap(description: str, factory: Any, tlsCreator: Any) -> tuple[str, Any]:
    """(endpoint description, factory) with the C{haproxy:}/C{tls:} layers."""
    proxied = description.startswith("haproxy:")
    if proxied:
        description = description[len("haproxy:") :]
    if description.startswith(TLS_PREFIX):
        if tlsCreator is None:
            raise ListenerError(f"{description}: TLS is not available here")
        description = description[len(TLS_PREFIX) :]
        factory = TLSMemoryBIOFactory(tlsCreator, False, factory)
    if proxied:
        description, factory = wrapForProxy("haproxy:" + description, factory)
    return description, factory


class Listener(Service):
    """
    Listens on C{description} (e.g. C{tcp:2525}) when started. Listening
    happens in C{privilegedStartService} so C{twistd --uid} can bind low ports.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        description: str,
        factory: Any,
        onFailure: Callable[[str], None] | None = None,
        tlsCreator: Any = None,
    ) -> None:
        self._reactor = reactor
        self._tlsCreator = tlsCreator
        self._onFailure = onFailure
        self.description = description
        self.factory = factory
        self.port: Any = None
        self.error: str | None = None
        self._listening: Deferred | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        description, factory = wrap(self.description, self.factory, self._tlsCreator)
        endpoint = serverFromString(self._reactor, description)
        self._listening = endpoint.listen(factory)
        self._listening.addCallbacks(self._listened, self._failed)

    def _listened(self, port: Any) -> None:
        self.port = port
        self.log.info(
            "listening on {desc} ({address})",
            desc=self.description,
            address=str(port.getHost()),
            event="listening",
        )

    def _failed(self, failure: Any) -> None:
        self.error = failure.getErrorMessage()
        self.log.critical(
            "cannot listen on {desc}: {error}",
            desc=self.description,
            error=self.error,
            event="listen_failed",
        )
        if self._onFailure is not None:
            self._onFailure(f"cannot listen on {self.description}: {self.error}")

    @property
    def up(self) -> bool:
        return self.port is not None

    @property
    def address(self) -> Any:
        return self.port.getHost() if self.port is not None else None

    @inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._listening is not None and not self._listening.called:
            self._listening.cancel()
        if self.port is not None:
            port, self.port = self.port, None
            yield port.stopListening()
