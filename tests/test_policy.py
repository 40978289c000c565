"""DNSBL against an in-process twisted.names server, rate limits with real
connections from distinct loopback addresses."""

from __future__ import annotations

import os
import smtplib
import socket

from twisted.internet import reactor
from twisted.internet.defer import fail, inlineCallbacks, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.names import common, dns, error, server
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailraven.metrics import Metrics
from mailraven.policy.dnsbl import DNSBLChecker, parseZone, queryName
from mailraven.policy.limits import ClientLimits
from mailraven.ratelimit import TokenBuckets
from tests.helpers import RunningServer, sleep
from tests.process import cli
from tests.test_mobile_api import APIClient


class ZoneData(common.ResolverBase):
    """An authoritative test zone: name -> list of (type, value)."""

    def __init__(self, records: dict[str, list[tuple[int, object]]]) -> None:
        super().__init__()
        self.records = records

    def _lookup(self, name, cls, type, timeout):
        name = name.decode() if isinstance(name, bytes) else name
        entries = self.records.get(name.lower())
        if entries is None:
            return fail(error.DomainError(name))
        answers = []
        for kind, value in entries:
            if kind != type:
                continue
            payload = (
                dns.Record_A(value, ttl=60)
                if kind == dns.A
                else dns.Record_TXT(value.encode(), ttl=60)
            )
            answers.append(dns.RRHeader(name=name, type=kind, ttl=60, payload=payload))
        return succeed((answers, [], []))


def listed(zone: str, ip: str, code: str = "127.0.0.2", reason: str = "spam source"):
    return {queryName(ip, zone): [(dns.A, code), (dns.TXT, reason)]}


def testZones() -> dict:
    records = {}
    for zone in ("bl.test", "score.test"):
        records.update(listed(zone, "127.0.0.2", reason="RFC 5782 test entry"))
    records.update(
        listed("bl.test", "127.0.0.12", reason="seen spamming at 127.0.0.12")
    )
    records.update(listed("bl.test", "127.0.0.14", reason="allowlisted anyway"))
    records.update(listed("bl.test", "127.0.0.13", code="127.255.255.254"))
    records.update(listed("score.test", "127.0.0.15"))
    records.update(listed("bl.test", "2001:db8::25", reason="v6 spammer"))
    # broken.test fails the health test (127.0.0.2 is not listed) but lists .16
    records.update(listed("broken.test", "127.0.0.16", reason="from a broken zone"))
    return records


