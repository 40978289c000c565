"""Where mail for a domain goes (RFC 5321 5.1) using twisted.names.

MX records by preference, each host's A and AAAA records; no MX at all means
the domain itself (implicit MX); a single "." MX is a null MX (RFC 7505): the
domain accepts no mail, a permanent failure. So is an answer that there is
nothing (NXDOMAIN, or no A/AAAA records: NODATA); a lookup that got no answer
(SERVFAIL, timeout) is temporary unless another host has an address.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.names import dns, error


class DNSFailure(Exception):
    """Why a domain has no address to try; C{enhanced} is its RFC 3463 status."""

    enhanced = "4.4.3"

    def __init__(self, text: str, enhanced: str | None = None) -> None:
        super().__init__(text)
        if enhanced is not None:
            self.enhanced = enhanced


class PermanentDNSFailure(DNSFailure):
    """The domain cannot receive mail (no such domain, null MX, no address)."""

    enhanced = "5.4.4"


class TemporaryDNSFailure(DNSFailure):
    """DNS did not answer well enough to decide: try again later."""


def describe(failure: BaseException) -> str:
    """A DNS error in words (twisted.names' own str() is a repr of the reply)."""
    for kind, words in _DESCRIPTIONS:
        if isinstance(failure, kind):
            return words
    return failure.__class__.__name__


_DESCRIPTIONS = (
    (error.DNSNameError, "no such domain (NXDOMAIN)"),
    (error.DNSServerError, "DNS server failure (SERVFAIL)"),
    (error.DNSQueryRefusedError, "DNS query refused (REFUSED)"),
    (error.DNSFormatError, "DNS format error (FORMERR)"),
    (error.DNSNotImplementedError, "DNS query not implemented (NOTIMP)"),
    (error.DNSQueryTimeoutError, "DNS timeout"),
    (defer.TimeoutError, "DNS timeout"),
    (error.DNSUnknownError, "unknown DNS error"),
)


class _Lookups:
    """What the address lookups of one domain found and what went wrong."""

    def __init__(self) -> None:
        self.temporary: list[str] = []  # SERVFAIL, timeouts: may work later
        self.missing: list[str] = []  # NXDOMAIN, NODATA: an answer, just empty


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

    def _addressesOf(self, host: str, lookups: _Lookups) -> defer.Deferred:
        """A and AAAA records of one host, asked at once; IPv4 first."""
        queries = [
            self._addressLookup(self.resolver.lookupAddress, dns.A, host, lookups),
            self._addressLookup(
                self.resolver.lookupIPV6Address, dns.AAAA, host, lookups
            ),
        ]
        d = gatherResults(queries, consumeErrors=True)
        return d.addCallback(lambda found: found[0] + found[1])

    @inlineCallbacks
    def _addressLookup(self, lookup: Any, kind: int, host: str, lookups: _Lookups):
        name = dns.QUERY_TYPES[kind]
        try:
            answers, _, _ = yield lookup(host)
        except error.DNSNameError:
            lookups.missing.append(f"{host} {name}: no such domain (NXDOMAIN)")
            return []
        except Exception as e:
            lookups.temporary.append(f"{host} {name}: {describe(e)}")
            return []
        found = [_address(answer) for answer in answers if answer.type == kind]
        if not found:
            lookups.missing.append(f"{host} {name}: no {name} record")
        return found

    def close(self) -> None:
        """Stop the resolver's resolv.conf timer (service stop)."""
        self._closed = True
        call = getattr(self._made, "_parseCall", None)
        if call is not None and call.active():
            call.cancel()

    @inlineCallbacks
    def targets(self, domain: str):
        """
        (MX host, address) pairs to try, best first (Deferred). Fails with
        L{PermanentDNSFailure} when DNS answered that there is nowhere to
        deliver (NXDOMAIN, null MX, no address records: Postfix bounces
        these too), with L{TemporaryDNSFailure} when it did not answer
        (SERVFAIL, timeout) and nothing else was found.
        """
        try:
            answers, _, _ = yield self.resolver.lookupMailExchange(domain)
        except error.DNSNameError:
            raise PermanentDNSFailure(
                f"{domain}: no such domain (NXDOMAIN)", "5.1.2"
            ) from None
        except Exception as e:
            raise TemporaryDNSFailure(
                f"{domain}: MX lookup failed: {describe(e)}"
            ) from None
        exchanges = sorted(
            (a.payload.preference, str(a.payload.name))
            for a in answers
            if a.type == dns.MX
        )
        if len(exchanges) == 1 and exchanges[0][1] in ("", "."):
            # RFC 7505 section 4.2
            raise PermanentDNSFailure(f"{domain}: null MX, accepts no mail", "5.1.10")
        hosts = [name for _, name in exchanges if name not in ("", ".")] or [domain]
        lookups = _Lookups()
        found = yield gatherResults(
            [self._addressesOf(host, lookups) for host in hosts], consumeErrors=True
        )
        addresses: list[tuple[str, str]] = []
        for host, ips in zip(hosts, found, strict=True):
            for ip in ips:
                target = (host.lower().rstrip("."), ip)
                if target not in addresses:
                    addresses.append(target)
        if addresses:
            return addresses
        where = "its MX hosts have" if exchanges else "no MX and"
        if lookups.temporary:
            detail = "; ".join(lookups.temporary)
            raise TemporaryDNSFailure(f"{domain}: {where} no address yet ({detail})")
        detail = "; ".join(lookups.missing)
        raise PermanentDNSFailure(f"{domain}: {where} no address ({detail})")


def _address(answer: Any) -> str:
    if answer.type == dns.A:
        return answer.payload.dottedQuad()
    return socket.inet_ntop(socket.AF_INET6, answer.payload.address)
