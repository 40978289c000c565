"""Outbound delivery against a real MTA: Debian's Postfix as the remote MX,
found through MX/A records served by an in-process DNS server; DKIM checked
with dkimpy against the published key; retries stepped with a Clock."""

from __future__ import annotations

import email
import os
import sqlite3
import time

import dkim
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.names import dns
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailraven.outbound.queue import retryDelay
from mailraven.quickstart import createDKIMKey
from tests.dnszone import Zone, serveZone
from tests.helpers import PASSWORD, RunningServer, sleep
from tests.postfix import Postfix, subjects
from tests.process import ServerProcess, cli, freePort, writeConfig
from tests.test_mobile_api import APIClient
from tests.test_submission import submit

SELECTOR = "mailraven202611"


@inlineCallbacks
def waitForOutbound(api, messageId: str, done, timeout: float = 30):
    """Poll GET /outbound/{id} until C{done(status)}; the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = yield api.json("GET", f"/outbound/{messageId}")
        if done(status) or time.monotonic() > deadline:
            return status
        yield sleep(0.1)


def remoteZone() -> Zone:
    return Zone(
        {
            "remote.example": [(dns.MX, (10, "mx.remote.example"))],
            "mx.remote.example": [(dns.A, "127.0.0.1")],
            "nullmx.example": [(dns.MX, (0, "."))],
        }
    )


class OutboundCase(TestCase):
    timeout = 90

    @inlineCallbacks
    def startServer(self, **overrides):
        self.postfix = Postfix(self, ["remote.example"])
        self.zone = remoteZone()
        dnsPort = serveZone(self, self.zone)
        dataDir = os.path.abspath(self.mktemp())
        publicKey = createDKIMKey(os.path.join(dataDir, "dkim"), SELECTOR)
        self.zone.add(
            f"{SELECTOR}._domainkey.example.test",
            dns.TXT,
            f"v=DKIM1; k=rsa; p={publicKey}",
        )
        settings = dict(
            dns__nameservers=[f"127.0.0.1:{dnsPort}"],
            queue__port=self.postfix.port,
        )
        settings.update(overrides)
        self.server = RunningServer(self, dataDir, **settings)
        yield self.server.addUser("alice@example.test")
        self.api = APIClient(self, self.server.apiPort)
        yield self.api.login()

    def status(self, messageId: str):
        return self.api.json("GET", f"/outbound/{messageId}")

    @inlineCallbacks
    def waitForStatus(self, messageId: str, wanted: str, timeout: float = 30):
        found = yield waitForOutbound(
            self.api, messageId, lambda s: s["status"] == wanted, timeout
        )
        if found["status"] != wanted:
            raise AssertionError(f"status stayed {found}")
        return found

    def dnsTXT(self, name: bytes, timeout: float = 5) -> bytes | None:
        return self.zone.txt(name.decode().rstrip("."))


class DeliveryTests(OutboundCase):
    @inlineCallbacks
    def test_submissionAndAPIReachTheRemoteMXSignedWithDKIM(self):
        yield self.startServer()
        self.postfix.start()
        code, refused, data = yield deferToThread(
            submit,
            self.server.submissionPort,
            "alice@example.test",
            PASSWORD,
            "alice@example.test",
            ["bob@remote.example"],
        )
        self.assertEqual((code, refused, data), (235, {}, 250))
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {"to": ["carol@remote.example"], "subject": "via the API", "body": "hi"},
            expect=202,
        )
        arrived = yield deferToThread(self.postfix.waitFor, 2)
        self.assertEqual(sorted(subjects(arrived)), ["submitted", "via the API"])
        for raw in arrived:
            self.assertTrue(raw.startswith(b"Return-Path: <alice@example.test>"))
            signature = email.message_from_bytes(raw)["DKIM-Signature"]
            self.assertIn("d=example.test", signature)
            self.assertIn(f"s={SELECTOR}", signature)
            self.assertIn("c=relaxed/relaxed", signature)
            self.assertTrue(dkim.verify(raw, dnsfunc=self.dnsTXT), raw[:600])
        status = yield self.waitForStatus(sent["id"], "delivered")
        [recipient] = status["recipients"]
        self.assertEqual(
            (recipient["address"], recipient["status"], recipient["last_reply"][:3]),
            ("carol@remote.example", "delivered", "250"),
        )
        delivered = self.server.root.metrics.registry.get_sample_value(
            "mailraven_outbound_deliveries_total", {"result": "delivered"}
        )
        self.assertEqual(delivered, 2)

    @inlineCallbacks
    def test_refusedRecipientFailsAndTheSenderGetsADSN(self):
        yield self.startServer()
        self.postfix.start()
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {
                "to": ["reject@remote.example", "ok@remote.example"],
                "subject": "half of it bounces",
                "body": "hi",
            },
            expect=202,
        )
        status = yield self.waitForStatus(sent["id"], "failed")
        byAddress = {r["address"]: r for r in status["recipients"]}
        self.assertEqual(byAddress["ok@remote.example"]["status"], "delivered")
        rejected = byAddress["reject@remote.example"]
        self.assertEqual(rejected["status"], "failed")
        self.assertTrue(rejected["last_reply"].startswith("550 5.1.1"), rejected)
        # the DSN is stored after the status says failed: wait for it
        deadline = time.monotonic() + 15
        while True:
            inbox = yield self.api.json("GET", "/messages")
            dsns = [m for m in inbox["messages"] if m["mailbox"] == "inbox"]
            if dsns or time.monotonic() > deadline:
                break
            yield sleep(0.1)
        [dsn] = dsns
        self.assertEqual(dsn["subject"], "Undelivered Mail Returned")
        full = yield self.api.json("GET", f"/messages/{dsn['id']}")
        self.assertIn("Final-Recipient: rfc822; reject@remote.example", full["body"])
        self.assertIn("Status: 5.1.1", full["body"])
        self.assertIn("Subject: half of it bounces", full["body"])

    @inlineCallbacks
    def test_nonASCIIRecipientFailsAtOnceTheOthersGo(self):
        yield self.startServer()
        self.postfix.start()
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {
                "to": ["δοκιμή@remote.example", "ok@remote.example"],
                "subject": "utf8",
                "body": "b",
            },
            expect=202,
        )
        status = yield self.waitForStatus(sent["id"], "failed")
        byAddress = {r["address"]: r for r in status["recipients"]}
        self.assertEqual(byAddress["ok@remote.example"]["status"], "delivered")
        self.assertTrue(
            byAddress["δοκιμή@remote.example"]["last_reply"].startswith("553 5.6.7")
        )

    @inlineCallbacks
    def test_nullMXFailsAtOnce(self):
        yield self.startServer()
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {"to": ["x@nullmx.example"], "subject": "s", "body": "b"},
            expect=202,
        )
        status = yield self.waitForStatus(sent["id"], "failed")
        self.assertIn("null MX", status["recipients"][0]["last_reply"])


class ClockedQueueCase(OutboundCase):
    """The queue runs only when the test calls C{runOnce()}, on a Clock."""

    @inlineCallbacks
    def setUp(self):
        yield self.startServer()
        self.queue = self.server.root.outbound
        self.clock = Clock()
        self.clock.advance(time.time())
        # Runs happen only when the test calls runOnce(); the network is real.
        self.queue._clock = self.clock
        self.queue._schedule = lambda delay: None
        if self.queue._call is not None and self.queue._call.active():
            self.queue._call.cancel()
        yield self.queue._running

    @inlineCallbacks
    def attempts(self, messageId: str) -> list:
        found = yield self.status(messageId)
        return [(r["status"], r["attempts"]) for r in found["recipients"]]


class RetryTests(ClockedQueueCase):
    @inlineCallbacks
    def test_deadMXIsRetriedOnScheduleThenDelivered(self):
        self.queue._settings["port"] = freePort()  # nothing listens: refused
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {"to": ["bob@remote.example"], "subject": "later", "body": "b"},
            expect=202,
        )
        yield self.queue.runOnce()
        self.assertEqual((yield self.attempts(sent["id"])), [("deferred", 1)])
        status = yield self.status(sent["id"])
        self.assertIn(
            "No answer from remote.example", status["recipients"][0]["last_reply"]
        )
        self.clock.advance(retryDelay(1, 450, 28800) - 1)
        yield self.queue.runOnce()
        self.assertEqual((yield self.attempts(sent["id"])), [("deferred", 1)])

        self.postfix.start()  # the MX comes back
        self.queue._settings["port"] = self.postfix.port
        self.clock.advance(1)
        yield self.queue.runOnce()
        self.assertEqual((yield self.attempts(sent["id"])), [("delivered", 2)])
        arrived = yield deferToThread(self.postfix.waitFor, 1)
        self.assertEqual(subjects(arrived), ["later"])

    @inlineCallbacks
    def test_451IsDeferredWithDoublingWaits(self):
        self.postfix.start()
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {"to": ["defer@remote.example"], "subject": "s", "body": "b"},
            expect=202,
        )
        for attempt, wait in ((1, 450), (2, 900), (3, 1800)):
            yield self.queue.runOnce()
            self.assertEqual((yield self.attempts(sent["id"])), [("deferred", attempt)])
            self.clock.advance(wait - 1)
            yield self.queue.runOnce()  # not due yet
            self.assertEqual((yield self.attempts(sent["id"])), [("deferred", attempt)])
            self.clock.advance(1)
        status = yield self.status(sent["id"])
        self.assertTrue(status["recipients"][0]["last_reply"].startswith("451 4.3.0"))

    @inlineCallbacks
    def test_givesUpAfterFiveDaysWithADSN(self):
        self.postfix.start()
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {"to": ["defer@remote.example"], "subject": "stuck", "body": "b"},
            expect=202,
        )
        yield self.queue.runOnce()
        self.clock.advance(4 * 3600 + 1)  # past delay_notice_after: one notice
        yield self.queue.runOnce()
        self.clock.advance(5 * 86400)
        yield self.queue.runOnce()
        self.assertEqual((yield self.attempts(sent["id"])), [("failed", 3)])
        inbox = yield self.api.json("GET", "/messages")
        self.assertEqual(
            sorted(m["subject"] for m in inbox["messages"] if m["mailbox"] == "inbox"),
            ["Delivery delayed: still trying", "Undelivered Mail Returned"],
        )


class ScheduleTests(SynchronousTestCase):
    def test_retryDelaysDoubleFromSevenAndAHalfMinutes(self):
        self.assertEqual(
            [retryDelay(n, 450, 28800) for n in range(1, 9)],
            [450, 900, 1800, 3600, 7200, 14400, 28800, 28800],
        )


def waitForAttempt(database: str, timeout: float = 30) -> None:
    """Blocking: until a recipient of the outbound queue has had an attempt."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            tried = conn.execute(
                "SELECT count(*) FROM outbound_recipients WHERE attempts > 0"
            ).fetchone()[0]
        finally:
            conn.close()
        if tried:
            return
        time.sleep(0.1)
    raise AssertionError("no delivery attempt was made")


class CrashTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_queuedMessageSurvivesSIGKILL(self):
        postfix = Postfix(self, ["remote.example"])
        dnsPort = serveZone(self, remoteZone())
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config, ports = writeConfig(
            directory,
            dns={"nameservers": [f"127.0.0.1:{dnsPort}"]},
            queue={"port": postfix.port, "retry_initial": 0.5},
        )
        cli(
            "--config",
            config,
            "user",
            "add",
            "alice@example.test",
            "--password-stdin",
            stdin=PASSWORD,
        )
        logPath = os.path.join(directory, "server.log")
        server = ServerProcess(config, logPath)
        self.addCleanup(server.ensureStopped)
        yield deferToThread(server.waitForPort, ports["submission"])
        code, refused, data = yield deferToThread(
            submit,
            ports["submission"],
            "alice@example.test",
            PASSWORD,
            "alice@example.test",
            ["bob@remote.example"],
        )
        self.assertEqual((code, refused, data), (235, {}, 250))
        # SIGKILL only after an attempt failed (the MX is down), so the
        # restarted server takes over a deferred message, not a fresh one.
        database = os.path.join(directory, "data", "mailraven.db")
        yield deferToThread(waitForAttempt, database)
        server.kill()

        postfix.start()
        again = ServerProcess(config, logPath)
        self.addCleanup(again.ensureStopped)
        arrived = yield deferToThread(postfix.waitFor, 1)
        self.assertEqual(subjects(arrived), ["submitted"])
        self.assertTrue((yield deferToThread(again.terminate)))


class StartTLSTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_deliveryUsesSTARTTLSWhenTheRemoteOffersIt(self):
        # The remote MX is a second MailRaven (it offers STARTTLS).
        remote = RunningServer(self, server__domains=["remote.example"])
        yield remote.addUser("bob@remote.example")
        dnsPort = serveZone(self, remoteZone())
        sender = RunningServer(
            self, dns__nameservers=[f"127.0.0.1:{dnsPort}"], queue__port=remote.smtpPort
        )
        yield sender.addUser("alice@example.test")
        api = APIClient(self, sender.apiPort)
        yield api.login()
        sent = yield api.json(
            "POST",
            "/messages/send",
            {"to": ["bob@remote.example"], "subject": "over TLS", "body": "hi"},
            expect=202,
        )
        status = yield waitForOutbound(
            api, sent["id"], lambda s: s["status"] == "delivered"
        )
        self.assertEqual(status["status"], "delivered", status)
        theirs = APIClient(self, remote.apiPort)
        yield theirs.login("bob@remote.example")
        [received] = (yield theirs.json("GET", "/messages"))["messages"]
        full = yield theirs.json("GET", f"/messages/{received['id']}")
        self.assertIn("with ESMTPS", full["body"])


class BrokenTLSMX(LineReceiver):
    """Offers STARTTLS, then injects plain-text lines after its 220 (which the
    client must ignore) and drops the handshake; takes mail in clear on a
    connection that does not ask for TLS."""

    def connectionMade(self) -> None:
        self.data: list[bytes] | None = None
        self.sendLine(b"220 broken.example ESMTP")

    def lineReceived(self, line: bytes) -> None:
        if self.data is not None:
            if line == b".":
                self.factory.received.append(b"\r\n".join(self.data))
                self.data = None
                self.sendLine(b"250 2.0.0 queued")
            else:
                self.data.append(line)
            return
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            self.sendLine(b"250-broken.example")
            self.sendLine(b"250 STARTTLS")
        elif verb == b"STARTTLS":
            self.factory.tlsAttempts += 1
            self.sendLine(b"220 go ahead")
            self.transport.write(b"250 injected in clear\r\n" * 4)
            self.transport.loseConnection()
        elif verb == b"DATA":
            self.data = []
            self.sendLine(b"354 go on")
        elif verb == b"QUIT":
            self.sendLine(b"221 bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"250 ok")


class TLSFallbackTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_brokenTLSIsRetriedInClear(self):
        factory = Factory.forProtocol(BrokenTLSMX)
        factory.received, factory.tlsAttempts = [], 0
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        dnsPort = serveZone(self, remoteZone())
        server = RunningServer(
            self,
            dns__nameservers=[f"127.0.0.1:{dnsPort}"],
            queue__port=port.getHost().port,
        )
        yield server.addUser("alice@example.test")
        api = APIClient(self, server.apiPort)
        yield api.login()
        sent = yield api.json(
            "POST",
            "/messages/send",
            {"to": ["bob@remote.example"], "subject": "in clear", "body": "hi"},
            expect=202,
        )
        deadline = time.monotonic() + 30
        while not factory.received and time.monotonic() < deadline:
            yield sleep(0.1)
        self.assertEqual(factory.tlsAttempts, 1)
        self.assertEqual(len(factory.received), 1)
        self.assertIn(b"Subject: in clear", factory.received[0])
        status = yield api.json("GET", f"/outbound/{sent['id']}")
        self.assertEqual(status["status"], "delivered")
