"""Where outbound mail goes, against a real twisted.names server: which DNS
answers are permanent (bounce now) and which are temporary (retry)."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.names import client, dns
from twisted.trial.unittest import TestCase

from mailraven.outbound.mx import (
    MXResolver,
    PermanentDNSFailure,
    TemporaryDNSFailure,
)
from tests.dnszone import SERVFAIL, Zone, serveZone


def testZone() -> Zone:
    return Zone(
        {
            "nodata.example": [(dns.TXT, "v=spf1 -all")],
            "servfail.example": [(dns.TXT, "x"), (dns.A, SERVFAIL)],
            "mxservfail.example": [(dns.MX, SERVFAIL)],
            "nullmx.example": [(dns.MX, (0, "."))],
            "implicit.example": [(dns.A, "192.0.2.7")],
            "v6only.example": [(dns.AAAA, "2001:db8::25")],
            "mx.example": [
                (dns.MX, (20, "b.mx.example")),
                (dns.MX, (10, "a.mx.example")),
            ],
            "a.mx.example": [(dns.A, "192.0.2.1")],
            "b.mx.example": [(dns.A, "192.0.2.2"), (dns.AAAA, "2001:db8::2")],
            "deadmx.example": [(dns.MX, (10, "gone.example"))],
            "flakymx.example": [(dns.MX, (10, "flaky.mx.example"))],
            "flaky.mx.example": [(dns.A, SERVFAIL), (dns.TXT, "x")],
            "halfmx.example": [
                (dns.MX, (10, "flaky.mx.example")),
                (dns.MX, (20, "a.mx.example")),
            ],
        }
    )


class Silent(DatagramProtocol):
    """A DNS server that never answers."""

    def datagramReceived(self, data, addr):
        pass


class MXOutcomeTests(TestCase):
    timeout = 20

    def setUp(self):
        port = serveZone(self, testZone())
        self.mx = MXResolver(
            client.Resolver(servers=[("127.0.0.1", port)], timeout=(2,))
        )

    @inlineCallbacks
    def failure(self, domain: str, kind: type) -> str:
        failure = yield self.assertFailure(self.mx.targets(domain), kind)
        text = str(failure)
        self.assertNotIn("<Message", text)  # no reprs of DNS replies
        return failure

    @inlineCallbacks
    def test_nxdomainIsPermanent(self):
        failure = yield self.failure("nxdomain.example", PermanentDNSFailure)
        self.assertEqual(failure.enhanced, "5.1.2")
        self.assertIn("NXDOMAIN", str(failure))

    @inlineCallbacks
    def test_noMXAndNoAddressIsPermanent(self):
        # Postfix: "Host or domain name not found" and the mail bounces
        failure = yield self.failure("nodata.example", PermanentDNSFailure)
        self.assertEqual(failure.enhanced, "5.4.4")
        self.assertIn("no A record", str(failure))
        self.assertIn("no AAAA record", str(failure))

    @inlineCallbacks
    def test_servfailOnTheImplicitMXIsTemporary(self):
        failure = yield self.failure("servfail.example", TemporaryDNSFailure)
        self.assertIn("SERVFAIL", str(failure))
        self.assertEqual(failure.enhanced, "4.4.3")

    @inlineCallbacks
    def test_servfailOnTheMXLookupIsTemporary(self):
        failure = yield self.failure("mxservfail.example", TemporaryDNSFailure)
        self.assertIn("MX lookup failed: DNS server failure (SERVFAIL)", str(failure))

    @inlineCallbacks
    def test_nullMXIsPermanent(self):
        failure = yield self.failure("nullmx.example", PermanentDNSFailure)
        self.assertEqual(failure.enhanced, "5.1.10")

    @inlineCallbacks
    def test_mxHostsThatDoNotExistArePermanent(self):
        yield self.failure("deadmx.example", PermanentDNSFailure)

    @inlineCallbacks
    def test_servfailOnTheOnlyMXHostIsTemporary(self):
        yield self.failure("flakymx.example", TemporaryDNSFailure)

    @inlineCallbacks
    def test_aBrokenMXHostLeavesTheOthers(self):
        self.assertEqual(
            (yield self.mx.targets("halfmx.example")),
            [("a.mx.example", "192.0.2.1")],
        )

    @inlineCallbacks
    def test_implicitMXForIPv4AndIPv6(self):
        self.assertEqual(
            (yield self.mx.targets("implicit.example")),
            [("implicit.example", "192.0.2.7")],
        )
        self.assertEqual(
            (yield self.mx.targets("v6only.example")),
            [("v6only.example", "2001:db8::25")],
        )

    @inlineCallbacks
    def test_mxHostsByPreferenceIPv4First(self):
        self.assertEqual(
            (yield self.mx.targets("mx.example")),
            [
                ("a.mx.example", "192.0.2.1"),
                ("b.mx.example", "192.0.2.2"),
                ("b.mx.example", "2001:db8::2"),
            ],
        )


class MXTimeoutTests(TestCase):
    timeout = 20

    @inlineCallbacks
    def test_noAnswerIsTemporary(self):
        port = reactor.listenUDP(0, Silent(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        mx = MXResolver(
            client.Resolver(
                servers=[("127.0.0.1", port.getHost().port)], timeout=(0.2,)
            )
        )
        failure = yield self.assertFailure(
            mx.targets("example.org"), TemporaryDNSFailure
        )
        self.assertIn("DNS timeout", str(failure))
        self.assertNotIn("<", str(failure))
