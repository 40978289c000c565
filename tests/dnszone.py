"""An in-process authoritative DNS server (twisted.names) for tests: MX, A and
TXT records of test domains, on a loopback UDP port."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
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


class _ZoneServer(server.DNSServerFactory):
    def gotResolverError(self, failure, protocol, message, address):
        if not failure.check(ServerFailure):
            return super().gotResolverError(failure, protocol, message, address)
        response = self._responseFromMessage(message=message, rCode=dns.ESERVER)
        self.sendReply(protocol, response, address)


class Zone(common.ResolverBase):
    """name -> [(type, value)]; an unknown name is NXDOMAIN, a known name
    without records of the type asked is NODATA, a L{SERVFAIL} value fails."""

    def __init__(self, records: dict[str, list[tuple[int, object]]]) -> None:
        super().__init__()
        self.records = {k.lower(): v for k, v in records.items()}

    def add(self, name: str, kind: int, value: object) -> None:
        self.records.setdefault(name.lower(), []).append((kind, value))

    def _lookup(self, name, cls, type, timeout):
        name = (name.decode() if isinstance(name, bytes) else name).lower()
        entries = self.records.get(name)
        if entries is None:
            return fail(error.DomainError(name))
        if (type, SERVFAIL) in entries:
            return fail(ServerFailure(name))
        answers = [
            dns.RRHeader(name=name, type=kind, ttl=60, payload=_payload(kind, value))
            for kind, value in entries
            if kind == type
        ]
        return succeed((answers, [], []))

    def txt(self, name: str) -> bytes | None:
        """The TXT record of C{name} as one string (what a verifier reads)."""
        for kind, value in self.records.get(name.lower(), []):
            if kind == dns.TXT:
                return value.encode() if isinstance(value, str) else value
        return None


def serveZone(testCase, zone: Zone) -> int:
    """Listen on a loopback UDP port for the test's duration; the port."""
    factory = _ZoneServer(authorities=[zone])
    port = reactor.listenUDP(
        0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1"
    )
    testCase.addCleanup(port.stopListening)
    return port.getHost().port
