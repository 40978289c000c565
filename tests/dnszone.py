"""An in-process authoritative DNS server (twisted.names) for tests: MX, A and
TXT records of test domains, on a loopback UDP port. It counts the questions
it is asked, can answer late, and can give negative answers an SOA record
(RFC 2308) so a resolver may cache them."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.internet.task import deferLater
from twisted.names import common, dns, error, server


def _payload(kind: int, value: object):
    if kind == dns.A:
        return dns.Record_A(value, ttl=60)
    if kind == dns.AAAA:
        return dns.Record_AAAA(value, ttl=60)
    if kind == dns.MX:
        preference, host = value
        return dns.Record_MX(preference, host.encode(), ttl=60)
    if kind == dns.TXT:
        text = value.encode() if isinstance(value, str) else value
        # long TXT values (DKIM keys) go as several 255-byte strings
        return dns.Record_TXT(*[text[i : i + 255] for i in range(0, len(text), 255)])
    raise ValueError(kind)


SERVFAIL = object()  # a record value: this name and type answer SERVFAIL


class ServerFailure(Exception):
    """Raised by a zone for a L{SERVFAIL} entry; the server answers SERVFAIL."""


class NoSuchName(error.DomainError):
    """NXDOMAIN, with the authority section to send along (an SOA or nothing)."""

    def __init__(self, name: str, authority: list) -> None:
        super().__init__(name)
        self.authority = authority


class Zone(common.ResolverBase):
    """
    name -> [(type, value)]; an unknown name is NXDOMAIN, a known name
    without records of the type asked is NODATA, a L{SERVFAIL} value fails
    with SERVFAIL. C{soa}
    (ttl, minimum) puts an SOA into negative answers; C{delay} seconds pass
    before each answer; C{asked} lists every (name, type) asked.
    """

    def __init__(
        self,
        records: dict[str, list[tuple[int, object]]],
        soa: tuple[int, int] | None = None,
        delay: float = 0,
    ) -> None:
        super().__init__()
        self.records = {k.lower(): v for k, v in records.items()}
        self.soa = soa
        self.delay = delay
        self.asked: list[tuple[str, int]] = []

    def _authority(self, name: str) -> list:
        if self.soa is None:
            return []
        ttl, minimum = self.soa
        record = dns.Record_SOA(
            mname=b"ns.test", rname=b"hostmaster.test", minimum=minimum, ttl=ttl
        )
        return [dns.RRHeader(name=name, type=dns.SOA, ttl=ttl, payload=record)]

    def add(self, name: str, kind: int, value: object) -> None:
        self.records.setdefault(name.lower(), []).append((kind, value))

    def _lookup(self, name, cls, type, timeout):
        name = (name.decode() if isinstance(name, bytes) else name).lower()
        self.asked.append((name, type))
        if self.delay:
            return deferLater(reactor, self.delay, self._answer, name, type)
        return self._answer(name, type)

    def _answer(self, name: str, type: int):
        entries = self.records.get(name)
        if entries is None:
            return fail(NoSuchName(name, self._authority(name)))
        if (type, SERVFAIL) in entries:
            return fail(ServerFailure(name))
        answers = [
            dns.RRHeader(name=name, type=kind, ttl=60, payload=_payload(kind, value))
            for kind, value in entries
            if kind == type
        ]
        return succeed((answers, [] if answers else self._authority(name), []))

    def txt(self, name: str) -> bytes | None:
        """The TXT record of C{name} as one string (what a verifier reads)."""
        for kind, value in self.records.get(name.lower(), []):
            if kind == dns.TXT:
                return value.encode() if isinstance(value, str) else value
        return None


class ZoneServer(server.DNSServerFactory):
    """Sends the SOA of an NXDOMAIN answer, which the stock factory drops,
    and SERVFAIL for a L{SERVFAIL} entry."""

    noisy = False

    def gotResolverError(self, failure, protocol, message, address):
        if failure.check(ServerFailure):
            response = self._responseFromMessage(message=message, rCode=dns.ESERVER)
            return self.sendReply(protocol, response, address)
        if not failure.check(NoSuchName):
            return super().gotResolverError(failure, protocol, message, address)
        response = self._responseFromMessage(
            message=message, rCode=dns.ENAME, authority=failure.value.authority
        )
        self.sendReply(protocol, response, address)


def serveZone(testCase, zone: Zone) -> int:
    """Listen on a loopback UDP port for the test's duration; the port."""
    factory = ZoneServer(authorities=[zone])
    port = reactor.listenUDP(
        0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1"
    )
    testCase.addCleanup(port.stopListening)
    return port.getHost().port
