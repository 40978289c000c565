"""The addresses operators expect, end to end through SMTP: plus-addresses,
role addresses, aliases and catch-alls (docs/addresses.md)."""

from __future__ import annotations

import contextlib
import io
import os

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailraven import cli
from mailraven.backup import createBackup, restoreBackup
from mailraven.smtp.recipients import DIRECTORY_MAX_AGE
from tests.helpers import RunningServer, sendWithSmtplib, sleep
from tests.test_local_delivery import submitRaw
from tests.test_mobile_api import APIClient
from tests.test_smtp_e2e import finals, rawSession

MESSAGE = (
    b"From: Bob <bob@example.org>\r\nTo: someone@example.test\r\n"
    b"Subject: hello\r\n\r\nHi!\r\n"
)


def send(server: RunningServer, recipients: list[str]):
    """Deferred (refused recipients, reply to the dot) of one smtplib session."""
    return deferToThread(
        sendWithSmtplib, server.smtpPort, "bob@example.org", recipients, MESSAGE
    )


class PlusAddressTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")

    @inlineCallbacks
    def test_plusAddressIsDeliveredAndTagged(self):
        """alice+news@ reaches alice; the API shows the address and the tag."""
        refused, (code, _) = yield send(self.server, ["Alice+News@example.test"])
        self.assertEqual((refused, code), ({}, 250))
        api = APIClient(self, self.server.apiPort)
        yield api.login()
        page = yield api.json("GET", "/messages")
        [entry] = page["messages"]
        self.assertEqual(entry["recipient"], "Alice+News@example.test")
        self.assertEqual(entry["tag"], "News")
        found = yield api.json("GET", f"/messages/{entry['id']}")
        self.assertEqual(found["tag"], "News")

    @inlineCallbacks
    def test_plainAddressHasNoTag(self):
        yield send(self.server, ["alice@example.test"])
        api = APIClient(self, self.server.apiPort)
        yield api.login()
        page = yield api.json("GET", "/messages")
        self.assertEqual([m["tag"] for m in page["messages"]], [""])

    @inlineCallbacks
    def test_anAccountWithTheDelimiterInItsNameIsItself(self):
        """An account named alice+work@ gets its own mail, untagged."""
        workId = yield self.server.addUser("alice+work@example.test")
        refused, (code, _) = yield send(self.server, ["alice+work@example.test"])
        self.assertEqual(code, 250)
        [entry] = yield self.server.root.store.list(workId, "inbox", 10, 0)
        alices = yield self.server.root.store.list(1, "inbox", 10, 0)
        self.assertEqual(alices, [])

    @inlineCallbacks
    def test_unknownBaseIsStillUnknown(self):
        refused, _ = yield send(self.server, ["nobody+news@example.test"])
        self.assertEqual(refused["nobody+news@example.test"][0], 550)


class DelimiterOffTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self, server__recipient_delimiter="")
        yield self.server.addUser("alice@example.test")

    @inlineCallbacks
    def test_plusAddressIsUnknownWhenOff(self):
        refused, _ = yield send(self.server, ["alice+news@example.test"])
        self.assertEqual(refused["alice+news@example.test"][0], 550)


class OtherDelimiterTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self, server__recipient_delimiter="-")
        yield self.server.addUser("alice@example.test")

    @inlineCallbacks
    def test_configuredDelimiterIsUsed(self):
        refused, (code, _) = yield send(
            self.server, ["alice-news@example.test", "alice+news@example.test"]
        )
        self.assertEqual(code, 250)
        self.assertEqual(list(refused), ["alice+news@example.test"])


class RoleAddressTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self, server__postmaster="carol@example.test")
        yield self.server.addUser("alice@example.test")
        self.carol = yield self.server.addUser("carol@example.test")

    @inlineCallbacks
    def test_abuseReachesTheAdminOfEveryLocalDomain(self):
        """RFC 2142: abuse@ exists beside postmaster@ in every local domain
        (here example.test and localhost), delivered to server.postmaster."""
        refused, (code, _) = yield send(
            self.server, ["abuse@example.test", "Abuse@localhost"]
        )
        self.assertEqual((refused, code), ({}, 250))
        entries = yield self.server.root.store.list(self.carol, "inbox", 10, 0)
        self.assertEqual(
            sorted(e["recipient"] for e in entries), ["abuse@example.test"]
        )
        alices = yield self.server.root.store.list(1, "inbox", 10, 0)
        self.assertEqual(alices, [])

    @inlineCallbacks
    def test_withoutServerPostmasterEveryAdminGetsRoleMail(self):
        """server.postmaster unset: postmaster@ and abuse@ reach every admin
        account (one copy each), not the first account; with no admin left,
        the first account."""
        server = RunningServer(self)
        alice = yield server.addUser("alice@example.test")
        bob = yield server.addUser("bob@example.test", admin=True)
        dora = yield server.addUser("dora@example.test", admin=True)
        refused, (code, _) = yield send(server, ["postmaster@example.test"])
        self.assertEqual((refused, code), ({}, 250))
        for userId, expected in ((alice, 0), (bob, 1), (dora, 1)):
            entries = yield server.root.store.list(userId, "inbox", 10, 0)
            self.assertEqual(len(entries), expected, userId)
        yield server.root.users.remove("bob@example.test")
        yield server.root.users.remove("dora@example.test")
        yield seenByTheServer()
        refused, (code, _) = yield send(server, ["abuse@example.test"])
        self.assertEqual((refused, code), ({}, 250))
        entries = yield server.root.store.list(alice, "inbox", 10, 0)
        self.assertEqual([e["recipient"] for e in entries], ["abuse@example.test"])

    @inlineCallbacks
    def test_abuseOfAnotherDomainIsNoRelay(self):
        refused, _ = yield send(self.server, ["abuse@elsewhere.org"])
        self.assertEqual(refused["abuse@elsewhere.org"][0], 554)

    @inlineCallbacks
    def test_anAbuseAccountGetsItsOwnMail(self):
        abuseId = yield self.server.addUser("abuse@example.test")
        refused, (code, _) = yield send(self.server, ["abuse@example.test"])
        self.assertEqual(code, 250)
        [entry] = yield self.server.root.store.list(abuseId, "inbox", 10, 0)
        carols = yield self.server.root.store.list(self.carol, "inbox", 10, 0)
        self.assertEqual(carols, [])


def mailraven(
    dataDir: str, *args: str, out: io.StringIO | None = None
) -> tuple[int, str]:
    """Blocking: the C{mailraven} command in this process; (status, stderr)."""
    err = io.StringIO()
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(out or io.StringIO()),
    ):
        status = cli.main([*args, "--data-dir", dataDir])
    return status, err.getvalue()


def seenByTheServer():
    """Long enough for the resolver to reload what the CLI changed."""
    return sleep(DIRECTORY_MAX_AGE + 0.2)


class AliasTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        self.alice = yield self.server.addUser("alice@example.test")
        self.bob = yield self.server.addUser("bob@example.test")

    def alias(self, *args: str):
        return deferToThread(mailraven, self.server.dataDir, "alias", *args)

    @inlineCallbacks
    def inbox(self, userId: int) -> list[str]:
        entries = yield self.server.root.store.list(userId, "inbox", 10, 0)
        return [e["recipient"] for e in entries]

    @inlineCallbacks
    def test_aliasToTwoAccountsIsStoredOncePerAccount(self):
        """sales@ reaches alice and bob, without a restart; alice, named
        again directly, still gets one copy."""
        refused, _ = yield send(self.server, ["sales@example.test"])
        self.assertEqual(refused["sales@example.test"][0], 550)
        status, _ = yield self.alias(
            "add", "sales@example.test", "alice@example.test", "bob@example.test"
        )
        self.assertEqual(status, 0)
        yield seenByTheServer()
        refused, (code, _) = yield send(
            self.server, ["Sales@example.test", "alice@example.test"]
        )
        self.assertEqual((refused, code), ({}, 250))
        self.assertEqual((yield self.inbox(self.alice)), ["Sales@example.test"])
        self.assertEqual((yield self.inbox(self.bob)), ["Sales@example.test"])

    @inlineCallbacks
    def test_listShowsOneAliasALine(self):
        yield self.alias("add", "sales@example.test", "bob@example.test")
        yield self.alias("add", "Sales@example.test", "alice@example.test")
        yield self.alias("add", "@Example.test", "bob@example.test")
        out = io.StringIO()
        status, err = yield deferToThread(
            mailraven, self.server.dataDir, "alias", "list", out=out
        )
        self.assertEqual(status, 0)
        self.assertEqual(
            out.getvalue().splitlines(),
            [
                "@example.test bob@example.test",
                "sales@example.test alice@example.test bob@example.test",
            ],
        )
        self.assertIn("2 aliases (data dir /", err)

    @inlineCallbacks
    def test_removedAliasIsUnknownAgain(self):
        yield self.alias("add", "sales@example.test", "bob@example.test")
        yield seenByTheServer()
        refused, _ = yield send(self.server, ["sales@example.test"])
        self.assertEqual(refused, {})
        status, _ = yield self.alias("remove", "sales@example.test")
        self.assertEqual(status, 0)
        yield seenByTheServer()
        refused, _ = yield send(self.server, ["sales@example.test"])
        self.assertEqual(refused["sales@example.test"][0], 550)

    @inlineCallbacks
    def test_plusAddressOfAnAlias(self):
        yield self.alias(
            "add", "sales@example.test", "alice@example.test", "bob@example.test"
        )
        yield seenByTheServer()
        refused, (code, _) = yield send(self.server, ["sales+eu@example.test"])
        self.assertEqual((refused, code), ({}, 250))
        api = APIClient(self, self.server.apiPort)
        yield api.login("bob@example.test")
        [entry] = (yield api.json("GET", "/messages"))["messages"]
        self.assertEqual(
            (entry["recipient"], entry["tag"]), ("sales+eu@example.test", "eu")
        )

    @inlineCallbacks
    def test_sentMailToAnAliasReachesEveryMember(self):
        """Submission and the API's send store a copy per member (plus the
        sender's own in "sent"), queue nothing."""
        carol = yield self.server.addUser("carol@example.test")
        yield self.alias(
            "add", "team@example.test", "bob@example.test", "carol@example.test"
        )
        yield seenByTheServer()
        code, _ = yield deferToThread(
            submitRaw,
            self.server.submissionPort,
            ["team+x@example.test"],
            b"From: alice@example.test\r\nSubject: s\r\n\r\nhi\r\n",
        )
        self.assertEqual(code, 250)
        api = APIClient(self, self.server.apiPort)
        yield api.login()
        sent = yield api.json(
            "POST",
            "/messages/send",
            {"to": ["team@example.test"], "subject": "a", "body": "b"},
            expect=202,
        )
        self.assertEqual(sent["status"], "delivered")
        for userId in (self.bob, carol):
            self.assertEqual(
                sorted((yield self.inbox(userId))),
                ["team+x@example.test", "team@example.test"],
            )

    @inlineCallbacks
    def test_anAliasRoutesARoleAddress(self):
        """abuse@ goes to the first account unless an alias says otherwise."""
        yield self.alias("add", "abuse@example.test", "bob@example.test")
        yield seenByTheServer()
        yield send(self.server, ["abuse@example.test", "postmaster@example.test"])
        self.assertEqual((yield self.inbox(self.bob)), ["abuse@example.test"])
        self.assertEqual((yield self.inbox(self.alice)), ["postmaster@example.test"])

    @inlineCallbacks
    def test_externalMemberOrForeignDomainIsRefusedClearly(self):
        status, err = yield self.alias(
            "add", "sales@example.test", "alice@example.test", "x@elsewhere.org"
        )
        self.assertEqual(status, 1)
        self.assertIn("x@elsewhere.org is not an account here", err)
        self.assertIn("never forward", err)
        status, err = yield self.alias(
            "add", "sales@elsewhere.org", "alice@example.test"
        )
        self.assertEqual(status, 1)
        self.assertIn("elsewhere.org is not a local domain", err)
        status, err = yield self.alias("add", "alice@example.test", "bob@example.test")
        self.assertEqual(status, 1)
        self.assertIn("alice@example.test is an account", err)
        listed = yield self.server.root.aliases.list()
        self.assertEqual(listed, {})

    @inlineCallbacks
    def test_addressesSMTPCannotNameAreRefused(self):
        """Found by an attacker: a NUL, an C{@} in the local part, a local
        part over 64 octets and terminal escapes were stored as aliases
        (and written raw to the terminal by C{alias list})."""
        for bad in (
            "x@evil.example\0@example.test",
            "x@evil.example@example.test",
            "a" * 65 + "@example.test",
            "\x1bc\x07x@example.test",
            "x\u2066y@example.test",
            "x@1.2.3.4",
        ):
            status, err = yield self.alias("add", bad, "alice@example.test")
            self.assertEqual(status, 1, bad)
            self.assertIn("not an email address", err)
        self.assertEqual((yield self.server.root.aliases.list()), {})

    @inlineCallbacks
    def test_capitalsInADomainAreTheSameDomain(self):
        """Found by a new operator: C{alias add sales@LOCALHOST} and a member
        C{Alice@Example.TEST} were "not an email address" / "not an account"."""
        status, err = yield self.alias(
            "add", "Sales@EXAMPLE.test", "ALICE@Example.Test"
        )
        self.assertEqual((status, err), (0, ""))
        status, err = yield self.alias("add", "team@LOCALHOST", "bob@example.test")
        self.assertEqual((status, err), (0, ""))
        listed = yield self.server.root.aliases.list()
        self.assertEqual(
            listed,
            {
                "Sales@example.test": ["alice@example.test"],
                "team@localhost": ["bob@example.test"],
            },
        )

    @inlineCallbacks
    def test_aliasesAreInTheBackup(self):
        yield self.alias(
            "add", "sales@example.test", "alice@example.test", "bob@example.test"
        )
        yield self.alias("add", "@example.test", "bob@example.test")
        backup = os.path.abspath(self.mktemp())
        yield deferToThread(createBackup, self.server.dataDir, backup)
        newDir = os.path.abspath(self.mktemp())
        yield deferToThread(restoreBackup, backup, newDir)
        yield self.server.stop()
        restored = RunningServer(self, server__data_dir=newDir)
        listed = yield restored.root.aliases.list()
        self.assertEqual(
            listed,
            {
                "@example.test": ["bob@example.test"],
                "sales@example.test": ["alice@example.test", "bob@example.test"],
            },
        )
        refused, (code, _) = yield send(restored, ["sales@example.test"])
        self.assertEqual((refused, code), ({}, 250))


