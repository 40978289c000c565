"""The IMAP state machine, driven through StringTransport and a Clock."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.mail.imap4 import IllegalClientResponse, MailboxCollision, NoSuchMailbox
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from mailraven.imap.condstore import parseFetchArguments, parseStoreMode
from mailraven.imap.factory import IMAPFactory
from mailraven.imap.server import IMAPSettings
from mailraven.policy.logins import LoginLimiter
from mailraven.spool import Spool
from mailraven.testing import MemoryUserStore


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    tlsStarted = None

    def startTLS(self, contextFactory):
        self.tlsStarted = contextFactory


@dataclass
class Folder:
    name: str
    attributes: list[str] = field(default_factory=list)
    subscribed: bool = True


class FakeMailbox:
    """An empty selected folder."""

    keywords: list[str] = []
    uidValidity = 7
    uidNext = 1
    highestModseq = 5
    name = "INBOX"

    def __init__(self, writeable):
        self.writeable = writeable
        self.expunged = 0
        self.changes: list[tuple] = []
        self.refreshes = 0

    def refresh(self):
        self.refreshes += 1
        return succeed(self.changes.pop(0) if self.changes else ([], None, {}))

    def getUID(self, seq):
        return seq

    def getMessageCount(self):
        return 0

    def firstUnseen(self):
        return None

    def isWriteable(self):
        return self.writeable

    uids: list[int] = []
    rows: dict = {}

    def resolve(self, messages, uid):
        return []

    def expunge(self, uids=None):
        self.expunged += 1
        return succeed([])


class FakeAccount:
    """INBOX and Sent; takes APPENDs into INBOX only."""

    def __init__(self):
        self.appended: list[tuple] = []
        self.folders = [Folder("INBOX"), Folder("Sent", ["\\Sent"], False)]
        self.selected: list[FakeMailbox] = []
        self.state = (5, 1)

    def folderState(self, name):
        return succeed(self.state)

    def listFolders(self):
        return succeed(self.folders)

    def _find(self, name):
        return next((f for f in self.folders if f.name == name), None)

    def create(self, name):
        if self._find(name) is not None:
            return fail(MailboxCollision(name))
        self.folders.append(Folder(name))
        return succeed(None)

    def delete(self, name):
        self.folders.remove(self._find(name))

    def rename(self, old, new):
        self._find(old).name = new

    def subscribe(self, name):
        self._find(name).subscribed = True

    def unsubscribe(self, name):
        self._find(name).subscribed = False

    def status(self, name):
        if self._find(name) is None:
            return succeed(None)
        return succeed(dict(MESSAGES=2, RECENT=0, UIDNEXT=3, UIDVALIDITY=7, UNSEEN=1))

    def select(self, name, writeable):
        if self._find(name) is None:
            return succeed(None)
        self.selected.append(FakeMailbox(writeable))
        return succeed(self.selected[-1])

    def append(self, name, spool, flags, date):
        if name != "INBOX":
            return fail(NoSuchMailbox(name))
        self.appended.append((name, b"".join(spool.chunks()), flags, date))
        return succeed(b"[APPENDUID 1 %d]" % len(self.appended))


class SlowUsers(MemoryUserStore):
    """Password checks wait until the test fires them."""

    def __init__(self):
        super().__init__()
        self.waiting: list[tuple[Deferred, str, str]] = []

    def authenticate(self, email, password):
        d = Deferred()
        self.waiting.append((d, email, password))
        return d

    def fireAll(self):
        while self.waiting:
            d, email, password = self.waiting.pop(0)
            MemoryUserStore.authenticate(self, email, password).chainDeferred(d)


def plain(login: str, password: str) -> bytes:
    return base64.b64encode(f"\0{login}\0{password}".encode())


class IMAPTestCase(SynchronousTestCase):
    maxMessageSize = 1000

    def setUp(self):
        self.clock = Clock()
        self.users = self.makeUsers()
        self.users.add("alice@example.test", "pw")
        self.limiter = LoginLimiter(self.clock, ipFailures=3)
        self.account = FakeAccount()
        self.spools: list[Spool] = []
        self.discarded: list[Spool] = []
        self.factory = IMAPFactory(
            IMAPSettings("mx.example.test", self.maxMessageSize, maxPerAccount=2),
            users=self.users,
            logins=self.limiter,
            accounts=lambda userId, email: self.account,
            spoolFactory=self.newSpool,
            discardSpool=self.discarded.append,
            clock=self.clock,
            tlsContext=object(),
        )
        self.proto, self.transport = self.connect()

    def makeUsers(self):
        return MemoryUserStore()

    def newSpool(self) -> Spool:
        spool = Spool("", None, None, memoryLimit=1 << 30)
        self.spools.append(spool)
        return spool

    def connect(self):
        proto = self.factory.buildProtocol(None)
        transport = TLSStringTransport()
        proto.makeConnection(transport)
        greeting = transport.value().decode()
        transport.clear()
        self.assertTrue(greeting.startswith("* OK [CAPABILITY IMAP4rev1 "), greeting)
        return proto, transport

    def send(self, data: bytes, proto=None) -> None:
        (proto or self.proto).dataReceived(data)
        self.clock.advance(0)
        # FETCH streams literals through a pull producer, as TCP would pull
        while self.transport.producer is not None:
            self.transport.producer.resumeProducing()
            self.clock.advance(0)

    def replies(self, transport=None) -> list[str]:
        transport = transport or self.transport
        out = transport.value().decode("utf-8", "replace")
        transport.clear()
        return out.splitlines()

    def startTLS(self) -> None:
        self.send(b"t STARTTLS\r\n")
        self.assertEqual(self.replies(), ["t OK Begin TLS negotiation now"])

    def login(self) -> None:
        self.startTLS()
        self.send(b"l LOGIN alice@example.test pw\r\n")
        [reply] = self.replies()
        self.assertTrue(reply.startswith("l OK [CAPABILITY "), reply)


class BeforeTLSTests(IMAPTestCase):
    def test_capabilitiesBeforeTLSDisableLogin(self):
        self.send(b"a CAPABILITY\r\n")
        caps, done = self.replies()
        self.assertEqual(done, "a OK CAPABILITY completed")
        words = caps.split()
        self.assertIn("STARTTLS", words)
        self.assertIn("LOGINDISABLED", words)
        self.assertFalse([w for w in words if w.startswith("AUTH=")], words)

    def test_loginBeforeTLSIsRefusedWithoutCheckingThePassword(self):
        self.users = SlowUsers()
        self.factory.users = self.users
        self.send(b"a LOGIN alice@example.test pw\r\n")
        self.send(
            b"b AUTHENTICATE PLAIN " + plain("alice@example.test", "pw") + b"\r\n"
        )
        self.assertEqual(
            self.replies(),
            [
                "a NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS",
                "b NO [PRIVACYREQUIRED] AUTHENTICATE is disabled before STARTTLS",
            ],
        )
        self.assertEqual(self.users.waiting, [])

    def test_commandsPipelinedAfterStartTLSAreDiscarded(self):
        self.send(b"a STARTTLS\r\nb CAPABILITY\r\nc LOGIN alice@example.test pw\r\n")
        self.assertEqual(self.replies(), ["a OK Begin TLS negotiation now"])
        self.assertIsNotNone(self.transport.tlsStarted)
        self.assertEqual(self.proto.state, "unauth")
        # what comes next (decrypted, in the real thing) is read as usual
        self.send(b"d NOOP\r\n")
        self.assertEqual(self.replies(), ["d OK NOOP No operation performed"])

    def test_capabilitiesChangeUnderTLS(self):
        self.startTLS()
        self.send(b"a CAPABILITY\r\n")
        caps = self.replies()[0].split()
        self.assertIn("AUTH=PLAIN", caps)
        self.assertIn("SASL-IR", caps)
        self.assertNotIn("STARTTLS", caps)
        self.assertNotIn("LOGINDISABLED", caps)
        self.send(b"b STARTTLS\r\n")
        self.assertEqual(self.replies(), ["b NO TLS is already active"])


class LoginTests(IMAPTestCase):
    def test_loginUnderTLS(self):
        self.login()
        self.assertEqual(self.proto.state, "auth")
        self.assertEqual(self.proto.email, "alice@example.test")

    def test_authenticatePlainWithContinuation(self):
        self.startTLS()
        self.send(b"a AUTHENTICATE PLAIN\r\n")
        self.assertEqual(self.replies(), ["+ "])
        self.send(plain("alice@example.test", "pw") + b"\r\n")
        [reply] = self.replies()
        self.assertTrue(reply.startswith("a OK [CAPABILITY "), reply)

    def test_authenticatePlainWithInitialResponse(self):
        self.startTLS()
        self.send(
            b"a AUTHENTICATE PLAIN " + plain("alice@example.test", "pw") + b"\r\n"
        )
        self.assertTrue(self.replies()[0].startswith("a OK "))

    def test_authenticateCancelledOrMalformed(self):
        self.startTLS()
        self.send(b"a AUTHENTICATE PLAIN\r\n*\r\n")
        self.send(b"b AUTHENTICATE PLAIN !!!\r\n")
        self.send(b"c AUTHENTICATE CRAM-MD5\r\n")
        self.assertEqual(
            self.replies(),
            [
                "+ ",
                "a BAD AUTHENTICATE cancelled",
                "b BAD Invalid PLAIN response",
                "c NO Unsupported authentication mechanism",
            ],
        )

    def test_wrongPasswordIsAnsweredAfterADelay(self):
        self.startTLS()
        self.send(b"a LOGIN alice@example.test wrong\r\n")
        self.assertEqual(self.replies(), [])
        self.clock.advance(0.5)
        self.assertEqual(
            self.replies(), ["a NO [AUTHENTICATIONFAILED] Authentication failed"]
        )
        self.assertEqual(self.proto.state, "unauth")

    def test_commandsWaitForTheLoginInFlight(self):
        self.users = SlowUsers()
        self.users.add("alice@example.test", "pw")
        self.factory.users = self.users
        self.startTLS()
        self.send(b"a LOGIN alice@example.test pw\r\nb NAMESPACE\r\n")
        self.assertEqual(self.replies(), [])
        self.users.fireAll()
        self.clock.advance(0)
        lines = self.replies()
        self.assertTrue(lines[0].startswith("a OK "), lines)
        self.assertEqual(
            lines[1:], ['* NAMESPACE (("" "/")) NIL NIL', "b OK NAMESPACE completed"]
        )

    def test_parallelGuessesGetAtMostTheBudgetOfPasswordChecks(self):
        self.users = SlowUsers()
        self.users.add("alice@example.test", "pw")
        self.factory.users = self.users
        sessions = [self.connect() for _ in range(10)]
        for proto, _transport in sessions:
            proto.dataReceived(b"t STARTTLS\r\n")
            proto.dataReceived(b"a LOGIN alice@example.test guess\r\n")
        self.assertEqual(len(self.users.waiting), self.limiter.ipFailures)
        self.users.fireAll()
        self.clock.advance(10)
        answers = [self.replies(t)[-1] for _, t in sessions]
        self.assertEqual(
            answers.count("a NO [AUTHENTICATIONFAILED] Authentication failed"), 3
        )
        self.assertEqual(
            answers.count("a NO [UNAVAILABLE] Too many failed logins, try later"), 7
        )

    def test_aSessionLostWhileCheckingCountsAsAFailure(self):
        self.users = SlowUsers()
        self.users.add("alice@example.test", "pw")
        self.factory.users = self.users
        self.startTLS()
        self.send(b"a LOGIN alice@example.test guess\r\n")
        self.proto.connectionLost(None)
        self.assertEqual(self.limiter.failures(ip=self.proto.peerIP), 1)
        self.users.fireAll()

    def test_perAccountConnectionCap(self):
        self.login()
        second, secondTransport = self.connect()
        second.dataReceived(b"t STARTTLS\r\n")
        second.dataReceived(b"l LOGIN alice@example.test pw\r\n")
        self.clock.advance(0)
        self.assertTrue(self.replies(secondTransport)[-1].startswith("l OK "))
        third, thirdTransport = self.connect()
        third.dataReceived(b"t STARTTLS\r\n")
        third.dataReceived(b"l LOGIN alice@example.test pw\r\n")
        self.assertEqual(
            self.replies(thirdTransport)[-1],
            "l NO [LIMIT] Too many connections for this account",
        )
        second.connectionLost(None)
        third.dataReceived(b"m LOGIN alice@example.test pw\r\n")
        self.assertTrue(self.replies(thirdTransport)[-1].startswith("m OK "))


class InputTests(IMAPTestCase):
    def test_lineTooLongIsRefusedAndTheSessionClosed(self):
        self.send(b"a NOOP " + b"x" * (self.proto.MAX_LENGTH + 10))
        self.assertEqual(
            self.replies(),
            ["* BAD Command line too long", "* BYE Closing the connection"],
        )
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.proto._buffer, b"")

    def test_unterminatedLinesDoNotGrowTheBuffer(self):
        for _ in range(10):
            self.send(b"y" * 10000)
        self.assertLessEqual(len(self.proto._buffer), self.proto.MAX_LENGTH)

    def test_stringLiteralsAreCapped(self):
        self.startTLS()
        self.send(b"a LOGIN {5000}\r\n")
        [reply] = self.replies()
        self.assertTrue(reply.startswith("a BAD Illegal syntax: Literal too long"))

    def test_malformedCommandsAreAnsweredNeverATraceback(self):
        self.login()
        lines = [
            b"",
            b"   ",
            b"a",
            b"\xff\xfe NOOP",
            b"a \xffNOOP",
            b"a NO\x00OP",
            b"a SELECT \xff\xfe",
            b"a SELECT &Jjo",
            b"a CREATE \xc3\x28",
            b"a LIST \xff *",
            b"a STATUS INBOX (\xff)",
            b"a APPEND INBOX (\\\xff) {3}",
            b'a APPEND INBOX "31-Foo-2020 00:00:00 +0000" {3}',
            b"a APPEND INBOX (\\Seen {3}",
            b"a APPEND INBOX {abc}",
            b"a APPEND INBOX {3++}",
            b'a ID ("name")',
            b"a ID (((",
            b"a FETCH 1 (FLAGS)",
            b"a UID \xff 1",
            b"a LOGIN",
            b'a LOGIN "unterminated',
            b"a {3}",
        ]
        for line in lines:
            self.send(line + b"\r\n")
            out = self.replies()
            self.assertTrue(out, line)
            self.assertTrue(out[-1].startswith(("a BAD", "a NO", "* BAD")), (line, out))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertFalse(self.transport.disconnecting)

    def test_idAnswersWithOurName(self):
        self.send(b'a ID ("name" "imaplib")\r\nb ID NIL\r\n')
        self.assertEqual(
            self.replies(),
            [
                '* ID ("name" "MailRaven")',
                "a OK ID completed",
                '* ID ("name" "MailRaven")',
                "b OK ID completed",
            ],
        )

    def test_namespaceNamesThePersonalNamespaceOnce(self):
        self.login()
        self.send(b"a NAMESPACE\r\n")
        self.assertEqual(
            self.replies(),
            ['* NAMESPACE (("" "/")) NIL NIL', "a OK NAMESPACE completed"],
        )

    def test_idleIsOffered(self):
        self.send(b"a CAPABILITY\r\n")
        self.assertIn("IDLE", self.replies()[0].split())


class TimeoutTests(IMAPTestCase):
    def test_autologoutBeforeLoginIsShort(self):
        self.clock.advance(self.factory.settings.loginTimeout)
        self.assertEqual(self.replies(), ["* BYE Autologout; connection idle too long"])
        self.assertTrue(self.transport.disconnecting)

    def test_aLiteralNeverSentDoesNotHoldTheSession(self):
        """Found by an attacker: announcing a literal and never sending it
        kept a session open past the autologout, forever (1000 such took
        every slot); a negative size was taken too."""
        self.send(b"a LOGIN {5}\r\n")
        self.assertEqual(self.replies(), ["+ Ready for 5 octets of text"])
        self.clock.advance(self.factory.settings.loginTimeout)
        self.assertIn("* BYE Autologout; connection idle too long", self.replies())
        self.assertTrue(self.transport.disconnecting)
        proto, transport = self.connect()
        self.send(b"b LOGIN {-1}\r\n", proto)
        [reply] = self.replies(transport)
        self.assertTrue(reply.startswith("b BAD "), reply)

    def test_oneClientCannotHoldEverySession(self):
        """Sessions of one IP (logged in or not) are capped, so one client
        cannot take the server's slots; a closed one frees its slot."""
        self.factory.settings.maxPerIP = 2
        first, _ = self.connect()  # the fixture's session is the other one
        proto = self.factory.buildProtocol(None)
        transport = TLSStringTransport()
        proto.makeConnection(transport)
        self.assertEqual(
            transport.value(), b"* BYE Too many connections, try again later\r\n"
        )
        first.connectionLost(None)
        self.connect()  # greeted again

    def test_autologoutAfterLoginIsThirtyMinutes(self):
        self.login()
        self.clock.advance(29 * 60)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(60)
        self.assertTrue(self.transport.disconnecting)


