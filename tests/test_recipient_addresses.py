"""The addresses operators expect, end to end through SMTP: plus-addresses,
role addresses, aliases and catch-alls (docs/addresses.md)."""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.helpers import RunningServer, sendWithSmtplib
from tests.test_mobile_api import APIClient

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
