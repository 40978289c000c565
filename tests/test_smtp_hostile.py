"""Hostile SMTP peers against a listening server: forged trace headers, bad
parameters, too many sessions, many sessions in DATA at once."""

from __future__ import annotations

import gc
import os
import smtplib
import socket
import time
from email import message_from_bytes

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailraven.spool import Spool
from tests.helpers import RunningServer, sleep
from tests.test_mobile_api import APIClient
from tests.test_smtp_e2e import finals, rawSession, storedMessage

MESSAGE = (
    b"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\n"
    b"Subject: hello\r\n\r\nHi Alice!\r\n.\r\n"
)
TRANSACTION = b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
# The attack of issue 17: bare CRs in the EHLO name start forged headers in
# Received:, which readers then take for the message's own From and Subject.
FORGED_EHLO = b"EHLO x\rFrom:\tCEO\t<ceo@example.test>\rSubject: pwned\r\n"
FORGED_EHLO_NO_SPACE = b"EHLO x\rFrom:\tCEO\t<ceo@example.test>\rSubject:\tpwned\r\n"


def ehloReply(port: int, name: str) -> tuple[int, bytes]:
    """Blocking: smtplib sends C{EHLO name} as it is; its reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return client.docmd("EHLO", name)


def openSessions(port: int, count: int) -> list[tuple[socket.socket, bytes]]:
    """
    Blocking: C{count} connections open at the same time (all connected
    before any greeting is read), each with its greeting line.
    """
    socks = [
        socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)
    ]
    return [(sock, sock.makefile("rb").readline()) for sock in socks]


def converse(sock: socket.socket, data: bytes, replies: int) -> list[str]:
    """Blocking: send C{data}, read C{replies} final reply lines."""
    sock.sendall(data)
    reader = sock.makefile("rb")
    lines: list[str] = []
    while len(finals(lines)) < replies:
        line = reader.readline()
        if not line:
            break
        lines.append(line.decode().rstrip("\r\n"))
    return finals(lines)


def closeAll(sessions: list[tuple[socket.socket, bytes]]) -> None:
    for sock, _ in sessions:
        sock.close()


@inlineCallbacks
def waitUntil(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        yield sleep(0.05)


class HeaderInjectionTests(TestCase):
    """RFC 5321 4.1.1.1: EHLO/HELO take a Domain or an address literal only."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")

    def session(self, chunks, expect):
        return deferToThread(rawSession, self.server.smtpPort, chunks, expect)

    @inlineCallbacks
    def test_bareCRInEhloIs501(self):
        for attack in (FORGED_EHLO, FORGED_EHLO_NO_SPACE):
            lines = yield self.session([attack + TRANSACTION], 4)
            self.assertEqual(
                [line[:9] for line in finals(lines)],
                ["501 5.5.4", "503 5.5.1", "503 5.5.1", "503 5.5.1"],
                attack,
            )
        for verb in (b"HELO", b"EHLO"):
            lines = yield self.session([verb + b" a\rb\r\n"], 1)
            self.assertEqual(finals(lines)[0][:9], "501 5.5.4")

    @inlineCallbacks
    def test_nulAndTabInEhloAre501(self):
        for name in ("x\x00y", "x\ty", "mx.example.org\x00From:\tx", "a\x0bb"):
            code, _ = yield deferToThread(ehloReply, self.server.smtpPort, name)
            self.assertEqual(code, 501, repr(name))

    @inlineCallbacks
    def test_domainsAndAddressLiteralsAreTaken(self):
        for name in ("mx.example.org", "[127.0.0.1]", "[IPv6:::1]", "PC_01.corp"):
            code, reply = yield deferToThread(ehloReply, self.server.smtpPort, name)
            self.assertEqual(code, 250, name)
            self.assertIn(f"Hello {name}".encode(), reply)

    @inlineCallbacks
    def test_messageAfterTheAttackCarriesOnlyTheClientsHeaders(self):
        lines = yield self.session(
            [
                FORGED_EHLO_NO_SPACE,
                b"EHLO [127.0.0.1]\r\n" + TRANSACTION + MESSAGE + b"QUIT\r\n",
            ],
            7,
        )
        replies = finals(lines)
        self.assertEqual(
            [line[:3] for line in replies],
            ["501", "250", "250", "250", "354", "250", "221"],
        )
        raw = yield deferToThread(
            storedMessage, self.server.dataDir, replies[5].split()[-1]
        )
        message = message_from_bytes(raw)
        self.assertEqual(message.get_all("From"), ["Bob <bob@example.org>"])
        self.assertEqual(message.get_all("Subject"), ["hello"])
        [received] = message.get_all("Received")
        self.assertTrue(received.startswith("from [127.0.0.1] ([127.0.0.1])"))
        self.assertNotIn(b"\r\r", raw)
        self.assertNotIn(b"pwned", raw)


