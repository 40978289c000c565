"""ENVELOPE with non-ASCII, encoded words, groups and awkward display names,
read back by imapclient's response parser from a running server."""

from __future__ import annotations

import ssl

from imapclient import IMAPClient
from imapclient.response_types import Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailraven.imap.envelope import Literal, addressList, envelope
from tests.helpers import PASSWORD, RunningServer

SUBJECT = "Grüße aus Köln".encode()
INTERNATIONAL = (
    b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.org>\r\n"
    b"Subject: " + SUBJECT + b"\r\n"
    b'To: "Smith, \\"Bob\\" \\\\ Jr" <bob@example.org>,\r\n'
    b'  Team: ann@example.com, "Q" <q@example.com>;\r\n'
    b'Cc: "J\xc3\xbcrgen M\xc3\xbcller" <j\xc3\xbcrgen@m\xc3\xbcller.example>\r\n'
    b"Bcc: undisclosed-recipients:;\r\n"
    b"Message-ID: <i18n@example.org>\r\n"
    b"\r\n"
    b"body\r\n"
)
NO_FROM = b"Subject: =?iso-8859-1?q?caf=E9?=\r\nTo: ann@example.com\r\n\r\nbody\r\n"
ATTACHED = (
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + INTERNATIONAL + b"\r\n--b--\r\n"
)


def _context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class EnvelopeOverIMAPTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")

    def fetch(self, *messages: bytes) -> list[dict]:
        client = IMAPClient("127.0.0.1", self.server.imapPort, ssl=False, timeout=30)
        client.starttls(_context())
        client.login("alice@example.test", PASSWORD)
        for message in messages:
            client.append("INBOX", message)
        client.select_folder("INBOX")
        uids = client.search("ALL")
        found = client.fetch(uids, ["ENVELOPE", "BODYSTRUCTURE"])
        client.logout()
        return [found[uid] for uid in uids]

    @inlineCallbacks
    def test_rawHeaderValuesInTheEnvelope(self):
        [first, second, third] = yield deferToThread(
            self.fetch, INTERNATIONAL, NO_FROM, ATTACHED
        )
        found = first[b"ENVELOPE"]
        self.assertEqual(found.subject, SUBJECT)
        jorg = Address(b"=?utf-8?q?J=C3=B6rg?=", None, b"jorg", b"example.org")
        self.assertEqual(found.from_, (jorg,))
        self.assertEqual(found.sender, (jorg,))
        self.assertEqual(found.reply_to, (jorg,))
        self.assertEqual(
            found.to,
            (
                Address(b'Smith, "Bob" \\ Jr', None, b"bob", b"example.org"),
                Address(None, None, b"Team", None),
                Address(None, None, b"ann", b"example.com"),
                Address(b"Q", None, b"q", b"example.com"),
                Address(None, None, None, None),
            ),
        )
        self.assertEqual(
            found.cc,
            (
                Address(
                    "Jürgen Müller".encode(),
                    None,
                    "jürgen".encode(),
                    "müller.example".encode(),
                ),
            ),
        )
        self.assertEqual(
            found.bcc,
            (
                Address(None, None, b"undisclosed-recipients", None),
                Address(None, None, None, None),
            ),
        )
        self.assertEqual(found.message_id, b"<i18n@example.org>")

        missing = second[b"ENVELOPE"]
        self.assertEqual(missing.subject, b"=?iso-8859-1?q?caf=E9?=")
        self.assertEqual(
            (missing.from_, missing.sender, missing.reply_to), (None, None, None)
        )
        self.assertEqual(missing.to, (Address(None, None, b"ann", b"example.com"),))

        # the attached message's envelope inside BODYSTRUCTURE
        structure = third[b"BODYSTRUCTURE"]
        inner = structure[0][0] if isinstance(structure[0], list) else structure[0]
        self.assertEqual(inner[0:2], (b"MESSAGE", b"RFC822"))
        self.assertEqual(inner[7][1], SUBJECT)
        self.assertEqual(
            inner[7][2], ((jorg.name, jorg.route, jorg.mailbox, jorg.host),)
        )


class EnvelopeUnitTests(SynchronousTestCase):
    def test_eightBitValuesAreLiterals(self):
        date, subject = envelope([("Subject", "caf\udcc3\udca9"), ("Date", "x")])[:2]
        self.assertEqual(date, b"x")
        self.assertIsInstance(subject, Literal)
        self.assertEqual(subject.read(), b"caf\xc3\xa9")

    def test_foldedValuesAreUnfolded(self):
        subject = envelope([("Subject", "one\r\n two")])[1]
        self.assertEqual(subject, b"one two")

    def test_commentsAndUnterminatedGroups(self):
        self.assertEqual(
            addressList(b"bob@example.org (Bob), list: a@b.c"),
            [
                [None, None, b"bob", b"example.org"],
                [None, None, b"list", None],
                [None, None, b"a", b"b.c"],
                [None, None, None, None],
            ],
        )

    def test_emptyAndGarbledLists(self):
        self.assertIsNone(addressList(b""))
        self.assertIsNone(addressList(b" , ,"))
        self.assertIsNone(addressList(b"<>"))
        self.assertEqual(
            addressList(b'"unterminated <a@b>'), [[b"unterminated", None, b"a", b"b"]]
        )
