"""IMAP against a running server with imapclient, a client library nobody
here wrote, over STARTTLS verified against a test CA: CONDSTORE, MOVE and
UIDPLUS, IDLE woken by SMTP, special-use folders, ID, NAMESPACE, ENABLE,
LITERAL+, and the API seeing the same flags."""

from __future__ import annotations

import base64
import os
import smtplib
import socket
import ssl
import time
from typing import Any

from imapclient import IMAPClient
from imapclient.imapclient import SENT as SENT_FLAG
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.helpers import PASSWORD, RunningServer
from tests.test_imap_e2e import ORIGINAL
from tests.test_mobile_api import APIClient
from tests.testca import TestCA

SUBJECTS = [b"one", b"two", b"three"]


def message(subject: bytes) -> bytes:
    return (
        b"From: bob@example.org\r\nTo: alice@example.test\r\n"
        b"Subject: " + subject + b"\r\n\r\nbody of " + subject + b"\r\n"
    )


class TrustedServer:
    """A running server whose certificate (for localhost) a test CA issued."""

    def __init__(self, testCase: TestCase) -> None:
        self.ca = TestCA(os.path.abspath(testCase.mktemp()))
        cert, key = self.ca.issue(["localhost"])
        self.server = RunningServer(testCase, tls__cert_file=cert, tls__key_file=key)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca.caPath)

    def client(self) -> IMAPClient:
        """Logged in over STARTTLS, the certificate and name verified."""
        client = IMAPClient("localhost", self.server.imapPort, ssl=False, timeout=30)
        client.starttls(self.context())
        client.login("alice@example.test", PASSWORD)
        return client

    def deliver(self, data: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.server.smtpPort, timeout=30) as smtp:
            smtp.sendmail("bob@example.org", ["alice@example.test"], data)


class IMAPClientTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.trusted = TrustedServer(self)
        self.server = self.trusted.server
        yield self.server.addUser("alice@example.test")

    def session(self, f, *args: Any):
        """Run f(client, *args) in a thread with a fresh logged-in client."""

        def run():
            client = self.trusted.client()
            try:
                return f(client, *args)
            finally:
                client.logout()

        return deferToThread(run)

    def appendThree(self, client: IMAPClient) -> list[int]:
        uids = []
        for subject in SUBJECTS:
            answer = client.append("INBOX", message(subject))
            uids.append(int(answer.split()[2].rstrip(b"]")))
        return uids

    @inlineCallbacks
    def test_appendAnswersAppendUID(self):
        def run(client):
            answer = client.append("INBOX", message(b"hi"), flags=[b"\\Seen"])
            info = client.select_folder("INBOX")
            fetched = client.fetch(client.search("ALL"), ["FLAGS", "BODY.PEEK[]"])
            return answer, info, fetched

        answer, info, fetched = yield self.session(run)
        validity = info[b"UIDVALIDITY"]
        self.assertEqual(answer, b"[APPENDUID %d 1] APPEND completed" % validity)
        self.assertEqual(list(fetched), [1])
        self.assertEqual(fetched[1][b"BODY[]"], message(b"hi"))
        self.assertIn(b"\\Seen", fetched[1][b"FLAGS"])

    @inlineCallbacks
    def test_enableAndCondstore(self):
        def run(client):
            enabled = client.enable("CONDSTORE")
            uids = self.appendThree(client)
            typ, _ = client._imap._simple_command("SELECT", "INBOX", "(CONDSTORE)")
            highest = int(client._imap.untagged_responses.pop("HIGHESTMODSEQ")[-1])
            client.select_folder("INBOX")  # imaplib's own state: selected
            before = client.fetch(uids, ["MODSEQ"])
            client.add_flags([uids[1]], [b"\\Flagged"])
            changed = client.fetch(
                uids, ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"]
            )
            # conditional on the folder's state before the \Flagged: the
            # flagged message has moved past it, the third has not
            conflict = client._imap._simple_command(
                "UID",
                "STORE",
                f"{uids[1]},{uids[2]}",
                f"(UNCHANGEDSINCE {highest})",
                "+FLAGS.SILENT",
                "(\\Answered)",
            )
            after = client.fetch(uids, ["FLAGS", "MODSEQ"])
            return enabled, typ, highest, before, changed, conflict, after, uids

        (
            enabled,
            typ,
            highest,
            before,
            changed,
            conflict,
            after,
            uids,
        ) = yield self.session(run)
        self.assertEqual(enabled, [b"CONDSTORE"])
        self.assertEqual(typ, "OK")
        self.assertEqual(max(m[b"MODSEQ"][0] for m in before.values()), highest)
        self.assertEqual(list(changed), [uids[1]])
        status, [text] = conflict
        self.assertEqual(status, "OK")
        self.assertTrue(text.startswith(b"[MODIFIED %d]" % uids[1]), text)
        self.assertNotIn(b"\\Answered", after[uids[1]][b"FLAGS"])
        self.assertIn(b"\\Answered", after[uids[2]][b"FLAGS"])
        self.assertGreater(after[uids[2]][b"MODSEQ"][0], highest)

    @inlineCallbacks
    def test_moveAnswersCopyUIDAndUidExpungeTakesOnlyItsUIDs(self):
        def run(client):
            uids = self.appendThree(client)
            archive = client.select_folder("Archive")
            client.select_folder("INBOX")
            moved = client.move([uids[0]], "Archive")
            copyuid = client._imap.untagged_responses.get("COPYUID")
            client.add_flags(uids[1:], [b"\\Deleted"])
            expunged = client.uid_expunge([uids[1]])
            left = client.search("ALL")
            inArchive = client.folder_status("Archive", ["MESSAGES"])
            return uids, archive, moved, copyuid, expunged, left, inArchive

        uids, archive, moved, copyuid, expunged, left, inArchive = yield self.session(
            run
        )
        validity = archive[b"UIDVALIDITY"]
        self.assertIsNotNone(copyuid, moved)
        self.assertEqual(copyuid[-1], b"%d %d 1" % (validity, uids[0]))
        self.assertEqual(left, [uids[2]])
        self.assertEqual(inArchive[b"MESSAGES"], 1)

    @inlineCallbacks
    def test_idleIsWokenBySMTPWithinOneSecond(self):
        def run(client):
            client.select_folder("INBOX")
            client.idle()
            self.trusted.deliver(ORIGINAL)
            accepted = time.monotonic()
            news = client.idle_check(timeout=30)
            woken = time.monotonic() - accepted
            client.idle_done()
            return news, woken

        news, woken = yield self.session(run)
        self.assertIn((1, b"EXISTS"), news)
        self.assertLess(woken, 1.0)

    @inlineCallbacks
    def test_specialUseFoldersIdAndNamespace(self):
        def run(client):
            folders = {name: flags for flags, _, name in client.list_folders()}
            sent = client.find_special_folder(SENT_FLAG)
            ident = client.id_({"name": "imapclient-test"})
            namespace = client.namespace()
            return folders, sent, ident, namespace, client.capabilities()

        folders, sent, ident, namespace, capabilities = yield self.session(run)
        for name, use in [
            ("Sent", b"\\Sent"),
            ("Drafts", b"\\Drafts"),
            ("Junk", b"\\Junk"),
            ("Trash", b"\\Trash"),
            ("Archive", b"\\Archive"),
        ]:
            self.assertIn(use, folders[name])
        self.assertEqual(sent, "Sent")
        self.assertEqual(ident, ((b"name", b"MailRaven"),))
        self.assertEqual(namespace.personal, (("", "/"),))
        self.assertEqual((namespace.other, namespace.shared), (None, None))
        self.assertIn(b"LITERAL+", capabilities)
        self.assertNotIn(b"MULTIAPPEND", capabilities)

    @inlineCallbacks
    def test_flagsAreSharedWithTheAPI(self):
        yield deferToThread(self.trusted.deliver, ORIGINAL)
        api = APIClient(self, self.server.apiPort)
        yield api.login()
        [summary] = (yield api.json("GET", "/messages"))["messages"]
        path = f"/messages/{summary['id']}"

        def flag(client):
            client.select_folder("INBOX")
            client.add_flags([1], [b"\\Seen", b"\\Flagged"])

        yield self.session(flag)
        seen = yield api.json("GET", path)
        self.assertEqual((seen["read_state"], seen["starred"]), (True, True))

        yield api.json("PATCH", path, {"read_state": False, "starred": True})

        def flags(client):
            client.select_folder("INBOX", readonly=True)
            return client.get_flags([1])[1]

        self.assertEqual((yield self.session(flags)), (b"\\Flagged",))