def sendMessage(port: int, raw: bytes) -> tuple[int, bytes]:
    """Blocking: one message from bob@example.org to alice through smtplib."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mta.example.org")
        client.mail("bob@example.org")
        client.rcpt("alice@example.test")
        return client.data(raw)


class MessageHeaderTests(TestCase):
    """What the peer's message holds cannot pass for a header of ours."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)  # mail-auth off, as in the defaults
        yield self.server.addUser("alice@example.test")
        self.api = APIClient(self, self.server.apiPort)
        yield self.api.login()

    @inlineCallbacks
    def deliver(self, raw: bytes):
        """Send C{raw}; the stored message as the API shows it."""
        before = yield self.api.json("GET", "/messages")
        code, reply = yield deferToThread(sendMessage, self.server.smtpPort, raw)
        self.assertEqual(code, 250, reply)
        after = yield self.api.json("GET", "/messages")
        known = {m["id"] for m in before["messages"]}
        [new] = [m["id"] for m in after["messages"] if m["id"] not in known]
        found = yield self.api.json("GET", f"/messages/{new}")
        return found

    @inlineCallbacks
    def test_forgedResultsAreRemovedWithMailAuthOff(self):
        """
        With C{mailauth.enabled = false} a field under our authserv-id stayed
        and read as our verdict.
        """
        found = yield self.deliver(
            b"Authentication-Results: MX.mailraven.test;\r\n\tdkim=pass"
            b" header.d=bank.example\r\n"
            b"Authentication-Results: mx.example.org; spf=pass\r\n"
            b"From: bob@example.org\r\nSubject: forged\r\n\r\nbody\r\n"
        )
        results = [
            h["value"]
            for h in found["headers"]
            if h["name"] == "Authentication-Results"
        ]
        self.assertEqual(results, ["mx.example.org; spf=pass"])

    @inlineCallbacks
    def test_leadingBlankLineDoesNotContinueOurReceived(self):
        """
        A first line that starts with SP or TAB became a continuation line of
        our Received:; now the header ends before it (Postfix does the same).
        """
        for blank in (b" ", b"\t"):
            found = yield self.deliver(
                blank + b"by evil.example with SMTP id forged\r\n"
                b"From: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n"
            )
            headers = {h["name"]: h["value"] for h in found["headers"]}
            self.assertEqual(
                list(headers),
                ["Return-Path", "X-Spam-Score", "X-Spam-Status", "Received"],
                blank,
            )
            received = headers["Received"]
            self.assertTrue(
                received.startswith("from mta.example.org ([127.0.0.1])"), received
            )
            self.assertNotIn("evil", received)
            self.assertIn(blank + b"by evil.example", found["body"].encode())


