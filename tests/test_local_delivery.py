"""Mail an account sends to accounts of our own domains: stored in their inbox
in the same commit as the sender's copy, never queued. Through the real
submission listener (smtplib, STARTTLS, AUTH) and the API (treq); read back
through the API as the recipient."""

from __future__ import annotations

import smtplib

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.helpers import PASSWORD, RunningServer
from tests.test_mobile_api import APIClient
from tests.test_submission import _context, submit


def submitRaw(port: int, rcpts: list[str], message: bytes) -> tuple[int, bytes]:
    """Blocking: STARTTLS, AUTH as alice, send C{message}; the reply to it."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("laptop.example.org")
        client.starttls(context=_context())
        client.ehlo("laptop.example.org")
        client.login("alice@example.test", PASSWORD)
        try:
            client.sendmail("alice@example.test", rcpts, message)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error
        return 250, b""


class LocalDeliveryTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        yield self.server.addUser("carol@example.test")
        self.alice = APIClient(self, self.server.apiPort)
        yield self.alice.login("alice@example.test")
        self.carol = APIClient(self, self.server.apiPort)
        yield self.carol.login("carol@example.test")

    def queued(self) -> list[tuple]:
        """Every (rcpt) the outbound queue holds."""
        return self.server.root.store._db.read(
            lambda c: [
                tuple(r) for r in c.execute("SELECT rcpt FROM outbound_recipients")
            ]
        )

    @inlineCallbacks
    def mailboxes(self, api) -> list[tuple]:
        """(mailbox, subject, read) of every message in inbox and sent."""
        found = []
        for mailbox in ("inbox", "sent"):
            listed = yield api.json("GET", "/messages", mailbox=mailbox)
            found += [
                (m["mailbox"], m["subject"], m["read_state"])
                for m in listed["messages"]
            ]
        return sorted(found)

    @inlineCallbacks
    def test_submittedMailToALocalAccountLandsInItsInbox(self):
        code, refused, data = yield deferToThread(
            submit,
            self.server.submissionPort,
            "alice@example.test",
            PASSWORD,
            "alice@example.test",
            ["carol@example.test"],
        )
        self.assertEqual((code, refused, data), (235, {}, 250))
        # stored before the 250: no waiting, no queue run
        self.assertEqual(
            (yield self.mailboxes(self.carol)), [("inbox", "submitted", False)]
        )
        self.assertEqual(
            (yield self.mailboxes(self.alice)), [("sent", "submitted", True)]
        )
        self.assertEqual((yield self.queued()), [])
        [entry] = (yield self.carol.json("GET", "/messages"))["messages"]
        full = yield self.carol.json("GET", f"/messages/{entry['id']}")
        self.assertIn("for <carol@example.test>", full["body"])
        names = {h["name"].lower() for h in full["headers"]}
        self.assertLessEqual({"date", "message-id"}, names)

    @inlineCallbacks
    def test_apiSendToLocalRecipientsIsDeliveredAtOnce(self):
        sent = yield self.alice.json(
            "POST",
            "/messages/send",
            {"to": ["carol@example.test"], "subject": "hi carol", "body": "b"},
            expect=202,
        )
        self.assertEqual(sent["status"], "delivered")
        self.assertEqual(
            (yield self.mailboxes(self.carol)), [("inbox", "hi carol", False)]
        )
        self.assertEqual((yield self.queued()), [])
        yield self.alice.json("GET", f"/outbound/{sent['id']}", expect=404)

    @inlineCallbacks
    def test_apiSendToLocalAndRemoteQueuesOnlyTheRemote(self):
        sent = yield self.alice.json(
            "POST",
            "/messages/send",
            {
                "to": ["carol@example.test"],
                "cc": ["bob@remote.example"],
                "subject": "both",
                "body": "b",
            },
            expect=202,
        )
        self.assertEqual(sent["status"], "queued")
        self.assertEqual((yield self.mailboxes(self.carol)), [("inbox", "both", False)])
        self.assertEqual((yield self.queued()), [("bob@remote.example",)])

    @inlineCallbacks
    def test_apiSendToAnUnknownLocalUserIsRefused(self):
        response = yield self.alice.json(
            "POST",
            "/messages/send",
            {
                "to": ["carol@example.test", "nobody@example.test"],
                "subject": "s",
                "body": "b",
            },
            expect=400,
        )
        self.assertEqual(response["error"], "unknown_recipient")
        self.assertIn("nobody@example.test", response["message"])
        # nothing stored for anyone, nothing queued
        self.assertEqual((yield self.mailboxes(self.alice)), [])
        self.assertEqual((yield self.mailboxes(self.carol)), [])
        self.assertEqual((yield self.queued()), [])


class BrokenSubmissionTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")

    @inlineCallbacks
    def test_headerLineWithoutAColonIsRefusedAtTheDot(self):
        """The queue could not DKIM-sign it: the author hears at once."""
        code, text = yield deferToThread(
            submitRaw,
            self.server.submissionPort,
            ["bob@remote.example"],
            b"From: alice@example.test\r\nSubject: broken\r\n"
            b"this line has no colon\r\nTo: bob@remote.example\r\n\r\nbody\r\n",
        )
        self.assertEqual(code, 554)
        self.assertTrue(text.startswith(b"5.6.0 Malformed header: "), text)
        count = yield self.server.root.store._db.read(
            lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0]
        )
        self.assertEqual(count, 0)
        # the same message with the line fixed is accepted
        code, _ = yield deferToThread(
            submitRaw,
            self.server.submissionPort,
            ["bob@remote.example"],
            b"From: alice@example.test\r\nSubject: fixed\r\n"
            b"To: bob@remote.example\r\n\r\nbody\r\n",
        )
        self.assertEqual(code, 250)