RELAY_ATTEMPTS = [
    b"<someone@elsewhere.org>",
    b"<sales@elsewhere.org>",
    b"<postmaster@elsewhere.org>",
    b"<abuse@elsewhere.org>",
    b"<someone%elsewhere.org@example.test>",
    b"<sales%elsewhere.org@example.test>",
    b"<sales+x%elsewhere.org@example.test>",
    b"<alice+x!elsewhere.org@example.test>",
    b"<@example.test:someone@elsewhere.org>",
    b"<@example.test,@mx.example.test:someone@elsewhere.org>",
    b'<"someone@elsewhere.org"@example.test>',
    b'<"sales@elsewhere.org">',
    b"<someone@example.test@elsewhere.org>",
    b"<someone@[192.0.2.1]>",
    b"<sales@[IPv6:2001:db8::1]>",
    b"<someone@elsewhere.org.>",
    b"<sales@example.test.elsewhere.org>",
    b"<someone!elsewhere.org@example.test>",
    b"someone@elsewhere.org",
]


class CatchAllTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        self.alice = yield self.server.addUser("alice@example.test")
        self.bob = yield self.server.addUser("bob@example.test")

    def alias(self, *args: str):
        return deferToThread(mailraven, self.server.dataDir, "alias", *args)

    @inlineCallbacks
    def inbox(self, userId: int) -> list[str]:
        entries = yield self.server.root.store.list(userId, "inbox", 10, 0)
        return sorted(e["recipient"] for e in entries)

    @inlineCallbacks
    def test_catchAllOnAndOff(self):
        """Off by default (550); on for its own domain only; off again."""
        refused, _ = yield send(self.server, ["whoever@example.test"])
        self.assertEqual(refused["whoever@example.test"][0], 550)
        status, _ = yield self.alias("add", "@example.test", "bob@example.test")
        self.assertEqual(status, 0)
        yield seenByTheServer()
        refused, (code, _) = yield send(
            self.server, ["whoever@example.test", "whoever@localhost"]
        )
        self.assertEqual(code, 250)
        self.assertEqual(list(refused), ["whoever@localhost"])
        self.assertEqual(refused["whoever@localhost"][0], 550)
        self.assertEqual((yield self.inbox(self.bob)), ["whoever@example.test"])
        yield self.alias("remove", "@example.test")
        yield seenByTheServer()
        refused, _ = yield send(self.server, ["whoever@example.test"])
        self.assertEqual(refused["whoever@example.test"][0], 550)

    @inlineCallbacks
    def test_roleAddressesAreNotTheCatchAlls(self):
        """postmaster@ of our domain still goes to the admin (alice, the first
        account), and postmaster@/abuse@ of another domain are refused."""
        yield self.alias("add", "@example.test", "bob@example.test")
        yield seenByTheServer()
        refused, (code, _) = yield send(
            self.server,
            ["postmaster@example.test", "abuse@elsewhere.org", "postmaster@other.test"],
        )
        self.assertEqual(code, 250)
        self.assertEqual(
            {r: reply[0] for r, reply in refused.items()},
            {"abuse@elsewhere.org": 554, "postmaster@other.test": 554},
        )
        self.assertEqual((yield self.inbox(self.alice)), ["postmaster@example.test"])
        self.assertEqual((yield self.inbox(self.bob)), [])

    @inlineCallbacks
    def test_relayBatteryIsRefusedWithAliasesAndCatchAll(self):
        """No alias, plus-address or catch-all accepts an address that names
        another destination."""
        yield self.alias("add", "sales@example.test", "alice@example.test")
        yield self.alias("add", "@example.test", "bob@example.test")
        yield self.alias("add", "@localhost", "bob@example.test")
        yield seenByTheServer()
        commands = b"".join(b"RCPT TO:" + a + b"\r\n" for a in RELAY_ATTEMPTS)
        lines = yield deferToThread(
            rawSession,
            self.server.smtpPort,
            [b"EHLO c\r\nMAIL FROM:<bob@example.org>\r\n" + commands + b"DATA\r\n"],
            3 + len(RELAY_ATTEMPTS),
        )
        replies = finals(lines)
        rcptReplies = replies[2 : 2 + len(RELAY_ATTEMPTS)]
        self.assertEqual(len(rcptReplies), len(RELAY_ATTEMPTS))
        for attempt, reply in zip(RELAY_ATTEMPTS, rcptReplies, strict=True):
            self.assertIn(reply[:3], ("550", "554", "501"), (attempt, reply))
        self.assertEqual(replies[-1][:3], "503", "DATA with no recipient accepted")