class AppendTests(IMAPTestCase):
    message = b"Subject: hi\r\n\r\nhello\r\n"

    def test_appendWithoutFlagList(self):
        self.login()
        self.send(b"a APPEND INBOX {%d}\r\n" % len(self.message))
        self.assertEqual(self.replies(), ["+ Ready for literal data"])
        self.send(self.message + b"\r\n")
        self.assertEqual(self.replies(), ["a OK [APPENDUID 1 1] APPEND completed"])
        self.assertEqual(self.account.appended, [("INBOX", self.message, [], None)])

    def test_appendWithFlagsAndDate(self):
        self.login()
        self.send(
            b'a APPEND INBOX (\\Seen $Label1) " 7-Feb-1994 21:52:25 -0800" {%d}\r\n'
            % len(self.message)
            + self.message
            + b"\r\nb NOOP\r\n"
        )
        self.assertEqual(
            self.replies(),
            [
                "+ Ready for literal data",
                "a OK [APPENDUID 1 1] APPEND completed",
                "b OK NOOP completed",
            ],
        )
        [(_, _, flags, date)] = self.account.appended
        self.assertEqual(flags, ["\\Seen", "$Label1"])
        self.assertEqual(date.isoformat(), "1994-02-07T21:52:25-08:00")

    def test_appendToAMissingFolderSaysTryCreate(self):
        self.login()
        self.send(b"a APPEND Nowhere {%d}\r\n" % len(self.message))
        self.send(self.message + b"\r\n")
        self.assertEqual(self.replies()[-1], "a NO [TRYCREATE] No such mailbox")

    def test_appendOverTheLimitIsRefusedBeforeTheLiteral(self):
        self.login()
        self.send(b"a APPEND INBOX {%d}\r\n" % (self.maxMessageSize + 1))
        self.assertEqual(self.replies(), ["a NO [TOOBIG] Message is too large"])
        self.assertEqual(self.spools, [])

    def test_appendLimitIsAdvertised(self):
        self.send(b"a CAPABILITY\r\n")
        self.assertIn(f"APPENDLIMIT={self.maxMessageSize}", self.replies()[0])

    def test_aSessionLostMidAppendLeavesNothing(self):
        self.login()
        self.send(b"a APPEND INBOX {%d}\r\n" % len(self.message))
        self.send(self.message[:5])
        self.proto.connectionLost(None)
        self.assertEqual(self.discarded, self.spools)
        self.assertEqual(self.account.appended, [])


