"""The ESMTP state machine, driven through StringTransport and a Clock."""

from __future__ import annotations

import base64
import gc
import weakref

from scramp import ScramClient
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from mailraven.metrics import Metrics
from mailraven.policy.logins import LoginLimiter
from mailraven.policy.pipeline import Verdict
from mailraven.policy.session import SessionPolicy
from mailraven.smtp.recipients import RecipientResolver
from mailraven.smtp.server import (
    MAX_TEXT_LINE,
    MailRavenSMTPFactory,
    SMTPSettings,
    hasLongLine,
)
from mailraven.smtp.submission import SubmissionSMTPFactory
from mailraven.spool import Spool
from mailraven.testing import (
    FakeDiskGuard,
    FakePolicyCheck,
    MemoryMessageStore,
    MemoryUserStore,
)


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    tlsStarted = None

    def startTLS(self, contextFactory):
        self.tlsStarted = contextFactory


class SlowUsers(MemoryUserStore):
    """Directory loads wait until the test fires them, like a busy database."""

    def __init__(self):
        super().__init__()
        self.waiting: list[Deferred] = []

    def directory(self):
        d = Deferred()
        self.waiting.append(d)
        return d

    def fireNext(self):
        super().directory().chainDeferred(self.waiting.pop(0))


class ProtocolTestCase(SynchronousTestCase):
    maxMessageSize = 10000
    factoryClass = MailRavenSMTPFactory

    def setUp(self):
        self.clock = Clock()
        self.users = self.makeUsers()
        self.users.add("alice@example.test", "pw")
        self.users.add("carol@example.test", "pw")
        self.store = MemoryMessageStore()
        self.disk = FakeDiskGuard()
        self.metrics = Metrics()
        self.tls = object()
        self.factory = self.factoryClass(
            settings=SMTPSettings("mx.example.test", self.maxMessageSize, 3, 300),
            resolver=RecipientResolver(self.users, ["example.test"], self.clock),
            store=self.store,
            spoolFactory=lambda: Spool("", None, None, memoryLimit=1 << 30),
            discardSpool=lambda spool: spool.discard(),
            diskGuard=self.disk,
            metrics=self.metrics,
            tlsContext=self.tls,
            clock=self.clock,
            **self.extraFactoryArgs(),
        )
        self.proto = self.factory.buildProtocol(None)
        self.transport = TLSStringTransport()
        self.proto.makeConnection(self.transport)
        self.assertEqual(self.replies(), ["220 mx.example.test ESMTP MailRaven"])

    def makeUsers(self):
        return MemoryUserStore()

    def extraFactoryArgs(self) -> dict:
        return {}

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def replies(self) -> list[str]:
        out = self.transport.value().decode()
        self.transport.clear()
        return out.splitlines()

    def codes(self) -> list[str]:
        return [line[:3] for line in self.replies() if line[3:4] == " "]

    def ehlo(self) -> None:
        self.send(b"EHLO client.example.org\r\n")
        self.replies()

    def transaction(self, rcpts=(b"alice@example.test",)) -> None:
        self.send(
            b"MAIL FROM:<bob@example.org>\r\n"
            + b"".join(b"RCPT TO:<%s>\r\n" % r for r in rcpts)
            + b"DATA\r\n"
        )


