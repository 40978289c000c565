"""Where mail for a domain goes (RFC 5321 5.1) using twisted.names.

MX records by preference, each host's A records; no MX at all means the
domain itself (implicit MX); a single "." MX is a null MX (RFC 7505): the
domain accepts no mail, a permanent failure.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.names import dns, error


class PermanentDNSFailure(Exception):
    """The domain cannot receive mail (no such domain, null MX): a 5xx."""


class TemporaryDNSFailure(Exception):
    """DNS did not answer well enough to decide: try again later."""


class MXResolver:
    """C{resolver} is a resolver or a callable making one on first use (a
    resolv.conf resolver re-reads the file every minute: only when needed)."""

    def __init__(self, resolver: Any) -> None:
        self._make = resolver if callable(resolver) else (lambda: resolver)
        self._made: Any = None
        self._closed = False

    @property
    def resolver(self) -> Any:
        if self._made is None:
            self._made = self._make()
            if self._closed:
                self.close()
        return self._made

    @inlineCallbacks
    def _addressesOf(self, host: str, failures: list[str]):
        """A then AAAA records of one MX host (IPv4 first: most MXes have it)."""
        found: list[str] = []
        for lookup, kind in (
            (self.resolver.lookupAddress, dns.A),
            (self.resolver.lookupIPV6Address, dns.AAAA),
        ):
            try:
                answers, _, _ = yield lookup(host)
            except Exception as e:
                failures.append(f"{host}: {e.__class__.__name__}")
                continue
            for answer in answers:
                if answer.type == kind == dns.A:
                    found.append(answer.payload.dottedQuad())
                elif answer.type == kind == dns.AAAA:
                    found.append(
                        socket.inet_ntop(socket.AF_INET6, answer.payload.address)
                    )
        return found

    def close(self) -> None:
        """Stop the resolver's resolv.conf timer (service stop)."""
        self._closed = True
        call = getattr(self._made, "_parseCall", None)
        if call is not None and call.active():
            call.cancel()

    @inlineCallbacks
    def targets(self, domain: str):
        """(MX host, address) pairs to try, best first (Deferred)."""
        try:
            answers, _, _ = yield self.resolver.lookupMailExchange(domain)
        except error.DNSNameError:
            raise PermanentDNSFailure(f"{domain}: no such domain") from None
        except Exception as e:
            raise TemporaryDNSFailure(f"{domain}: MX lookup failed: {e}") from None
        exchanges = sorted(
            (a.payload.preference, str(a.payload.name))
            for a in answers
            if a.type == dns.MX
        )
        if len(exchanges) == 1 and exchanges[0][1] in ("", "."):
            raise PermanentDNSFailure(f"{domain}: null MX, accepts no mail")
        hosts = [name for _, name in exchanges if name not in ("", ".")] or [domain]
        addresses: list[tuple[str, str]] = []
        failures = []
        for host in hosts:
            for ip in (yield self._addressesOf(host, failures)):
                if (host, ip) not in addresses:
                    addresses.append((host.lower().rstrip("."), ip))
        if not addresses:
            detail = "; ".join(failures) or "no addresses"
            if not exchanges and failures:
                raise PermanentDNSFailure(f"{domain}: no MX and no address")
            raise TemporaryDNSFailure(f"{domain}: {detail}")
        return addresses