class DNSServerMixin:
    def startDNS(self) -> int:
        factory = server.DNSServerFactory(authorities=[ZoneData(testZones())])
        port = reactor.listenUDP(
            0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def startBlackhole(self) -> int:
        port = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port


def session(port: int, source: str, rcpt: str = "alice@example.test"):
    """Blocking: one delivery from C{source}; the reply to RCPT and to the dot."""
    with smtplib.SMTP(
        "127.0.0.1", port, timeout=20, source_address=(source, 0)
    ) as client:
        client.ehlo("c.example.org")
        client.mail("bob@example.org")
        rcptReply = client.rcpt(rcpt)
        if rcptReply[0] != 250:
            return rcptReply, None
        return rcptReply, client.data(b"Subject: hi\r\n\r\nbody\r\n")


class DNSBLSessionTests(DNSServerMixin, TestCase):
    timeout = 60

    @inlineCallbacks
    def startServer(self, zones, nameserverPort, **overrides):
        self.server = RunningServer(
            self,
            dns__nameservers=[f"127.0.0.1:{nameserverPort}"],
            dnsbl__zones=zones,
            ratelimit__allowlist=["127.0.0.14/32"],
            **overrides,
        )
        yield self.server.root.policy.checkZones()
        yield self.server.addUser("alice@example.test")

    def deliverFrom(self, source: str):
        return deferToThread(session, self.server.smtpPort, source)

    @inlineCallbacks
    def test_listedRefusedAtRcptUnlistedAndAllowlistedDeliver(self):
        yield self.startServer(["bl.test", "broken.test"], self.startDNS())
        (code, text), _ = yield self.deliverFrom("127.0.0.12")
        self.assertEqual(code, 554)
        self.assertIn(b"5.7.1", text)
        self.assertIn(b"bl.test", text)
        self.assertIn(b"seen spamming at 127.0.0.12", text)
        for source in ("127.0.0.3", "127.0.0.14", "127.0.0.13", "127.0.0.16"):
            (code, _), (dataCode, _) = yield self.deliverFrom(source)
            self.assertEqual((code, dataCode), (250, 250), source)
        health = self.server.root.policy.health()
        self.assertEqual(
            health["zones"], {"bl.test": "healthy", "broken.test": "unhealthy"}
        )
        self.assertEqual(health["status"], "degraded")
        metrics = self.server.root.metrics
        self.assertEqual(
            metrics.dnsblLookups.labels("bl.test", "zone_error")._value.get(), 1
        )
        self.assertEqual(metrics.smtpRejections.labels("dnsbl")._value.get(), 1)

    @inlineCallbacks
    def test_scoreZoneDoesNotReject(self):
        yield self.startServer(["score.test:score=3"], self.startDNS())
        (code, _), (dataCode, _) = yield self.deliverFrom("127.0.0.15")
        self.assertEqual((code, dataCode), (250, 250))

    @inlineCallbacks
    def test_silentNameserverCostsTheBudgetAndFailsOpen(self):
        yield self.startServer(["bl.test"], self.startBlackhole(), dnsbl__budget=0.3)
        started = reactor.seconds()
        (code, _), (dataCode, _) = yield self.deliverFrom("127.0.0.12")
        self.assertEqual((code, dataCode), (250, 250))
        self.assertLess(reactor.seconds() - started, 3)
        yield sleep(1)  # the unanswered queries time out (dns.timeout) behind us

    @inlineCallbacks
    def test_failClosedIs451(self):
        yield self.startServer(
            ["bl.test"],
            self.startBlackhole(),
            dnsbl__budget=0.3,
            dnsbl__fail_open=False,
        )
        (code, text), _ = yield self.deliverFrom("127.0.0.3")
        self.assertEqual(code, 451)
        self.assertIn(b"4.7.1", text)
        yield sleep(1)  # the unanswered queries time out (dns.timeout) behind us


class DNSBLUnitTests(DNSServerMixin, TestCase):
    timeout = 30

    def checker(self, zones, port, budget=1.0):
        return DNSBLChecker.forServers(
            [parseZone(z) for z in zones],
            [("127.0.0.1", port)],
            0.5,
            reactor,
            budget,
            Metrics(),
        )

    def test_queryNames(self):
        self.assertEqual(queryName("192.0.2.99", "bl.test"), "99.2.0.192.bl.test")
        self.assertEqual(
            queryName("2001:db8:1:2:3:4:567:89ab", "bl.test"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test",
        )

    @inlineCallbacks
    def test_ipv6ListedByNibbles(self):
        checker = self.checker(["bl.test"], self.startDNS())
        verdict = yield checker.check("2001:db8::25")
        self.assertEqual(verdict.rejecting.reason, "v6 spammer")
        verdict = yield checker.check("2001:db8::26")
        self.assertIsNone(verdict.rejecting)

    @inlineCallbacks
    def test_answersAreCachedForTheirTTL(self):
        checker = self.checker(["bl.test"], self.startDNS())
        yield checker.check("127.0.0.12")
        yield checker.check("127.0.0.12")
        cached = checker._metrics.dnsblLookups.labels("bl.test", "cached")._value.get()
        self.assertEqual(cached, 1)

    def test_zoneSpecs(self):
        zone = parseZone("score.example:score=2.5:127.0.0.2-127.0.0.3")
        self.assertEqual(
            (zone.reject, zone.weight, zone.counts("127.0.0.4")), (False, 2.5, False)
        )
        self.assertRaises(ValueError, parseZone, "nodots")
        self.assertRaises(ValueError, parseZone, "bl.example:whatever")


class RateLimitTests(TestCase):
    timeout = 60

    def connect(self, port: int, source: str) -> tuple[int, bytes]:
        """Blocking: the greeting's code, then close."""
        sock = socket.create_connection(("127.0.0.1", port), 10, (source, 0))
        reply = sock.makefile("rb").readline()
        sock.close()
        return int(reply[:3]), reply

    @inlineCallbacks
    def test_connectionLimitPerIP(self):
        server = RunningServer(
            self, ratelimit__connections_per_ip=3, ratelimit__allowlist=[]
        )
        codes = []
        for _ in range(4):
            code, reply = yield deferToThread(
                self.connect, server.smtpPort, "127.0.0.21"
            )
            codes.append(code)
        self.assertEqual(codes, [220, 220, 220, 421])
        self.assertIn(b"4.7.0", reply)
        code, _ = yield deferToThread(self.connect, server.smtpPort, "127.0.0.22")
        self.assertEqual(code, 220)  # another address has its own bucket

    @inlineCallbacks
    def test_messageAndRecipientLimits(self):
        server = RunningServer(
            self,
            ratelimit__messages_per_ip=2,
            ratelimit__recipients_per_ip=3,
            ratelimit__allowlist=[],
        )
        yield server.addUser("alice@example.test")

        def dialogue():
            with smtplib.SMTP(
                "127.0.0.1",
                server.smtpPort,
                timeout=20,
                source_address=("127.0.0.23", 0),
            ) as client:
                client.ehlo("c.example.org")
                replies = []
                for _ in range(3):
                    replies.append(client.mail("bob@example.org")[0])
                    for _ in range(2):
                        replies.append(client.rcpt("alice@example.test")[0])
                    client.rset()
                return replies

        replies = yield deferToThread(dialogue)
        # MAIL, RCPT, RCPT | MAIL, RCPT (3rd recipient), RCPT 452 | MAIL 451 ...
        self.assertEqual(replies[:6], [250, 250, 250, 250, 250, 452])
        self.assertEqual(replies[6], 451)


class BoundedMemoryTests(SynchronousTestCase):
    def test_floodFromManyAddressesStaysBounded(self):
        clock = Clock()
        buckets = TokenBuckets(10, 60, clock, maxKeys=1000)
        for n in range(10_000):
            buckets.take(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
        self.assertLessEqual(len(buckets), 1000)
        clock.advance(120)
        buckets.prune()
        self.assertEqual(len(buckets), 0)

    def test_limitsPrune(self):
        clock = Clock()
        limits = ClientLimits(clock, connectionsPerIP=5)
        for n in range(500):
            ip = f"192.0.2.{n % 250}"
            if limits.connect(ip) is None:
                limits.disconnect(ip)
        self.assertGreater(limits.size(), 0)
        clock.advance(600)
        limits.prune()
        self.assertEqual((limits.size(), len(limits.concurrent)), (0, 0))


class ScoringTests(DNSServerMixin, TestCase):
    """Thresholds route mail; headers say why; training changes the next verdict."""

    timeout = 60

    CLEAN = (
        b"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\n"
        b"Subject: hello\r\nMessage-ID: <c1@example.org>\r\n"
        b"Date: Wed, 25 Nov 2026 12:00:00 +0000\r\n\r\nHi\r\n"
    )
    SLOPPY = (
        b"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\n"
        b"Subject: buy\r\nContent-Type: text/html\r\n\r\n<b>cheap</b>\r\n"
    )

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(
            self,
            dns__nameservers=[f"127.0.0.1:{self.startDNS()}"],
            dnsbl__zones=["score.test:score=3"],
            ratelimit__allowlist=[],
            spam__blocklist=["@spam.example"],
        )
        yield self.server.root.policy.checkZones()
        yield self.server.addUser("alice@example.test")
        self.api = APIClient(self, self.server.apiPort)
        yield self.api.login()

    def send(self, message: bytes, source="127.0.0.3", sender="bob@example.org"):
        def blocking():
            with smtplib.SMTP(
                "127.0.0.1",
                self.server.smtpPort,
                timeout=20,
                source_address=(source, 0),
            ) as client:
                client.ehlo("c.example.org")
                client.mail(sender)
                client.rcpt("alice@example.test")
                return client.data(message)

        return deferToThread(blocking)

    @inlineCallbacks
    def newest(self, mailbox: str):
        page = yield self.api.json("GET", "/messages", mailbox=mailbox, limit="1")
        [summary] = page["messages"]
        full = yield self.api.json("GET", f"/messages/{summary['id']}")
        return summary, {h["name"]: h["value"] for h in full["headers"]}

    @inlineCallbacks
    def test_thresholdsRouteAndHeadersExplain(self):
        code, _ = yield self.send(self.CLEAN)
        self.assertEqual(code, 250)
        summary, headers = yield self.newest("inbox")
        self.assertTrue(headers["X-Spam-Status"].startswith("No, score=0.0"))
        # listed with weight 3 + no Message-ID 1.5 + no Date 1.5 + HTML only 1
        code, _ = yield self.send(self.SLOPPY, source="127.0.0.15")
        self.assertEqual(code, 250)
        summary, headers = yield self.newest("junk")
        self.assertEqual(summary["mailbox"], "junk")
        self.assertEqual(summary["spam_score"], 7.0)
        self.assertEqual(headers["X-Spam-Score"], "7.0")
        for rule in (
            "DNSBL_LISTED=3",
            "MISSING_MESSAGE_ID=1.5",
            "MISSING_DATE=1.5",
            "HTML_ONLY=1",
        ):
            self.assertIn(rule, headers["X-Spam-Status"])
        code, text = yield self.send(
            self.CLEAN.replace(b"bob@example.org", b"x@spam.example"),
            sender="x@spam.example",
        )
        self.assertEqual(code, 550)
        self.assertIn(b"5.7.1", text)

    @inlineCallbacks
    def test_trainingFromTheAPIChangesTheNextVerdict(self):
        yield self.send(self.CLEAN)
        summary, _ = yield self.newest("inbox")
        yield self.api.json("PATCH", f"/messages/{summary['id']}", {"mailbox": "junk"})
        yield self.send(self.CLEAN)
        later, _ = yield self.newest("junk")
        self.assertNotEqual(later["id"], summary["id"])  # a new message, in junk
        yield self.api.json("PATCH", f"/messages/{later['id']}", {"mailbox": "inbox"})
        yield self.send(self.SLOPPY, source="127.0.0.15")  # would score 7: junk
        newest, headers = yield self.newest("inbox")
        self.assertEqual(headers["X-Spam-Score"], "7.0")
        self.assertEqual(newest["mailbox"], "inbox")


class DNSBLCheckCommandTests(DNSServerMixin, TestCase):
    timeout = 60

    @inlineCallbacks
    def test_printsWhatEachZoneSays(self):
        port = self.startDNS()
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write(
                f'[dns]\nnameservers = ["127.0.0.1:{port}"]\n'
                '[dnsbl]\nzones = ["bl.test", "score.test:score=3",'
                ' "broken.test"]\n'
            )
        listed = yield deferToThread(
            cli, "--config", config, "dnsbl-check", "127.0.0.12", check=False
        )
        out = listed.stdout.decode()
        self.assertEqual(listed.returncode, 1, out + listed.stderr.decode())
        self.assertIn("12.0.0.127.bl.test", out)
        self.assertIn("LISTED 127.0.0.2 (reject): seen spamming at 127.0.0.12", out)
        self.assertIn("UNHEALTHY", out)
        clean = yield deferToThread(
            cli, "--config", config, "dnsbl-check", "127.0.0.3", check=False
        )
        self.assertEqual(clean.returncode, 0, clean.stdout)
        self.assertEqual(clean.stdout.decode().count("not listed"), 2)


class ProxyProtocolTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_limitsAndTraceSeeTheClientBehindTheProxy(self):
        server = RunningServer(
            self,
            smtp__listen=["haproxy:tcp:0:interface=127.0.0.1"],
            ratelimit__connections_per_ip=1,
        )
        yield server.addUser("alice@example.test")

        def viaProxy(client: str) -> list[bytes]:
            sock = socket.create_connection(("127.0.0.1", server.smtpPort), 10)
            sock.sendall(
                f"PROXY TCP4 {client} 127.0.0.1 5555 25\r\n".encode()
                + b"EHLO c\r\nMAIL FROM:<bob@example.org>\r\n"
                b"RCPT TO:<alice@example.test>\r\nDATA\r\n"
                b"Subject: proxied\r\n\r\nx\r\n.\r\nQUIT\r\n"
            )
            reader = sock.makefile("rb")
            lines = [line for line in reader]
            sock.close()
            return lines

        first = yield deferToThread(viaProxy, "192.0.2.7")
        self.assertTrue(any(line.startswith(b"250 2.0.0 Ok") for line in first))
        [entry] = yield server.root.store.list(1, "inbox", 10, 0)
        full = yield server.root.store.get(entry["id"], 1)
        self.assertIn(b"Received: from c ([192.0.2.7])", full["raw"])
        second = yield deferToThread(viaProxy, "192.0.2.7")
        self.assertTrue(second[0].startswith(b"421 4.7.0"), second)
