"""Expunged mail nobody has any more leaves the store: row, index, file."""

from __future__ import annotations

import os
import smtplib

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.helpers import PASSWORD, RunningServer
from tests.test_imap_e2e import ok, sendBySMTP, starttls
from tests.test_mobile_api import APIClient

MESSAGE = (
    b"From: bob@example.org\r\nTo: alice@example.test\r\n"
    b"Subject: zanzibar plans\r\n\r\nWe meet in zanzibar.\r\n"
)


def messageFiles(dataDir: str) -> list[str]:
    """Stored messages' files (the empty spares made ahead aside)."""
    return [
        path
        for directory, _, names in os.walk(os.path.join(dataDir, "messages"))
        for name in names
        if name.endswith(".eml.gz")
        and os.path.getsize(path := os.path.join(directory, name)) > 0
    ]


def expungeIn(port: int, folder: str, copyTo: str | None = None) -> None:
    client = starttls(port)
    ok(client.login("alice@example.test", PASSWORD))
    ok(client.select(folder))
    if copyTo is not None:
        ok(client.copy("1", copyTo))
    ok(client.store("1", "+FLAGS", "(\\Deleted)"))
    ok(client.expunge())
    client.logout()


class PurgeTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_fileRowAndIndexGoWithTheLastEntry(self):
        server = RunningServer(self)
        yield server.addUser("alice@example.test")
        yield deferToThread(sendBySMTP, server.smtpPort, MESSAGE)
        api = APIClient(self, server.apiPort)
        yield api.login()
        before = yield api.json("GET", "/account")
        self.assertEqual(len(messageFiles(server.dataDir)), 1)

        # a copy in Archive keeps the message when the INBOX entry goes
        yield deferToThread(expungeIn, server.imapPort, "INBOX", "Archive")
        self.assertEqual(len(messageFiles(server.dataDir)), 1)
        found = yield api.json("GET", "/messages/search", q="zanzibar")
        self.assertEqual(found["total_matches"], 1)

        yield deferToThread(expungeIn, server.imapPort, "Archive")
        self.assertEqual(messageFiles(server.dataDir), [])
        found = yield api.json("GET", "/messages/search", q="zanzibar")
        self.assertEqual((found["count"], found["total_matches"]), (0, 0))
        after = yield api.json("GET", "/account")
        self.assertLess(after["quota"]["used"], before["quota"]["used"])
        self.assertEqual(after["quota"]["used"], 0)

    @inlineCallbacks
    def test_aMessageOfTwoAccountsStaysForTheOther(self):
        """Alice's index forgets it; Bob still has the message and finds it."""
        server = RunningServer(self)
        yield server.addUser("alice@example.test")
        yield server.addUser("bob@example.test")

        def send():
            with smtplib.SMTP("127.0.0.1", server.smtpPort, timeout=30) as client:
                client.sendmail(
                    "carol@example.org",
                    ["alice@example.test", "bob@example.test"],
                    MESSAGE,
                )

        yield deferToThread(send)
        yield deferToThread(expungeIn, server.imapPort, "INBOX")
        self.assertEqual(len(messageFiles(server.dataDir)), 1)
        alice = APIClient(self, server.apiPort)
        yield alice.login()
        found = yield alice.json("GET", "/messages/search", q="zanzibar")
        self.assertEqual(found["total_matches"], 0)
        bob = APIClient(self, server.apiPort)
        yield bob.login("bob@example.test")
        found = yield bob.json("GET", "/messages/search", q="zanzibar")
        self.assertEqual((found["count"], found["total_matches"]), (1, 1))

    @inlineCallbacks
    def test_deletingAFolderPurgesItsMail(self):
        server = RunningServer(self)
        yield server.addUser("alice@example.test")
        yield deferToThread(sendBySMTP, server.smtpPort, MESSAGE)

        def moveAndDelete():
            client = starttls(server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.create("Projects"))
            ok(client.select("INBOX"))
            ok(client.uid("MOVE", "1:*", "Projects"))
            ok(client.delete("Projects"))
            client.logout()

        yield deferToThread(moveAndDelete)
        self.assertEqual(messageFiles(server.dataDir), [])