class FolderCommandTests(IMAPTestCase):
    def setUp(self):
        super().setUp()
        self.login()

    def test_listShowsAttributesAndMatchesPatterns(self):
        self.send(b'a LIST "" *\r\nb LIST "" S%\r\nc LIST "" ""\r\n')
        self.assertEqual(
            self.replies(),
            [
                '* LIST () "/" INBOX',
                '* LIST (\\Sent) "/" Sent',
                "a OK LIST completed",
                '* LIST (\\Sent) "/" Sent',
                "b OK LIST completed",
                '* LIST (\\Noselect) "/" ""',
                "c OK LIST completed",
            ],
        )

    def test_lsubShowsSubscribedOnly(self):
        self.send(b'a LSUB "" *\r\nb SUBSCRIBE Sent\r\nc LSUB "" *\r\n')
        self.assertEqual(
            self.replies(),
            [
                '* LSUB () "/" INBOX',
                "a OK LSUB completed",
                "b OK SUBSCRIBE completed",
                '* LSUB () "/" INBOX',
                '* LSUB (\\Sent) "/" Sent',
                "c OK LSUB completed",
            ],
        )

    def test_createRenameDelete(self):
        self.send(b"a CREATE Work\r\nb CREATE Work\r\n")
        self.send(b'c RENAME Work "Caf&AOk-"\r\nd LIST "" Caf*\r\n')
        self.send(b"e DELETE Caf&AOk-\r\n")
        self.assertEqual(
            self.replies(),
            [
                "a OK CREATE completed",
                "b NO Mailbox named Work already exists",
                "c OK RENAME completed",
                '* LIST () "/" Caf&AOk-',
                "d OK LIST completed",
                "e OK DELETE completed",
            ],
        )
        self.assertEqual([f.name for f in self.account.folders], ["INBOX", "Sent"])

    def test_statusAnswersTheItemsAsked(self):
        self.send(b"a STATUS inbox (UIDNEXT MESSAGES)\r\nb STATUS Nope (MESSAGES)\r\n")
        self.send(b"c STATUS INBOX (SIZE)\r\n")
        self.assertEqual(
            self.replies(),
            [
                "* STATUS INBOX (UIDNEXT 3 MESSAGES 2)",
                "a OK STATUS completed",
                "b NO No such mailbox",
                "c BAD Unknown STATUS item",
            ],
        )

    def test_selectSaysUidValidityUidNextAndPermanentFlags(self):
        self.send(b"a SELECT INBOX\r\n")
        lines = self.replies()
        self.assertIn("* OK [UIDVALIDITY 7] UIDs valid", lines)
        self.assertIn("* OK [UIDNEXT 1] Predicted next UID", lines)
        self.assertIn("* OK [HIGHESTMODSEQ 5] Highest", lines)
        self.assertIn("* 0 EXISTS", lines)
        self.assertIn(
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen"
            " \\Draft \\*)] Limited",
            lines,
        )
        self.assertEqual(lines[-1], "a OK [READ-WRITE] SELECT completed")
        self.assertEqual(self.proto.state, "select")

    def test_examineIsReadOnlyAndCloseDoesNotExpungeIt(self):
        self.send(b"a EXAMINE INBOX\r\nb CLOSE\r\n")
        lines = self.replies()
        self.assertEqual(
            lines[-2:], ["a OK [READ-ONLY] EXAMINE completed", "b OK CLOSE completed"]
        )
        self.assertEqual(self.account.selected[0].expunged, 0)
        self.assertEqual(self.proto.state, "auth")

    def test_closeExpungesUnselectDoesNot(self):
        self.send(b"a SELECT INBOX\r\nb CLOSE\r\nc SELECT INBOX\r\nd UNSELECT\r\n")
        self.assertEqual(self.replies()[-1], "d OK UNSELECT completed")
        first, second = self.account.selected
        self.assertEqual((first.expunged, second.expunged), (1, 0))

    def test_malformedSelectedStateCommandsAreAnswered(self):
        self.send(b"s SELECT INBOX\r\n")
        self.replies()
        lines = [
            b"a FETCH",
            b"a FETCH 1 (FOO)",
            b"a FETCH x FLAGS",
            b"a FETCH 1 BODY[",
            b"a FETCH 1 (BODY[]<a.b>)",
            b"a FETCH 0:-1 FLAGS",
            b"a STORE 1 FOO (\\Seen)",
            b"a STORE 1 +FLAGS (\\Seen",
            b"a STORE 1 +FLAGS (\\\xff)",
            b"a SEARCH FOO",
            b"a SEARCH (",
            b"a SEARCH",
            b"a SEARCH LARGER x",
            b"a SEARCH CHARSET KOI8-R ALL",
            b"a SEARCH SINCE 31-Foo-2020",
            b"a UID FOO 1",
            b"a UID FETCH",
            b"a UID EXPUNGE x",
            b"a COPY 1",
            b"a MOVE",
            b"a EXPUNGE extra",
        ]
        for line in lines:
            self.send(line + b"\r\n")
            out = self.replies()
            self.assertTrue(out, line)
            self.assertTrue(out[-1].startswith(("a BAD", "a NO")), (line, out))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_deeplyNestedSearchIsBadNotATraceback(self):
        """NOT, OR and parentheses nest at most 50 deep: clean BAD past it."""
        self.send(b"s SELECT INBOX\r\n")
        self.replies()
        for criteria in (
            b"NOT " * 1000 + b"ALL",
            b"OR ALL " * 1000 + b"ALL",
            b"(" * 1000 + b"ALL" + b")" * 1000,
            b"OR ALL",
        ):
            self.send(b"a SEARCH " + criteria + b"\r\n")
            out = self.replies()
            self.assertTrue(out[-1].startswith("a BAD"), (criteria[:20], out))
        self.send(b"b SEARCH " + b"NOT " * 40 + b"ALL\r\n")
        self.assertEqual(self.replies()[-1], "b OK SEARCH completed")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_selectMissingFolder(self):
        self.send(b"a SELECT Nope\r\n")
        self.assertEqual(self.replies(), ["a NO No such mailbox"])


