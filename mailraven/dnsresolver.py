"""The server's one DNS resolver: twisted.names behind a TTL-honouring cache.

DNSBL, SPF/DKIM/DMARC, outbound MX and MTA-STS all ask this resolver, so 2,000
messages from one domain make one SPF and one DMARC lookup per TTL, not 2,000.
twisted.names' own L{twisted.names.cache.CacheResolver} is only a store that
a server feeds: it keeps no NXDOMAIN/NODATA answers (RFC 2308), keeps no
bound on its size and sets one timer per entry, hence this small cache.

Concurrent identical questions share one upstream query. Answers are also
readable from another thread (L{CachingResolver.cached}): the mail-auth
threads take cached answers without a round trip through the reactor.
"""

from __future__ import annotations

import errno
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.names import client, common, dns, error
from twisted.python.failure import Failure

CACHE_ENTRIES = 20_000
MAX_TTL = 86_400  # RFC 2181 8 allows more; a day bounds a stale answer
MAX_NEGATIVE_TTL = 3_600  # RFC 2308 5 recommends 1-3 hours at most

Result = tuple[list, list, list]


class QuietDNSDatagramProtocol(dns.DNSDatagramProtocol):
    """One query's UDP protocol, without a "Starting/Stopping protocol" log line."""

    noisy = False


class QuietResolver(client.Resolver):
    """
    L{client.Resolver} binding each query's fresh random UDP port (source port
    randomisation, RFC 5452) with a protocol that does not log.
    """

    def _connectedProtocol(self, interface: str = "") -> Any:
        proto = QuietDNSDatagramProtocol(self, reactor=self._reactor)
        for attempt in range(1000):
            try:
                self._reactor.listenUDP(dns.randomSource(), proto, interface=interface)
            except CannotListenError as e:
                if getattr(e.socketError, "errno", None) == errno.EMFILE:
                    raise
                if attempt == 999:
                    raise
            else:
                return proto


def isQueryPortLine(event: dict) -> bool:
    """
    The two lines twisted.internet.udp logs unconditionally for each DNS
    query's port ("DNSDatagramProtocol starting on N", "(UDP Port N Closed)"):
    40,000 lines for 18,000 messages, dropped by our log observer.
    """
    text = event.get("log_text") or " ".join(map(str, event.get("message", ())))
    if not text:
        return False
    return (
        text.startswith("QuietDNSDatagramProtocol starting on ")
        or text.startswith("(UDP Port ")
        and text.endswith(" Closed)")
    )


def parseNameservers(nameservers: list[str]) -> list[tuple[str, int]]:
    """C{"host:port"} entries (C{"[::1]:53"} for IPv6) as (host, port)."""
    return [
        (host.strip("[]"), int(port))
        for host, _, port in (s.rpartition(":") for s in nameservers)
    ]


def _soaTTL(authority: list) -> int:
    """RFC 2308 5: a negative answer lives min(SOA TTL, SOA MINIMUM); no SOA, 0."""
    for record in authority:
        if record.type == dns.SOA:
            return min(record.ttl, record.payload.minimum, MAX_NEGATIVE_TTL)
    return 0