ATTACHMENT = bytes(range(256)) * 8
QUIRKS = {
    "8bit": ORIGINAL,
    "long lines": (
        b"From: bob@example.org\r\nTo: alice@example.test\r\nSubject: long\r\n"
        b"X-Long: "
        + b"h" * 900
        + b"\r\n\r\n"
        + b"x" * 990
        + b"\r\n"
        + b"y" * 10
        + b"\r\n"
    ),
    "dots and blank lines": (
        b"Subject: dots\r\n\r\n.\r\n..two\r\n.three\r\n\r\n\r\n\r\nend\r\n"
    ),
    "base64 attachment": (
        b"From: bob@example.org\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(ATTACHMENT).replace(b"\n", b"\r\n")
        + b"--b--\r\n"
    ),
    "no final line end": b"Subject: unterminated\r\n\r\nlast line",
    "bare LF": b"Subject: bare lf\nX-Quirk: yes\n\nline one\nline two\r\nline three\n",
    "bare CR": b"Subject: bare cr\r\n\r\none\rtwo\r\n",
}


class ByteIdentityTests(TestCase):
    """BODY.PEEK[] is what SMTP accepted, after our trace headers."""

    timeout = 120

    @inlineCallbacks
    def test_quirkyMessagesComeBackAsSent(self):
        trusted = TrustedServer(self)
        yield trusted.server.addUser("alice@example.test")
        for data in QUIRKS.values():
            yield deferToThread(trusted.deliver, data)

        def fetch():
            client = trusted.client()
            client.select_folder("INBOX", readonly=True)
            uids = client.search("ALL")
            fetched = client.fetch(uids, ["BODY.PEEK[]", "RFC822.SIZE"])
            client.logout()
            return [fetched[uid] for uid in uids]

        fetched = yield deferToThread(fetch)
        self.assertEqual(len(fetched), len(QUIRKS))
        for (name, sent), item in zip(QUIRKS.items(), fetched, strict=True):
            body = item[b"BODY[]"]
            self.assertEqual(item[b"RFC822.SIZE"], len(body), name)
            trace, _, rest = body.partition(b"\r\n" + sent[:12])
            self.assertTrue(trace.startswith(b"Return-Path: "), (name, body[:300]))
            self.assertEqual(sent[:12] + rest, expected(sent), name)


def expected(sent: bytes) -> bytes:
    """
    What the store keeps of C{sent}: the bytes as sent, ending in CRLF
    (SMTP's DATA ends with one; smtplib adds it when missing).
    """
    return sent if sent.endswith(b"\r\n") else sent + b"\r\n"


class LiteralTests(TestCase):
    """Literals as clients send them: imapclient's for non-ASCII SEARCH
    strings, and LITERAL+ octets pipelined without waiting."""

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.trusted = TrustedServer(self)
        yield self.trusted.server.addUser("alice@example.test")
        yield deferToThread(self.trusted.deliver, ORIGINAL)
        yield deferToThread(self.trusted.deliver, message(b"other"))

    @inlineCallbacks
    def test_searchWithLiterals(self):
        def run():
            client = self.trusted.client()
            client.select_folder("INBOX", readonly=True)
            found = client.search(["BODY", "Café", "SUBJECT", "Friday"], "UTF-8")
            none = client.search(["BODY", "Café", "SUBJECT", "other"], "UTF-8")
            client.logout()
            return found, none

        found, none = yield deferToThread(run)
        self.assertEqual((found, none), ([1], []))

    @inlineCallbacks
    def test_nonSynchronizingLiteralsPipelined(self):
        user, password = b"alice@example.test", PASSWORD.encode()
        appended = message(b"literal plus")
        commands = (
            b"a LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n"
            % (len(user), user, len(password), password)
            + b"b APPEND INBOX {%d+}\r\n" % len(appended)
            + appended
            + b"\r\nc SELECT INBOX\r\n"
            + b"d SEARCH CHARSET UTF-8 BODY {6+}\r\nCaf\xc3\xa9\r\n"
            + b"e LOGOUT\r\n"
        )

        def run():
            raw = socket.create_connection(("localhost", self.trusted.server.imapsPort))
            with self.trusted.context().wrap_socket(
                raw, server_hostname="localhost"
            ) as tls:
                tls.settimeout(30)
                received = tls.recv(4096)
                tls.sendall(commands)
                while b"e OK" not in received:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    received += chunk
            return received.decode("utf-8", "replace").splitlines()

        lines = yield deferToThread(run)
        self.assertFalse([line for line in lines if line.startswith("+")], lines)
        tagged = {
            line.split()[0]: line.split()[1] for line in lines[1:] if line[0] != "*"
        }
        self.assertEqual(
            tagged, {"a": "OK", "b": "OK", "c": "OK", "d": "OK", "e": "OK"}, lines
        )
        self.assertIn("* SEARCH 1", lines)
