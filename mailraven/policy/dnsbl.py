"""DNS blocklists (RFC 5782) on twisted.names, without blocking anything.

Lookups for every zone start when a client connects and are awaited at RCPT;
the whole check has a budget after which it fails open. Positive and negative
answers are cached for their TTL. Answers in 127.255.255.0/24 are Spamhaus'
"query refused / public resolver" codes: a zone error, never a listing (the
bug that makes other servers refuse all mail behind public resolvers). Zones
are health-checked (127.0.0.2 must be listed, 127.0.0.1 must not); an
unhealthy zone is skipped and reported.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import (
    Deferred,
    DeferredList,
    TimeoutError,
    inlineCallbacks,
    succeed,
)
from twisted.logger import Logger
from twisted.names import client, dns, error

DEFAULT_LISTED = ("127.0.0.2", "127.0.0.11")
NEGATIVE_TTL = 300
CACHE_LIMIT = 100_000
ERROR_NET = ipaddress.ip_network("127.255.255.0/24")


@dataclass(frozen=True)
class Zone:
    """One DNSBL: name, what counts as listed, and what a listing does."""

    name: str
    reject: bool = True
    weight: float = 0.0
    first: str = DEFAULT_LISTED[0]
    last: str = DEFAULT_LISTED[1]

    def counts(self, address: str) -> bool:
        value = ipaddress.ip_address(address)
        return (
            ipaddress.ip_address(self.first) <= value <= ipaddress.ip_address(self.last)
        )


def parseZone(spec: str) -> Zone:
    """C{ZONE[:reject|:score=N][:FIRST-LAST]}, e.g. C{bl.example:score=3}."""
    parts = spec.strip().split(":")
    name = parts[0].strip(".").lower()
    if not name or "." not in name:
        raise ValueError(f"bad DNSBL zone {spec!r}")
    reject, weight, first, last = True, 0.0, *DEFAULT_LISTED
    for part in parts[1:]:
        if part == "reject":
            reject = True
        elif part.startswith("score="):
            reject, weight = False, float(part[6:])
        elif "-" in part:
            first, last = part.split("-", 1)
            ipaddress.ip_address(first), ipaddress.ip_address(last)
        else:
            raise ValueError(f"bad DNSBL zone option {part!r} in {spec!r}")
    return Zone(name, reject, weight, first, last)


def queryName(ip: str, zone: str) -> str:
    """RFC 5782: reversed octets for IPv4, reversed nibbles for IPv6."""
    address = ipaddress.ip_address(ip)
    if address.version == 4:
        labels = str(address).split(".")[::-1]
    else:
        labels = list(address.exploded.replace(":", ""))[::-1]
    return ".".join(labels) + "." + zone


@dataclass
class Listing:
    zone: Zone
    codes: list[str]
    reason: str


@dataclass
class Verdict:
    """What the DNSBL check says about one client."""

    listings: list[Listing] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    timedOut: bool = False

    @property
    def rejecting(self) -> Listing | None:
        return next((item for item in self.listings if item.zone.reject), None)

    @property
    def score(self) -> float:
        return sum(item.zone.weight for item in self.listings if not item.zone.reject)


class DNSBLChecker:
    log = Logger()

    def __init__(
        self,
        zones: list[Zone],
        resolver: Any,
        clock: Any,
        budget: float = 0.5,
        metrics: Any = None,
        queryTimeout: tuple[float, ...] | None = None,
    ) -> None:
        self.zones = zones
        self._queryTimeout = queryTimeout  # one try: the budget decides anyway
        self._resolver = resolver
        self._clock = clock
        self._budget = budget
        self._metrics = metrics
        self._cache: dict[tuple[str, str], tuple[float, Listing | None]] = {}
        self.healthy: dict[str, bool] = {zone.name: True for zone in zones}

    @classmethod
    def forServers(
        cls,
        zones: list[Zone],
        servers: list[tuple[str, int]],
        timeout: float,
        clock: Any,
        budget: float,
        metrics: Any = None,
    ) -> DNSBLChecker:
        kwargs: dict[str, Any] = {"timeout": (timeout,)}
        if servers:
            kwargs["servers"] = servers
        else:
            kwargs["resolv"] = "/etc/resolv.conf"
        return cls(zones, client.Resolver(**kwargs), clock, budget, metrics)

    def check(self, ip: str) -> Deferred:
        """Deferred[Verdict] within the budget, whatever the nameservers do."""
        zones = [zone for zone in self.zones if self.healthy[zone.name]]
        if not zones:
            return succeed(Verdict())
        verdict = Verdict()
        done: Deferred = Deferred()
        lookups = [self._lookup(zone, ip, verdict) for zone in zones]
        gathered = DeferredList(lookups, consumeErrors=True)
        timer = self._clock.callLater(
            self._budget, self._expire, done, verdict, gathered
        )
        gathered.addCallback(lambda _: self._finish(done, verdict, timer))
        return done

    def _expire(self, done: Deferred, verdict: Verdict, gathered: Deferred) -> None:
        if not done.called:
            verdict.timedOut = True
            self.log.warn("DNSBL budget spent, failing open", event="dnsbl_timeout")
            self._count("all", "timeout")
            done.callback(verdict)

    def _finish(self, done: Deferred, verdict: Verdict, timer: Any) -> None:
        if timer.active():
            timer.cancel()
        if not done.called:
            done.callback(verdict)

    @inlineCallbacks
    def _lookup(self, zone: Zone, ip: str, verdict: Verdict):
        key = (zone.name, ip)
        cached = self._cache.get(key)
        now = self._clock.seconds()
        if cached is not None and cached[0] > now:
            if cached[1] is not None:
                verdict.listings.append(cached[1])
            self._count(zone.name, "cached")
            return
        started = time.monotonic()
        try:
            listing, ttl = yield self._query(zone, queryName(ip, zone.name))
        except ZoneError as e:
            verdict.errors.append(f"{zone.name}: {e}")
            self._count(zone.name, "zone_error")
            self.log.warn(
                "DNSBL {zone} answered an error code: {error}",
                zone=zone.name,
                error=str(e),
                event="dnsbl_zone_error",
            )
            return
        except (error.DNSQueryTimeoutError, TimeoutError, error.DomainError) as e:
            verdict.errors.append(f"{zone.name}: {e.__class__.__name__}")
            self._count(zone.name, "error")
            return
        finally:
            if self._metrics is not None:
                self._metrics.dnsblSeconds.observe(time.monotonic() - started)
        self._remember(key, now + ttl, listing)
        self._count(zone.name, "listed" if listing else "clean")
        if listing is not None:
            verdict.listings.append(listing)

    @inlineCallbacks
    def _query(self, zone: Zone, name: str):
        """(Listing or None, ttl); raises ZoneError for 127.255.255.x answers."""
        try:
            answers, authority, _ = yield self._resolver.lookupAddress(
                name, self._queryTimeout
            )
        except error.DNSNameError:
            return None, NEGATIVE_TTL
        codes = [r.payload.dottedQuad() for r in answers if r.type == dns.A]
        if not codes:
            return None, NEGATIVE_TTL
        if any(ipaddress.ip_address(code) in ERROR_NET for code in codes):
            raise ZoneError(f"refused ({', '.join(codes)})")
        ttl = min(r.ttl for r in answers if r.type == dns.A)
        listed = [code for code in codes if zone.counts(code)]
        if not listed:
            return None, ttl
        try:
            texts, _, _ = yield self._resolver.lookupText(name, self._queryTimeout)
            reason = " ".join(
                b"".join(r.payload.data).decode("utf-8", "replace")
                for r in texts
                if r.type == dns.TXT
            )
        except error.DomainError:
            reason = ""
        return Listing(zone, listed, reason or f"listed by {zone.name}"), ttl

    def _remember(self, key: tuple[str, str], expires: float, value: Any) -> None:
        if len(self._cache) >= CACHE_LIMIT:
            now = self._clock.seconds()
            for stale in [k for k, (e, _) in self._cache.items() if e <= now]:
                del self._cache[stale]
            while len(self._cache) >= CACHE_LIMIT:  # all fresh: drop the oldest
                del self._cache[next(iter(self._cache))]
        self._cache[key] = (expires, value)

    def _count(self, zone: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.dnsblLookups.labels(zone, result).inc()

    @inlineCallbacks
    def checkHealth(self):
        """RFC 5782 section 5: 127.0.0.2 listed, 127.0.0.1 not, else skip the zone."""
        for zone in self.zones:
            try:
                positive, _ = yield self._query(zone, queryName("127.0.0.2", zone.name))
                negative, _ = yield self._query(zone, queryName("127.0.0.1", zone.name))
                healthy = positive is not None and negative is None
            except ZoneError:
                healthy = False  # it refuses us: every answer would be wrong
            except Exception:
                # No answer is an outage, not a wrong zone: lookups keep being
                # tried and the budget / dnsbl.fail_open decide.
                self.log.warn(
                    "DNSBL zone {zone} health check got no answer",
                    zone=zone.name,
                    event="dnsbl_zone_unreachable",
                )
                continue
            if healthy != self.healthy[zone.name]:
                self.log.warn(
                    "DNSBL zone {zone} is now {state}",
                    zone=zone.name,
                    state="healthy" if healthy else "unhealthy",
                    event="dnsbl_zone_health",
                )
            self.healthy[zone.name] = healthy
            if self._metrics is not None:
                self._metrics.dnsblHealthy.labels(zone.name).set(int(healthy))


class ZoneError(Exception):
    """The zone answered with an error code, not a listing."""