class CachingResolver(common.ResolverBase):
    """
    An L{twisted.internet.interfaces.IResolver} answering from a bounded cache
    of positive and negative answers, each kept for its TTL (by C{clock}).
    C{upstream} is made on first use (a resolv.conf resolver starts a timer).
    """

    def __init__(
        self,
        upstream: Callable[[], Any],
        clock: Any,
        maxEntries: int = CACHE_ENTRIES,
        metrics: Any = None,
    ) -> None:
        super().__init__()
        self._metrics = metrics
        self._makeUpstream = upstream
        self._upstream: Any = None
        self._clock = clock
        self._maxEntries = maxEntries
        # (name, type, cls) -> (expires, Result | Failure)
        self._entries: dict[tuple[bytes, int, int], tuple[float, Any]] = {}
        self._pending: dict[tuple[bytes, int, int], list[Deferred]] = {}
        self.queries = 0  # sent upstream: what the cache saved shows in metrics

    @property
    def upstream(self) -> Any:
        if self._upstream is None:
            self._upstream = self._makeUpstream()
        return self._upstream

    def close(self) -> None:
        """Stop the upstream's resolv.conf timer (service stop)."""
        call = getattr(self._upstream, "_parseCall", None)
        if call is not None and call.active():
            call.cancel()

    def cached(self, name: str | bytes, type: int, cls: int = dns.IN) -> Any:
        """
        The cached answer: a Result (records as received, TTLs not counted
        down), a Failure (NXDOMAIN), or None when not cached. Safe from any
        thread: it only reads the entry table.
        """
        entry = self._entries.get(_key(name, type, cls))
        if entry is None or entry[0] <= self._clock.seconds():
            return None
        return entry[1]

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred:
        key = _key(name, type, cls)
        entry = self._entries.get(key)
        if entry is not None:
            left = entry[0] - self._clock.seconds()
            if left > 0:
                self._count("cached")
                return _aged(entry[1], int(left))
        d: Deferred = Deferred()
        waiting = self._pending.get(key)
        if waiting is not None:
            self._count("shared")
            waiting.append(d)
            return d
        self._pending[key] = [d]
        self._count("sent")
        self.queries += 1
        asked = self.upstream.query(dns.Query(name, type, cls), timeout)
        asked.addBoth(self._answered, key)
        return d

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.dnsQueries.labels(result).inc()

    def _answered(self, result: Any, key: tuple[bytes, int, int]) -> None:
        ttl = self._ttlOf(result)
        if ttl > 0:
            self._remember(key, self._clock.seconds() + ttl, result)
        for d in self._pending.pop(key, []):
            if d.called:  # cancelled by a caller's deadline
                continue
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def _ttlOf(self, result: Any) -> int:
        if isinstance(result, Failure):
            if not result.check(error.DNSNameError):
                return 0  # timeouts and SERVFAIL: ask again next time
            message = result.value.args[0] if result.value.args else None
            return _soaTTL(getattr(message, "authority", []))
        answers, authority, _ = result
        if not answers:
            return _soaTTL(authority)  # NODATA
        return min(min(r.ttl for r in answers), MAX_TTL)

    def _remember(self, key: tuple[bytes, int, int], expires: float, value: Any):
        entries = self._entries
        if len(entries) >= self._maxEntries:
            now = self._clock.seconds()
            for stale in [k for k, (e, _) in entries.items() if e <= now]:
                del entries[stale]
            while len(entries) >= self._maxEntries:  # all fresh: the oldest go
                del entries[next(iter(entries))]
        if isinstance(value, Failure):
            value.cleanFailure()  # keep no frames alive in the cache
        entries.pop(key, None)
        entries[key] = (expires, value)

    def __len__(self) -> int:
        return len(self._entries)


def _aged(value: Any, left: int) -> Deferred:
    """A cached value as a lookup's result: TTLs count down (RFC 1035 6.1)."""
    if isinstance(value, Failure):
        return fail(value)
    return succeed(
        tuple(
            [
                dns.RRHeader(r.name.name, r.type, r.cls, left, r.payload, r.auth)
                for r in section
            ]
            for section in value
        )
    )


def _key(name: str | bytes, type: int, cls: int) -> tuple[bytes, int, int]:
    if isinstance(name, str):
        name = name.encode("ascii", "replace")
    return (name.lower().rstrip(b"."), type, cls)


def makeResolver(
    nameservers: list[str], timeout: float, clock: Any, metrics: Any = None
) -> CachingResolver:
    """
    The server's resolver on C{dns.nameservers} (or resolv.conf). Each query
    is tried after C{timeout}, 3x and 6x that: callers with a deadline (DNSBL,
    mail-auth budgets) stop waiting earlier.
    """

    def upstream() -> QuietResolver:
        kwargs: dict[str, Any] = {
            "timeout": (timeout, timeout * 3, timeout * 6),
            "reactor": clock,
        }
        servers = parseNameservers(nameservers)
        if servers:
            kwargs["servers"] = servers
        else:
            kwargs["resolv"] = "/etc/resolv.conf"
        return QuietResolver(**kwargs)

    return CachingResolver(upstream, clock, metrics=metrics)


class ResolverService(Service):
    """Holds the server's resolver; stopping it stops the resolv.conf timer."""

    def __init__(self, resolver: CachingResolver) -> None:
        self.resolver = resolver

    def stopService(self) -> None:
        super().stopService()
        self.resolver.close()