class CondstoreParsingTests(SynchronousTestCase):
    def test_fetchItemsAndModifier(self):
        query, modseq, since = parseFetchArguments(b"(FLAGS MODSEQ) (CHANGEDSINCE 12)")
        self.assertEqual(
            ([p.type for p in query], modseq, since), (["flags"], True, 12)
        )
        self.assertEqual(parseFetchArguments(b"MODSEQ"), ([], True, None))
        query, modseq, since = parseFetchArguments(b"(UID BODY.PEEK[])")
        self.assertEqual(
            ([p.type for p in query], modseq, since), (["uid", "body"], False, None)
        )
        self.assertRaises(IllegalClientResponse, parseFetchArguments, b"()")

    def test_storeUnchangedSince(self):
        self.assertEqual(
            parseStoreMode(b"(UNCHANGEDSINCE 3) +FLAGS (\\Seen)"),
            ((b"+FLAGS", 3), b"(\\Seen)"),
        )
        self.assertEqual(parseStoreMode(b"FLAGS ()"), ((b"FLAGS", None), b"()"))


class EnableTests(IMAPTestCase):
    def test_enableCondstoreOnlyBeforeSelect(self):
        self.login()
        self.send(b"a ENABLE CONDSTORE\r\nb ENABLE UTF8=ACCEPT\r\n")
        self.send(b"c SELECT INBOX\r\nd ENABLE CONDSTORE\r\n")
        lines = self.replies()
        self.assertEqual(
            lines[:4],
            [
                "* ENABLED CONDSTORE",
                "a OK ENABLE completed",
                "* ENABLED",
                "b OK ENABLE completed",
            ],
        )
        self.assertEqual(lines[-1], "d BAD Unsupported command")
        self.assertTrue(self.proto.condstore)


