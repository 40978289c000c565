"""PROXY protocol (v1/v2) listeners whose protocols start after the header.

Twisted's HAProxyProtocolWrapper starts the wrapped protocol as soon as the TCP
connection opens, before the PROXY header has arrived, so an SMTP server (which
speaks first and decides on the client's address in connectionMade) would see
the load balancer's address. This wrapper holds the wrapped protocol back until
the header is parsed. Listener strings `haproxy:tcp:25` use it.
"""

from __future__ import annotations

from typing import Any

from twisted.protocols.haproxy._wrapper import (
    HAProxyProtocolWrapper,
    HAProxyWrappingFactory,
)

PREFIX = "haproxy:"


class _Held:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)


class HeaderFirstWrapper(HAProxyProtocolWrapper):
    _started = False

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection without starting the wrapped protocol
        from zope.interface import directlyProvides, providedBy

        directlyProvides(self, providedBy(transport))
        self.connected = 1
        self.transport = transport
        self.connectionMade()
        self.factory.registerProtocol(self)

    def dataReceived(self, data: bytes) -> None:
        if self._started:
            self.wrappedProtocol.dataReceived(data)
            return
        wrapped, held = self.wrappedProtocol, _Held()
        self.wrappedProtocol = held
        try:
            super().dataReceived(data)
        finally:
            self.wrappedProtocol = wrapped
        if self._proxyInfo is not None and self.connected and not self.disconnecting:
            self._started = True
            wrapped.makeConnection(self)
            for chunk in held.chunks:
                wrapped.dataReceived(chunk)

    def connectionLost(self, reason: Any) -> None:
        if self._started:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)


class HeaderFirstFactory(HAProxyWrappingFactory):
    protocol = HeaderFirstWrapper


def wrapForProxy(description: str, factory: Any) -> tuple[str, Any]:
    """(endpoint description, factory) with PROXY support when asked for."""
    if description.startswith(PREFIX):
        return description[len(PREFIX) :], HeaderFirstFactory(factory)
    return description, factory
