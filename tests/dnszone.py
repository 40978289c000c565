"""An in-process authoritative DNS server (twisted.names) for tests: MX, A and
TXT records of test domains, on a loopback UDP port."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.names import common, dns, error, server


def _payload(kind: int, value: object):
    if kind == dns.A:
        return dns.Record_A(value, ttl=60)
    if kind == dns.MX:
        preference, host = value
        return dns.Record_MX(preference, host.encode(), ttl=60)
    if kind == dns.TXT:
        text = value.encode() if isinstance(value, str) else value
        # long TXT values (DKIM keys) go as several 255-byte strings
        return dns.Record_TXT(*[text[i : i + 255] for i in range(0, len(text), 255)])
    raise ValueError(kind)


class Zone(common.ResolverBase):
    """name -> [(type, value)]; an unknown name is NXDOMAIN."""

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
    factory = server.DNSServerFactory(authorities=[zone])
    port = reactor.listenUDP(
        0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1"
    )
    testCase.addCleanup(port.stopListening)
    return port.getHost().port