class IdleTests(IMAPTestCase):
    def setUp(self):
        super().setUp()
        self.login()
        self.send(b"s SELECT INBOX\r\n")
        self.replies()
        self.mbox = self.account.selected[-1]

    def test_changesArePushedUntilDone(self):
        self.send(b"a IDLE\r\n")
        self.assertEqual(self.replies(), ["+ idling"])
        self.mbox.changes.append(([2], 3, {1: ["\\Seen"]}))
        self.factory.changes.publish(self.proto.userId, "new")
        self.assertEqual(
            self.replies(),
            ["* 2 EXPUNGE", "* 3 EXISTS", "* 1 FETCH (FLAGS (\\Seen) UID 1)"],
        )
        self.send(b"DONE\r\nb NOOP\r\n")
        self.assertEqual(
            self.replies(), ["a OK IDLE terminated", "b OK NOOP completed"]
        )
        refreshes = self.mbox.refreshes
        self.factory.changes.publish(self.proto.userId, "new")
        self.assertEqual((self.replies(), self.mbox.refreshes), ([], refreshes))

    def test_anythingButDoneEndsIdleWithBad(self):
        self.send(b"a IDLE\r\nb NOOP\r\n")
        self.assertEqual(self.replies(), ["+ idling", "a BAD Expected DONE"])

    def test_pollingFindsChangesNobodySignalled(self):
        self.send(b"a IDLE\r\n")
        self.replies()
        refreshes = self.mbox.refreshes
        self.clock.advance(self.factory.settings.idlePoll)
        self.assertEqual(self.mbox.refreshes, refreshes)
        self.account.state = (6, 2)
        self.mbox.changes.append(([], 1, {}))
        self.clock.advance(self.factory.settings.idlePoll)
        self.assertEqual(self.replies(), ["* 1 EXISTS"])

    def test_idleSessionsAreLoggedOutAfterThirtyMinutes(self):
        self.send(b"a IDLE\r\n")
        self.replies()
        self.clock.advance(30 * 60)
        self.assertEqual(self.replies(), ["* BYE Autologout; connection idle too long"])
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LiteralPlusTests(IMAPTestCase):
    """RFC 7888: {n+} literals arrive without a continuation."""

    maxMessageSize = 10000
    message = b"Subject: hi\r\n\r\nhello\r\n"

    def test_advertised(self):
        self.send(b"a CAPABILITY\r\n")
        caps = self.replies()[0].split()
        self.assertIn("LITERAL+", caps)
        self.assertNotIn("MULTIAPPEND", caps)

    def test_loginWithNonSynchronizingLiterals(self):
        self.startTLS()
        self.send(b"l LOGIN {18+}\r\nalice@example.test {2+}\r\npw\r\n")
        [reply] = self.replies()
        self.assertTrue(reply.startswith("l OK [CAPABILITY "), reply)

    def test_appendWithoutContinuation(self):
        self.login()
        self.send(
            b"a APPEND INBOX (\\Seen) {%d+}\r\n" % len(self.message)
            + self.message
            + b"\r\nb NOOP\r\n"
        )
        self.assertEqual(
            self.replies(),
            ["a OK [APPENDUID 1 1] APPEND completed", "b OK NOOP completed"],
        )
        self.assertEqual(
            self.account.appended, [("INBOX", self.message, ["\\Seen"], None)]
        )

    def test_oversizedStringLiteralIsReadAndDropped(self):
        """Over 4096 octets: BAD, and the octets are not taken for commands."""
        self.login()
        junk = b"x LOGOUT\r\n" * 500  # 5000 octets
        self.send(b"a SELECT {%d+}\r\n" % len(junk) + junk + b"\r\nb NOOP\r\n")
        replies = self.replies()
        self.assertEqual(len(replies), 2, replies)
        self.assertTrue(replies[0].startswith("a BAD "), replies)
        self.assertEqual(replies[1], "b OK NOOP completed")
        self.assertFalse(self.transport.disconnecting)

    def test_refusedCommandsLiteralIsNotACommand(self):
        """A command refused before its literal (and the rest of its line,
        with a second literal) leaves the next command intact."""
        self.login()
        self.send(b"a NOOP {10+}\r\nb LOGOUT\r\n {3+}\r\nabc\r\nc NOOP\r\n")
        self.assertEqual(
            [r.split()[:2] for r in self.replies()],
            [["a", "BAD"], ["c", "OK"]],
        )

    def test_appendOverTheLimitClosesTheConnection(self):
        self.login()
        self.send(b"a APPEND INBOX {%d+}\r\n" % (self.maxMessageSize + 1) + b"x" * 50)
        self.assertEqual(
            self.replies(),
            [
                "a NO [TOOBIG] Message is too large",
                "* BYE Literal too large, closing the connection",
            ],
        )
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.spools, [])

    def test_beforeLoginALargeLiteralClosesTheConnection(self):
        self.startTLS()
        self.send(b"l LOGIN {5000+}\r\n" + b"x" * 100)
        replies = self.replies()
        self.assertTrue(replies[0].startswith("l BAD "), replies)
        self.assertEqual(replies[1], "* BYE Literal too large, closing the connection")
        self.assertTrue(self.transport.disconnecting)

    def test_multiappendIsRefusedWithoutRunningTheSecondMessage(self):
        self.login()
        second = b"b LOGOUT\r\n"
        self.send(
            b"a APPEND INBOX {%d+}\r\n" % len(self.message)
            + self.message
            + b" {%d+}\r\n" % len(second)
            + second
            + b"\r\nc NOOP\r\n"
        )
        replies = self.replies()
        self.assertEqual([r.split()[:2] for r in replies], [["a", "BAD"], ["c", "OK"]])
        self.assertEqual(self.account.appended, [])

    def test_searchStringLiteralOverTheLimitIsDropped(self):
        self.login()
        self.send(b"s SELECT INBOX\r\n")
        self.assertTrue(self.replies()[-1].startswith("s OK "))
        junk = b"x LOGOUT\r\n" * 500
        self.send(b"a SEARCH BODY {%d+}\r\n" % len(junk) + junk + b"\r\nb NOOP\r\n")
        replies = self.replies()
        self.assertEqual(
            [r.split()[:2] for r in replies if r[0] != "*"], [["a", "BAD"], ["b", "OK"]]
        )
