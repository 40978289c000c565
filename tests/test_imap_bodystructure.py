"""BODY and BODYSTRUCTURE as mail clients read them (RFC 3501 7.4.2), over
the shapes a new user's mail had when twisted's builder answered NIL."""

from __future__ import annotations

import email
import email.policy

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.mail.imap4 import collapseNestedLists
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailraven.imap.bodystructure import bodyStructure
from tests.helpers import PASSWORD, RunningServer
from tests.test_imap_e2e import fetchOne, ok, sendBySMTP, starttls


def structure(raw: bytes, extended: bool = True) -> bytes:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    return collapseNestedLists([bodyStructure(message, extended)])


PLAIN = b"From: a@example.org\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n"
MIME = (
    b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: 8bit\r\n\r\nh\xc3\xa9llo\r\n"
)
MULTIPART = (
    b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nThe text.\r\n"
    b'--b1\r\nContent-Type: application/octet-stream; name="setup.cfg"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="setup.cfg"\r\n\r\n'
    b"W21ldGFkYXRhXQ==\r\n--b1--\r\n"
)


class BodyStructureTests(SynchronousTestCase):
    def test_mailWithoutMIMEHeadersIsPlainASCIIText(self):
        """RFC 2045 5.2 and 6.1: the defaults, not NIL; the body's size."""
        self.assertEqual(
            structure(PLAIN, extended=False),
            b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 20 2)',
        )

    def test_sizeIsTheBodysAndParametersAreUnquoted(self):
        self.assertEqual(
            structure(MIME),
            b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "8BIT" 8 1 NIL NIL NIL NIL)',
        )

    def test_multipartWithAnAttachment(self):
        self.assertEqual(
            structure(MULTIPART),
            # the CRLF before a boundary is the boundary's (RFC 2046 5.1.1)
            b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 9 1'
            b" NIL NIL NIL NIL)"
            b'("APPLICATION" "OCTET-STREAM" ("NAME" "setup.cfg") NIL NIL "BASE64"'
            b' 16 NIL ("ATTACHMENT" ("FILENAME" "setup.cfg")) NIL NIL)'
            b' "MIXED" ("BOUNDARY" "b1") NIL NIL NIL)',
        )

    def test_anAttachedMessageHasItsEnvelopeAndStructure(self):
        raw = (
            b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: message/rfc822\r\n\r\n" + PLAIN
        )
        found = structure(raw, extended=False)
        self.assertTrue(found.startswith(b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" '))
        self.assertIn(b'"hi"', found)  # the inner envelope's subject
        self.assertIn(b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII")', found)

    def test_damagedMimeStillAnswers(self):
        for raw in (
            b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
            b"Content-Type: garbage\r\n\r\nx\r\n",
            b"Content-Type: text/plain; charset=\xff\xfe\r\n\r\n\xff\r\n",
            b"",
        ):
            self.assertTrue(structure(raw).startswith(b'("TEXT" "PLAIN" '), raw)


class BodyStructureOverIMAPTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")

    @inlineCallbacks
    def test_fetchAnswersTheStructureOfTheStoredMessage(self):
        """Found by a new user: swaks' mail came back as all NIL."""
        yield deferToThread(sendBySMTP, self.server.smtpPort, MULTIPART)

        def session():
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.select("INBOX"))
            [uids] = ok(client.uid("SEARCH", "ALL"))
            full = fetchOne(client, uids, "(BODYSTRUCTURE)")[0]
            short = fetchOne(client, uids, "(BODY)")[0]
            client.logout()
            return full, short

        full, short = yield deferToThread(session)
        self.assertIn(b'"MIXED" ("BOUNDARY" "b1")', full)
        self.assertIn(b'("ATTACHMENT" ("FILENAME" "setup.cfg"))', full)
        self.assertIn(b'(BODY (("TEXT" "PLAIN" ("CHARSET" "US-ASCII")', short)
        self.assertNotIn(b"ATTACHMENT", short)
