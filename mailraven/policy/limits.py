"""Per-client limits of the SMTP listener, and the allowlist that skips the rates.

Token buckets (L{mailraven.ratelimit.TokenBuckets}) for new connections per IP
and per subnet (/24 IPv4, /64 IPv6), messages and recipients per IP; a counter
of concurrent connections per IP. All bounded in memory and pruned by a timer.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

from mailraven.ratelimit import TokenBuckets


def subnetOf(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class ClientLimits:
    def __init__(
        self,
        clock: Any,
        connectionsPerIP: int = 60,
        connectionsPerSubnet: int = 200,
        concurrentPerIP: int = 50,
        messagesPerIP: int = 120,
        recipientsPerIP: int = 600,
        allowlist: list[str] = (),
        metrics: Any = None,
        period: float = 60.0,
    ) -> None:
        self._connections = TokenBuckets(connectionsPerIP, period, clock)
        self._subnets = TokenBuckets(connectionsPerSubnet, period, clock)
        self._messages = TokenBuckets(messagesPerIP, period, clock)
        self._recipients = TokenBuckets(recipientsPerIP, period, clock)
        self._concurrentLimit = concurrentPerIP
        self.concurrent: Counter[str] = Counter()
        self._allow = [ipaddress.ip_network(net, strict=False) for net in allowlist]
        self._metrics = metrics

    def allowlisted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in self._allow)

    def _hit(self, limit: str) -> str:
        if self._metrics is not None:
            self._metrics.ratelimitHits.labels(limit).inc()
        return limit

    def connect(self, ip: str, rates: bool = True) -> str | None:
        """
        The limit a new connection from C{ip} breaks, or None (then counted).
        The concurrent bound applies to every peer; C{rates=False} (an
        allowlisted peer) skips the per-minute rates.
        """
        if self.concurrent[ip] >= self._concurrentLimit:
            return self._hit("concurrent_per_ip")
        if rates and self._connections.take(ip):
            return self._hit("connections_per_ip")
        if rates and self._subnets.take(subnetOf(ip)):
            return self._hit("connections_per_subnet")
        self.concurrent[ip] += 1
        return None

    def disconnect(self, ip: str) -> None:
        self.concurrent[ip] -= 1
        if self.concurrent[ip] <= 0:
            del self.concurrent[ip]

    def message(self, ip: str) -> bool:
        if self._messages.take(ip):
            self._hit("messages_per_ip")
            return False
        return True

    def recipient(self, ip: str) -> bool:
        if self._recipients.take(ip):
            self._hit("recipients_per_ip")
            return False
        return True

    def prune(self) -> None:
        for buckets in (
            self._connections,
            self._subnets,
            self._messages,
            self._recipients,
        ):
            buckets.prune()

    def size(self) -> int:
        return sum(
            len(b)
            for b in (
                self._connections,
                self._subnets,
                self._messages,
                self._recipients,
            )
        )