class ParameterTests(TestCase):
    """Only ASCII digits in SIZE (RFC 1870), RFC 5321 syntax in paths."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")

    @inlineCallbacks
    def mailReplies(self, *commands: str) -> list[str]:
        lines = yield deferToThread(
            rawSession,
            self.server.smtpPort,
            [
                b"EHLO c.example.org\r\n"
                + b"".join(c.encode() + b"\r\n" for c in commands)
                + b"QUIT\r\n"
            ],
            2 + len(commands),
        )
        replies = finals(lines)
        self.assertEqual(replies[-1][:3], "221")
        return replies[1:-1]

    @inlineCallbacks
    def test_sizeTakesOnlyAsciiDigits(self):
        for size in ("\u00b2", "\u0661\u0662\u0663", "\uff11", "1_000", "9" * 21):
            [reply] = yield self.mailReplies(f"MAIL FROM:<bob@example.org> SIZE={size}")
            self.assertEqual(reply, "501 5.5.4 Bad SIZE parameter", size)
        [reply] = yield self.mailReplies("MAIL FROM:<bob@example.org> SIZE=1024")
        self.assertEqual(reply[:3], "250")

    @inlineCallbacks
    def test_recipientDomainSyntax(self):
        bad = [
            "alice@example.test..",
            "alice@example.test.",
            "alice@example..test",
            "alice@" + "a" * 64 + ".test",
            "x" * 65 + "@example.test",
        ]
        replies = yield self.mailReplies(
            "MAIL FROM:<bob@example.org>",
            *(f"RCPT TO:<{address}>" for address in bad),
            "RCPT TO:<alice@example.test>",
        )
        self.assertEqual(replies[0][:3], "250")
        for address, reply in zip(bad, replies[1:-1], strict=True):
            self.assertEqual(reply[:9], "501 5.1.3", address)
        self.assertEqual(replies[-1][:3], "250")

    @inlineCallbacks
    def test_senderDomainSyntax(self):
        replies = yield self.mailReplies("MAIL FROM:<bob@example.org..>")
        self.assertEqual(replies[0][:9], "501 5.1.7")


class SessionCapTests(TestCase):
    """Sessions are bounded in total and per IP, loopback included."""

    timeout = 60

    @inlineCallbacks
    def test_sessionsOverTheTotalCapGet421(self):
        server = RunningServer(
            self, smtp__max_sessions=10, ratelimit__concurrent_per_ip=100
        )
        yield server.addUser("alice@example.test")
        sessions = yield deferToThread(openSessions, server.smtpPort, 30)
        self.addCleanup(closeAll, sessions)
        greetings = [greeting.decode().rstrip() for _, greeting in sessions]
        accepted = [sock for sock, g in sessions if g.startswith(b"220 ")]
        self.assertEqual(len(accepted), 10, greetings)
        refused = [g for g in greetings if not g.startswith("220 ")]
        self.assertEqual(set(refused), {"421 4.3.2 Too busy, try again later"})
        for sock in accepted:
            replies = yield deferToThread(
                converse, sock, b"EHLO c\r\n" + TRANSACTION + MESSAGE, 5
            )
            self.assertEqual(
                [r[:3] for r in replies], ["250", "250", "250", "354", "250"]
            )
        entries = yield server.root.store.list(1, "inbox", 100, 0)
        self.assertEqual(len(entries), 10)
        factory = server.root.getServiceNamed("smtp").factory
        closeAll(sessions)
        yield waitUntil(lambda: not factory.sessions)
        [(sock, greeting)] = yield deferToThread(openSessions, server.smtpPort, 1)
        sock.close()
        self.assertTrue(greeting.startswith(b"220 "), greeting)

    @inlineCallbacks
    def test_loopbackIsNotExemptFromConcurrentPerIP(self):
        """The default allowlist (loopback) skips rates and DNSBL, not this."""
        server = RunningServer(self, ratelimit__concurrent_per_ip=5)
        self.assertIn("127.0.0.1/32", server.config["ratelimit.allowlist"])
        sessions = yield deferToThread(openSessions, server.smtpPort, 8)
        self.addCleanup(closeAll, sessions)
        greetings = sorted(g.decode().rstrip() for _, g in sessions)
        self.assertEqual([g[:3] for g in greetings], ["220"] * 5 + ["421"] * 3)
        self.assertEqual(greetings[-1], "421 4.7.0 Too many connections, slow down")


BODY_LINE = b"x" * 98 + b"\r\n"
PARTIAL_BODY = b"Subject: big\r\n\r\n" + BODY_LINE * (900_000 // len(BODY_LINE))


def sessionsInData(port: int, count: int) -> list[socket.socket]:
    """Blocking: C{count} sessions, each in DATA with 900 KB sent, left open."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        socks.append(sock)
        replies = converse(sock, b"", 1) + converse(
            sock, b"EHLO c\r\n" + TRANSACTION, 4
        )
        assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354"], replies
        sock.sendall(PARTIAL_BODY)
    return socks


class MemoryBudgetTests(TestCase):
    """All sessions in DATA together keep at most smtp.spool_memory in memory."""

    timeout = 120

    @inlineCallbacks
    def test_hundredSessionsInDataStayWithinTheBudget(self):
        server = RunningServer(self, ratelimit__concurrent_per_ip=200)
        yield server.addUser("alice@example.test")
        budget = server.root.spoolBudget
        self.assertEqual(budget.capacity, 32 * 1024 * 1024)  # the default
        factory = server.root.getServiceNamed("smtp").factory
        socks = yield deferToThread(sessionsInData, server.smtpPort, 100)
        self.addCleanup(lambda: [s.close() for s in socks])

        def spools() -> list[Spool]:
            return [
                p._transaction.spool
                for p in factory.sessions
                if p._transaction is not None and p._transaction.spool is not None
            ]

        yield waitUntil(
            lambda: (
                len(spools()) == 100
                and all(s.size >= len(PARTIAL_BODY) for s in spools())
            )
        )
        inMemory = sum(s._buffered for s in spools())
        self.assertLessEqual(budget.peak, budget.capacity)
        self.assertLessEqual(inMemory, budget.capacity)
        self.assertEqual(budget.used, inMemory)
        self.assertGreater(sum(s.size for s in spools()), 2 * budget.capacity)
        tmp = os.path.join(server.dataDir, "tmp")
        self.assertTrue(os.listdir(tmp), "nothing spilled to data_dir/tmp")

        for sock in socks:
            sock.close()
        yield waitUntil(lambda: not factory.sessions)
        yield waitUntil(lambda: not os.listdir(tmp))  # discarded on a thread
        self.assertEqual(budget.used, 0)
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, Spool)]
        self.assertEqual([s for s in alive if s._budget is budget], [])
