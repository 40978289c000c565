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
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

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


def checkDescription(description: str) -> None:
    """
    Raise C{ValueError} saying what is wrong when C{description} cannot be
    an endpoint, so a typo stops start-up naming its key instead of a
    traceback from inside twistd. Nothing is bound (no reactor is used).
    """
    rest = description.removeprefix("haproxy:").removeprefix(TLS_PREFIX)
    try:
        endpoint = serverFromString(None, rest)
    except Exception as e:  # parsers raise ValueError, TypeError, OSError...
        raise ValueError(f"{description!r} is not an endpoint: {e}") from None
    port = getattr(endpoint, "_port", 0)
    if not 0 <= port <= 65535:
        raise ValueError(f"{description!r}: port {port} is out of range")


def reason(failure: Any) -> str:
    """Why listening failed, in words (not Twisted's repr of the socket error)."""
    error = failure.value
    if isinstance(error, CannotListenError) and error.socketError is not None:
        cause = error.socketError
        words = getattr(cause, "strerror", None) or str(cause)
        return words[:1].lower() + words[1:]
    return failure.getErrorMessage()


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
        key: str = "",
    ) -> None:
        """C{key}: the configuration key of C{description}, named on failure."""
        self._reactor = reactor
        self.key = key
        self._tlsCreator = tlsCreator
        self._onFailure = onFailure
        self.description = description
        self.factory = factory
        self.port: Any = None
        self.error: str | None = None
        self._listening: Deferred | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        try:
            description, factory = wrap(
                self.description, self.factory, self._tlsCreator
            )
            endpoint = serverFromString(self._reactor, description)
        except (ListenerError, ValueError, TypeError) as e:
            self._failed(Failure(e))
            return
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
        self.error = reason(failure)
        self.log.critical(
            "{key}cannot listen on {desc}: {error}",
            key=f"{self.key}: " if self.key else "",
            desc=self.description,
            error=self.error,
            event="listen_failed",
        )
        if self._onFailure is not None:
            prefix = f"{self.key}: " if self.key else ""
            self._onFailure(
                f"{prefix}cannot listen on {self.description}: {self.error}"
            )

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