class DialogueTests(ProtocolTestCase):
    def test_ehloAdvertisesExtensions(self):
        self.send(b"EHLO client.example.org\r\n")
        lines = self.replies()
        self.assertEqual(lines[0], "250-mx.example.test Hello client.example.org")
        for ext in (
            "PIPELINING",
            "SIZE 10000",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "STARTTLS",
            "SMTPUTF8",
        ):
            self.assertTrue(any(line[4:] == ext for line in lines), ext)
        self.assertTrue(lines[-1].startswith("250 "))

    def test_acceptsAMessageAndRepliesWithItsId(self):
        self.ehlo()
        self.transaction()
        self.assertEqual(self.codes(), ["250", "250", "354"])
        self.send(b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n")
        [reply] = self.replies()
        [(messageId, (envelope, raw))] = self.store.messages.items()
        self.assertEqual(reply, f"250 2.0.0 Ok {messageId}")
        self.assertTrue(raw.startswith(b"Return-Path: <bob@example.org>\r\nReceived: "))
        self.assertTrue(raw.endswith(b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"))
        self.assertEqual(
            [r.address for r in envelope.recipients], ["alice@example.test"]
        )

    def test_emptyMessageBody(self):
        self.ehlo()
        self.transaction()
        self.replies()
        self.send(b".\r\n")
        self.assertEqual(self.codes(), ["250"])

    def test_dataSplitAcrossManyReadsIsReassembled(self):
        self.ehlo()
        self.transaction()
        self.replies()
        payload = b"a\r\n.b\r\n..\r\nlast line\r\n.\r\n"
        for i in range(len(payload)):
            self.send(payload[i : i + 1])
        self.assertEqual(self.codes(), ["250"])
        [(_, raw)] = self.store.messages.values()
        self.assertTrue(raw.endswith(b"\r\na\r\nb\r\n.\r\nlast line\r\n"), raw)

    def test_noopRsetVrfyHelp(self):
        self.ehlo()
        self.send(b"NOOP\r\nVRFY alice\r\nHELP\r\nRSET\r\n")
        lines = self.replies()
        self.assertEqual(lines[0], "250 2.0.0 OK")
        self.assertTrue(lines[1].startswith("252 2.5.2 "))
        self.assertTrue(lines[2].startswith("214-2.0.0 "))
        self.assertEqual(lines[-1], "250 2.0.0 Reset OK")

    def test_everyReplyAfterEhloCarriesAnEnhancedCode(self):
        self.ehlo()
        self.send(
            b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<nobody@example.test>\r\n"
            b"RCPT TO:<x@elsewhere.org>\r\nBDAT 10\r\nDATA x\r\nQUIT\r\n"
        )
        for line in self.replies():
            self.assertRegex(line, r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3} ")

    def test_smtputf8AddressesOnlyWithTheParameter(self):
        self.users.add("j\u00f6rg@example.test", "pw")
        self.ehlo()
        self.send("MAIL FROM:<b\u00f6b@example.org>\r\n".encode())
        self.assertTrue(self.replies()[0].startswith("501 5.1.7 "))
        self.send("MAIL FROM:<b\u00f6b@example.org> SMTPUTF8\r\n".encode())
        self.send("RCPT TO:<j\u00f6rg@example.test>\r\nDATA\r\n".encode())
        self.send("Subject: \u00fc\r\n\r\nx\r\n.\r\n".encode())
        self.assertEqual(self.codes(), ["250", "250", "354", "250"])
        [(envelope, raw)] = self.store.messages.values()
        self.assertEqual(envelope.mailFrom, "b\u00f6b@example.org")
        self.assertIn(b"with UTF8SMTP", raw)

    def test_mailBeforeEhloIsRefused(self):
        self.send(b"MAIL FROM:<bob@example.org>\r\n")
        self.assertEqual(self.replies(), ["503 5.5.1 Send EHLO/HELO first"])

    def test_sizeParameterOverTheCapRefusedAtMail(self):
        self.ehlo()
        self.send(b"MAIL FROM:<bob@example.org> SIZE=10001 BODY=8BITMIME\r\n")
        self.assertEqual(self.replies(), ["552 5.3.4 Message size exceeds fixed limit"])
        self.send(b"MAIL FROM:<bob@example.org> SIZE=9000 BODY=8BITMIME\r\n")
        self.assertEqual(self.codes(), ["250"])

    def test_sizeParameterTakesOnlyASCIIDigits(self):
        """
        Found by tests/fuzz/fuzz_smtp.py: C{"²".isdigit()} but C{int("²")}
        raises, which answered 451 "Internal error"; Arabic-Indic digits were
        taken as a size.
        """
        self.ehlo()
        for size in ("\u00b2", "\u0661\u0660"):
            self.send(f"MAIL FROM:<bob@example.org> SIZE={size}\r\n".encode())
            self.assertEqual(self.replies(), ["501 5.5.4 Bad SIZE parameter"])

    def test_ehloWithAControlCharacterIsRefusedAndNotEchoed(self):
        """
        Found by tests/fuzz/fuzz_smtp.py: a bare CR in the EHLO name came back
        raw in the 250 reply (and went into Received:).
        """
        for name in (b"x\rFrom:\tCEO", b"x\x00y", b"x\ty", b"x\x7fy"):
            self.send(b"EHLO " + name + b"\r\n")
            self.assertEqual(
                self.replies(), ["501 5.5.4 Syntax: EHLO domain or address literal"]
            )
            self.send(b"HELO " + name + b"\r\n")
            self.assertEqual(
                self.replies(), ["501 5.5.4 Syntax: EHLO domain or address literal"]
            )

    def test_unknownParameterIs555(self):
        self.ehlo()
        self.send(b"MAIL FROM:<bob@example.org> XFOO=1\r\n")
        self.assertTrue(self.replies()[0].startswith("555 5.5.4 "))
        self.send(
            b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.test>"
            b" NOTIFY=NEVER\r\n"
        )
        self.assertEqual(self.codes(), ["250", "555"])

    def test_unknownLocalUserAndRelay(self):
        self.ehlo()
        self.send(
            b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<nobody@example.test>\r\n"
            b"RCPT TO:<someone@elsewhere.org>\r\n"
        )
        lines = self.replies()
        self.assertTrue(lines[1].startswith("550 5.1.1 "))
        self.assertEqual(lines[2], "554 5.7.1 Relay access denied")

    def test_refusedRecipientsDoNotKeepTheSessionAlive(self):
        """
        Found by tests/fuzz/fuzz_smtp.py (its memory grew 1 GB in 8 minutes):
        the refusals were module-level exceptions, raised again and again, and
        each raise kept the traceback of the one before, with every refused
        session's frames (transport, buffers, spool) in it, for good.
        """
        for _ in range(3):
            self.ehlo()
            self.send(
                b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<nobody@example.test>\r\n"
                b"RCPT TO:<someone@elsewhere.org>\r\nRCPT TO:<u@[192.0.2.1]>\r\n"
            )
            self.assertEqual(self.codes(), ["250", "550", "554", "554"])
            session = weakref.ref(self.proto)
            self.proto.connectionLost(Failure(ConnectionDone()))
            self.proto = self.factory.buildProtocol(None)
            self.transport = TLSStringTransport()
            self.proto.makeConnection(self.transport)
            self.replies()
            gc.collect()
            self.assertIsNone(session())

    def test_postmasterGoesToTheFirstAccount(self):
        self.ehlo()
        for rcpt in (b"Postmaster", b"postmaster@EXAMPLE.test"):
            self.transaction(rcpts=(rcpt,))
            self.send(b"x\r\n.\r\n")
        self.assertEqual(self.codes(), ["250", "250", "354", "250"] * 2)
        recipients = [e.recipients for e, _ in self.store.messages.values()]
        self.assertEqual(
            [[(r.address, r.userId) for r in rs] for rs in recipients],
            [[("Postmaster", 1)], [("postmaster@example.test", 1)]],
        )

    def test_postmasterAccountOrConfiguredOneWins(self):
        """An account named postmaster gets its own mail; otherwise
        server.postmaster names the account."""
        self.factory.resolver = RecipientResolver(
            self.users, ["example.test"], self.clock, postmaster="carol@example.test"
        )
        self.ehlo()
        self.transaction(rcpts=(b"postmaster@example.test",))
        self.send(b"x\r\n.\r\n")
        self.users.add("postmaster@example.test", "pw")
        self.clock.advance(60)  # the directory is reloaded
        self.transaction(rcpts=(b"postmaster@example.test",))
        self.send(b"y\r\n.\r\n")
        self.assertEqual(self.codes(), ["250", "250", "354", "250"] * 2)
        owners = [e.recipients[0].userId for e, _ in self.store.messages.values()]
        self.assertEqual(owners, [2, 3])

    def test_postmasterIsNoWayToRelayOrRoute(self):
        self.ehlo()
        self.send(
            b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<postmaster@elsewhere.org>\r\n"
            b"RCPT TO:<@relay.example:Postmaster>\r\nRCPT TO:<root>\r\n"
        )
        self.assertEqual(self.codes(), ["250", "554", "501", "501"])

    def test_tooManyRecipients(self):
        self.users.add("d@example.test", "pw")
        self.users.add("e@example.test", "pw")
        self.ehlo()
        self.send(
            b"MAIL FROM:<bob@example.org>\r\n"
            + b"".join(
                b"RCPT TO:<%s@example.test>\r\n" % n
                for n in (b"alice", b"carol", b"d", b"e")
            )
        )
        self.assertEqual(self.codes(), ["250", "250", "250", "250", "452"])

    def test_duplicateRecipientStoredOnce(self):
        self.ehlo()
        self.transaction(rcpts=(b"alice@example.test", b"ALICE@example.test"))
        self.send(b"x\r\n.\r\n")
        self.assertEqual(self.codes(), ["250", "250", "250", "354", "250"])
        [(envelope, _)] = self.store.messages.values()
        self.assertEqual(len(envelope.recipients), 1)

    def test_storeFailureIs451NotTwisted550(self):
        self.store.failWith = OSError("disk on fire")
        self.ehlo()
        self.transaction()
        self.send(b"x\r\n.\r\n")
        lines = self.replies()
        self.assertEqual(lines[-1], "451 4.3.0 Error storing message, try again later")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_diskFullRefusesNewMail(self):
        self.disk.usedPercent = 96
        self.ehlo()
        self.send(b"MAIL FROM:<bob@example.org>\r\n")
        self.assertEqual(self.replies(), ["452 4.3.1 Insufficient system storage"])

    def test_tooManyErrorsCloseTheSession(self):
        self.ehlo()
        self.send(b"FOO\r\n" * 25)
        lines = self.replies()
        self.assertEqual(lines[-1], "421 4.7.0 Too many errors, closing connection")
        self.assertEqual(len(lines), 21)
        self.assertTrue(self.transport.disconnecting)

    def test_quit(self):
        self.send(b"QUIT\r\n")
        self.assertEqual(self.replies(), ["221 2.0.0 Bye"])
        self.assertTrue(self.transport.disconnecting)


class HardeningTests(ProtocolTestCase):
    def test_overlongDataLineFailsTheMessageAtTheDot(self):
        self.ehlo()
        self.transaction()
        self.replies()
        self.send(
            b"Subject: x\r\n\r\n" + b"A" * 1200 + b"\r\nRSET\r\n"
            b"MAIL FROM:<smuggled@evil.test>\r\n.\r\n"
        )
        self.assertEqual(
            self.replies(), ["500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"]
        )
        self.assertEqual(self.store.messages, {})
        self.send(b"NOOP\r\n")
        self.assertEqual(self.replies(), ["250 2.0.0 OK"])

    def test_overlongPartialDataLineIsNotBuffered(self):
        self.ehlo()
        self.transaction()
        self.replies()
        for _ in range(100):
            self.send(b"B" * 10000)
        self.assertLess(len(self.proto._buffer), 1001)
        self.send(b"\r\n.\r\n")
        self.assertEqual(self.codes(), ["500"])

    def test_unterminatedCommandLineClosesTheSession(self):
        self.send(b"EHLO " + b"x" * 5000)
        self.assertEqual(self.replies(), ["500 5.5.2 Line too long"])
        self.assertTrue(self.transport.disconnecting)

    def test_onlyCRLFDotCRLFEndsData(self):
        self.ehlo()
        self.transaction()
        self.replies()
        self.send(b"a\n.\nMAIL FROM:<x@evil.test>\r\nb\r.\r\nc\r\n")
        self.assertEqual(self.replies(), [])
        self.send(b".\r\n")
        self.assertEqual(self.codes(), ["250"])
        [(_, raw)] = self.store.messages.values()
        self.assertIn(b"a\n.\nMAIL FROM:<x@evil.test>\r\nb\r.\r\nc\r\n", raw)

    def test_messageOverSizeCapIs552AtTheDot(self):
        self.ehlo()
        self.transaction()
        self.replies()
        self.send((b"x" * 98 + b"\r\n") * 150 + b".\r\n")
        self.assertEqual(self.replies(), ["552 5.3.4 Message size exceeds fixed limit"])
        self.assertEqual(self.store.messages, {})

    def test_starttlsDiscardsPipelinedCommandsAndResets(self):
        self.ehlo()
        self.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        self.assertEqual(self.replies(), ["220 2.0.0 Ready to start TLS"])
        self.assertIs(self.transport.tlsStarted, self.tls)
        self.send(b"MAIL FROM:<bob@example.org>\r\n")
        self.assertEqual(self.replies(), ["503 5.5.1 Send EHLO/HELO first"])
        self.send(b"EHLO client.example.org\r\n")
        self.assertNotIn("250-STARTTLS", self.replies())

    def test_idleSessionTimesOutAfterFiveMinutes(self):
        self.clock.advance(299)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(
            self.replies(), ["421 4.4.2 mx.example.test Error: timeout exceeded"]
        )
        self.assertTrue(self.transport.disconnecting)

    def test_activityResetsTheTimeout(self):
        self.clock.advance(200)
        self.send(b"NOOP\r\n")
        self.clock.advance(200)
        self.assertFalse(self.transport.disconnecting)

    def test_shutdownClosesIdleSession(self):
        self.factory.drain(30)
        self.assertEqual(
            self.replies(), ["421 4.3.2 Service shutting down, try again later"]
        )
        self.assertTrue(self.transport.disconnecting)

    def test_shutdownLetsDataInFlightFinish(self):
        self.ehlo()
        self.transaction()
        self.replies()
        self.send(b"Subject: x\r\n")
        drained = self.factory.drain(30)
        self.assertEqual(self.replies(), [])
        self.send(b"\r\nbody\r\n.\r\n")
        lines = self.replies()
        self.assertTrue(lines[0].startswith("250 2.0.0 Ok "))
        self.assertEqual(lines[1], "421 4.3.2 Service shutting down, try again later")
        self.proto.connectionLost(None)
        self.assertIsNone(self.successResultOf(drained))

    def test_shutdownGraceCutsOffSlowSession(self):
        self.ehlo()
        self.transaction()
        drained = self.factory.drain(30)
        self.assertNoResult(drained)
        self.transport.abortConnection = lambda: self.proto.connectionLost(None)
        self.clock.advance(30)
        self.assertIsNone(self.successResultOf(drained))


class PipeliningTests(ProtocolTestCase):
    def makeUsers(self):
        return SlowUsers()

    def test_pipelinedRepliesKeepOrderWhileRcptCheckPending(self):
        self.ehlo()
        self.transaction(rcpts=(b"alice@example.test", b"carol@example.test"))
        self.assertEqual(self.replies(), ["250 2.1.0 Sender OK"])
        self.assertEqual(len(self.users.waiting), 1)
        self.users.fireNext()
        self.assertEqual(
            self.replies(),
            [
                "250 2.1.5 Recipient OK",
                "250 2.1.5 Recipient OK",
                "354 End data with <CR><LF>.<CR><LF>",
            ],
        )
        self.assertEqual(self.transport.producerState, "producing")

    def test_readAheadWhileWaitingIsBoundedByPausingTheTransport(self):
        self.ehlo()
        self.send(b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.test>\r\n")
        self.assertEqual(self.transport.producerState, "producing")
        self.send(b"NOOP\r\n" * 60000)
        self.assertEqual(self.transport.producerState, "paused")
        self.users.fireNext()
        self.assertEqual(self.transport.producerState, "producing")

    def test_noTimeoutWhileOurReplyIsPending(self):
        self.ehlo()
        self.send(b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.test>\r\n")
        self.clock.advance(400)
        self.assertFalse(self.transport.disconnecting)
        self.users.fireNext()
        self.assertEqual(self.codes(), ["250", "250"])
        self.clock.advance(300)
        self.assertTrue(self.transport.disconnecting)

    def test_newAccountsAreSeenAfterTheDirectoryAges(self):
        self.ehlo()
        self.send(b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<dave@example.test>\r\n")
        self.users.fireNext()
        self.assertEqual(self.codes(), ["250", "550"])
        self.users.add("dave@example.test", "pw")
        self.send(b"RCPT TO:<dave@example.test>\r\n")
        self.assertEqual(self.codes(), ["550"], "reloaded before it aged")
        self.clock.advance(2.5)
        self.send(b"RCPT TO:<dave@example.test>\r\n")
        self.assertEqual(self.codes(), [])
        self.users.fireNext()
        self.assertEqual(self.codes(), ["250"])

    def test_pendingStoreHoldsLaterCommands(self):
        self.users = MemoryUserStore()
        self.factory.resolver = RecipientResolver(
            self.users, ["example.test"], self.clock
        )
        self.users.add("alice@example.test", "pw")
        self.store.hold = True
        self.ehlo()
        self.transaction()
        self.send(b"x\r\n.\r\nNOOP\r\nQUIT\r\n")
        self.assertEqual(self.codes(), ["250", "250", "354"])
        self.store.release()
        self.assertEqual(self.codes(), ["250", "250", "221"])


def plain(login: str, password: str) -> bytes:
    return base64.b64encode(f"\0{login}\0{password}".encode())


class SubmissionProtocolTests(ProtocolTestCase):
    factoryClass = SubmissionSMTPFactory
    sent = 0

    def extraFactoryArgs(self) -> dict:
        self.throttle = LoginLimiter(self.clock, ipFailures=3)
        return dict(
            users=self.users,
            sentToday=lambda userId: self.sent,
            outboundPerDay=2,
            logins=self.throttle,
            aliases=["sales@example.test=alice@example.test"],
        )

    def startTLS(self) -> None:
        self.ehlo()
        self.send(b"STARTTLS\r\n")
        self.assertEqual(self.codes(), ["220"])
        self.send(b"EHLO client.example.org\r\n")
        self.assertIn("250-AUTH SCRAM-SHA-256 PLAIN LOGIN", self.replies())

    def login(self) -> None:
        self.startTLS()
        self.send(b"AUTH PLAIN " + plain("alice@example.test", "pw") + b"\r\n")
        self.assertEqual(self.replies(), ["235 2.7.0 Authentication successful"])

    def test_nothingBeforeTLS(self):
        self.send(b"EHLO client.example.org\r\n")
        self.assertNotIn("AUTH", self.transport.value().decode())
        self.replies()
        self.send(b"AUTH PLAIN " + plain("alice@example.test", "pw") + b"\r\n")
        self.assertEqual(
            self.replies(), ["530 5.7.0 Must issue a STARTTLS command first"]
        )
        self.send(b"MAIL FROM:<alice@example.test>\r\n")
        self.assertEqual(self.replies(), ["530 5.7.0 Authentication required"])

    def test_loginMechanismWithPrompts(self):
        self.startTLS()
        self.send(b"AUTH LOGIN\r\n")
        self.assertEqual(self.replies(), ["334 VXNlcm5hbWU6"])
        self.send(base64.b64encode(b"alice@example.test") + b"\r\n")
        self.assertEqual(self.replies(), ["334 UGFzc3dvcmQ6"])
        self.send(base64.b64encode(b"pw") + b"\r\n")
        self.assertEqual(self.replies(), ["235 2.7.0 Authentication successful"])

    def scram(self, password: str) -> list[str]:
        client = ScramClient(["SCRAM-SHA-256"], "alice@example.test", password)
        first = base64.b64encode(client.get_client_first().encode())
        self.send(b"AUTH SCRAM-SHA-256 " + first + b"\r\n")
        [challenge] = self.replies()
        self.assertTrue(challenge.startswith("334 "), challenge)
        client.set_server_first(base64.b64decode(challenge[4:]).decode())
        self.send(base64.b64encode(client.get_client_final().encode()) + b"\r\n")
        self.clock.advance(10)  # a failure is answered late
        replies = self.replies()
        if replies[0].startswith("334 "):
            client.set_server_final(base64.b64decode(replies[0][4:]).decode())
            self.send(b"\r\n")
            replies = self.replies()
        return replies

    def test_scramSha256(self):
        self.startTLS()
        self.assertEqual(
            self.scram("wrong"), ["535 5.7.8 Authentication credentials invalid"]
        )
        self.assertEqual(self.scram("pw"), ["235 2.7.0 Authentication successful"])
        self.send(b"MAIL FROM:<alice@example.test>\r\n")
        self.assertEqual(self.replies(), ["250 2.1.0 Sender OK"])

    def test_scramForAnUnknownAccountFailsTheSameWay(self):
        self.startTLS()
        client = ScramClient(["SCRAM-SHA-256"], "nobody@example.test", "pw")
        first = base64.b64encode(client.get_client_first().encode())
        self.send(b"AUTH SCRAM-SHA-256 " + first + b"\r\n")
        [challenge] = self.replies()
        client.set_server_first(base64.b64decode(challenge[4:]).decode())
        self.send(base64.b64encode(client.get_client_final().encode()) + b"\r\n")
        self.clock.advance(10)
        self.assertEqual(
            self.replies(), ["535 5.7.8 Authentication credentials invalid"]
        )

    def test_anAbandonedScramExchangeCountsAsAFailure(self):
        self.startTLS()
        client = ScramClient(["SCRAM-SHA-256"], "alice@example.test", "pw")
        first = base64.b64encode(client.get_client_first().encode())
        self.send(b"AUTH SCRAM-SHA-256 " + first + b"\r\n")
        self.assertTrue(self.replies()[0].startswith("334 "))
        self.assertEqual(self.throttle.failures(ip=self.proto.peerIP), 0)
        self.proto.connectionLost(None)
        self.assertEqual(self.throttle.failures(ip=self.proto.peerIP), 1)

    def test_aCancelledExchangeCountsAsAFailure(self):
        self.startTLS()
        self.send(b"AUTH LOGIN\r\n")
        self.send(base64.b64encode(b"alice@example.test") + b"\r\n")
        self.send(b"*\r\n")
        self.assertEqual(self.replies()[-1], "501 5.0.0 Authentication cancelled")
        self.assertEqual(self.throttle.failures(ip=self.proto.peerIP), 0)
        client = ScramClient(["SCRAM-SHA-256"], "alice@example.test", "pw")
        first = base64.b64encode(client.get_client_first().encode())
        self.send(b"AUTH SCRAM-SHA-256 " + first + b"\r\n")
        self.replies()
        self.send(b"*\r\n")
        self.assertEqual(self.replies(), ["501 5.0.0 Authentication cancelled"])
        self.assertEqual(self.throttle.failures(ip=self.proto.peerIP), 1)

    def test_plainWithEmptyInitialResponseAndCancel(self):
        self.startTLS()
        self.send(b"AUTH PLAIN\r\n")
        self.assertEqual(self.replies(), ["334 "])
        self.send(b"*\r\n")
        self.assertEqual(self.replies(), ["501 5.0.0 Authentication cancelled"])
        self.send(b"AUTH PLAIN not-base64!\r\n")
        self.assertEqual(self.replies(), ["501 5.5.2 Invalid base64 data"])

    def test_failuresAreAnsweredLaterAndLaterThenRefused(self):
        self.startTLS()
        for delay in (0.5, 1.0, 2.0):
            self.send(b"AUTH PLAIN " + plain("alice@example.test", "bad") + b"\r\n")
            self.clock.advance(delay - 0.01)
            self.assertEqual(self.replies(), [])  # not yet
            self.clock.advance(0.01)
            self.assertEqual(
                self.replies(), ["535 5.7.8 Authentication credentials invalid"]
            )
        self.send(b"AUTH PLAIN " + plain("alice@example.test", "pw") + b"\r\n")
        self.assertEqual(
            self.replies(), ["454 4.7.0 Too many failed logins, try later"]
        )
        self.assertEqual(self.throttle.failures(ip=self.proto.peerIP), 3)
        self.clock.advance(901)  # the failures age out
        self.assertEqual(self.throttle.failures(ip=self.proto.peerIP), 0)

    def test_onlyOwnSenderAddress(self):
        self.login()
        self.send(b"MAIL FROM:<carol@example.test>\r\n")
        self.assertEqual(
            self.replies(), ["553 5.7.1 Sender address not owned by alice@example.test"]
        )
        self.send(b"MAIL FROM:<Alice@Example.test>\r\n")
        self.assertEqual(self.replies(), ["250 2.1.0 Sender OK"])
        self.send(b"RSET\r\nMAIL FROM:<Sales@example.test>\r\n")
        self.assertEqual(self.replies(), ["250 2.0.0 Reset OK", "250 2.1.0 Sender OK"])

    def test_relaysForTheUserAndStoresOnce(self):
        self.login()
        self.send(
            b"MAIL FROM:<alice@example.test>\r\n"
            b"RCPT TO:<bob@remote.example>\r\n"
            b"RCPT TO:<carol@example.test>\r\n"
            b"RCPT TO:<nobody@example.test>\r\n"
            b"DATA\r\n"
        )
        self.assertEqual(
            self.replies(),
            [
                "250 2.1.0 Sender OK",
                "250 2.1.5 Recipient OK",
                "250 2.1.5 Recipient OK",
                "550 5.1.1 Recipient address rejected: no such user",
                "354 End data with <CR><LF>.<CR><LF>",
            ],
        )
        self.send(
            b"From: Alice <alice@example.test>\r\nSubject: hi\r\n\r\nbody\r\n.\r\n"
        )
        self.assertEqual(self.codes(), ["250"])
        [(envelope, raw)] = self.store.messages.values()
        self.assertEqual(envelope.outbound, ["bob@remote.example"])
        self.assertEqual(
            [(r.address, r.mailbox or envelope.mailbox) for r in envelope.recipients],
            [("alice@example.test", "sent"), ("carol@example.test", "inbox")],
        )
        self.assertEqual(envelope.authenticatedAs, "alice@example.test")
        self.assertIn(b"with ESMTPSA", raw)

    def test_fromHeaderMustBeTheAccountsToo(self):
        self.login()
        for header, reply in (
            (b"From: Carol <carol@example.test>", "553 5.7.1 From: carol@example.test"),
            (b"X-No-From: 1", "554 5.6.0 A From: header is required"),
            (b"From: sales@example.test", "250 2.0.0 Ok"),
        ):
            self.send(
                b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@remote.example>\r\n"
                b"DATA\r\n" + header + b"\r\nSubject: s\r\n\r\nbody\r\n.\r\n"
            )
            self.assertTrue(self.replies()[-1].startswith(reply))

    def test_dailyLimit(self):
        self.login()
        self.sent = 2
        self.send(b"MAIL FROM:<alice@example.test>\r\n")
        self.assertEqual(self.replies(), ["451 4.7.1 Daily sending limit reached"])


class LongLineTests(SynchronousTestCase):
    """hasLongLine agrees with the plain definition (split on LF, measure)."""

    def reference(self, chunk: bytes, limit: int) -> bool:
        return max(map(len, chunk.split(b"\n"))) >= limit

    def test_boundaries(self):
        for length in (0, 1, 998, 999, 1000, 1001, 1999, 2000, 2001, 5000):
            for before in (b"", b"ab\r\n", b"x" * 700 + b"\r\n"):
                for after in (b"", b"\r\n", b"\r\nshort\r\n"):
                    chunk = before + b"y" * length + after
                    self.assertEqual(
                        hasLongLine(chunk, MAX_TEXT_LINE),
                        self.reference(chunk, MAX_TEXT_LINE),
                        (len(before), length, after),
                    )

    def test_manyShortLinesAndOneLongOneAnywhere(self):
        base = b"".join(b"%075d\r\n" % i for i in range(900))
        self.assertFalse(hasLongLine(base, MAX_TEXT_LINE))
        for at in range(0, len(base), 4099):
            cut = base.find(b"\n", at) + 1
            chunk = base[:cut] + b"z" * 999 + b"\r\n" + base[cut:]
            self.assertTrue(hasLongLine(chunk, MAX_TEXT_LINE), at)


class DataStageTests(ProtocolTestCase):
    """The session runs the policy pipeline's DATA stage before storing."""

    def extraFactoryArgs(self) -> dict:
        self.first = FakePolicyCheck()
        self.second = FakePolicyCheck()
        return {"policy": SessionPolicy(data=[self.first, self.second])}

    def test_everyCheckSeesTheTransactionThenTheMessageIsStored(self):
        self.ehlo()
        self.transaction()
        self.replies()
        self.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(self.codes(), ["250"])
        [seen] = self.first.seen
        self.assertEqual(seen.envelope.mailFrom, "bob@example.org")
        self.assertEqual(len(self.second.seen), 1)
        self.assertEqual(len(self.store.messages), 1)

    def test_aRefusalIsTheReplyAndLaterChecksDoNotRun(self):
        self.first.verdict = Verdict.refuse(550, "5.7.1", "Not from here", "dmarc")
        self.ehlo()
        self.transaction()
        self.replies()
        self.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(self.replies(), ["550 5.7.1 Not from here"])
        self.assertEqual(self.second.seen, [])
        self.assertEqual(self.store.messages, {})
        self.assertEqual(self.metrics.smtpRejections.labels("dmarc")._value.get(), 1)
