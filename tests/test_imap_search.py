"""IMAP SEARCH against a running server, compared with a brute-force
reference over a seeded corpus: SUBJECT/FROM/TO are substrings of the
decoded header, TEXT/BODY words match the words they begin (case and accents
ignored) in what the search index holds, and nothing expunged, in another
folder or in another account is ever found."""

from __future__ import annotations

import imaplib
import random
import re
import smtplib
import unicodedata
from dataclasses import dataclass

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.helpers import PASSWORD, RunningServer
from tests.test_imap_e2e import ok, starttls

SEED = 3501
WORDS = [
    "invoice",
    "invoices",
    "budget",
    "meeting",
    "garden",
    "quartz",
    "zephyr",
    "bücher",
    "café",
    "naïve",
    "ørsted",
    "über",
    "lumen",
    "tangerine",
    "harbor",
]
SENDERS = [
    ("Zed Quill", "zquill@example.org"),
    ("Mira Vance", "mvance@example.org"),
    ("Olu Brandt", "obrandt@example.org"),
]
TOS = ["alice@example.test", "Team Kestrel <alice@example.test>"]


@dataclass
class Mail:
    sender: tuple[str, str]
    to: str
    subject: str
    body: str
    uid: int = 0
    seen: bool = False

    def raw(self) -> bytes:
        return (
            f"From: {self.sender[0]} <{self.sender[1]}>\r\n"
            f"To: {self.to}\r\n"
            f"Subject: {self.subject}\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n"
            "\r\n"
            f"{self.body}\r\n"
        ).encode()


def corpus(count: int) -> list[Mail]:
    rng = random.Random(SEED)
    mails = []
    for _ in range(count):
        subject = " ".join(rng.sample(WORDS, rng.randint(1, 2)))
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))
        mails.append(Mail(rng.choice(SENDERS), rng.choice(TOS), subject, body))
    return mails


def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def beginsAWord(text: str, word: str) -> bool:
    return any(w.startswith(fold(word)) for w in re.findall(r"[^\W_]+", fold(text)))


def reference(mail: Mail, key: str, arg: str) -> bool:
    """What RFC 3501 SEARCH, as docs/imap.md words it, answers for C{mail}."""
    fromHeader = f"{mail.sender[0]} <{mail.sender[1]}>"
    if key == "SUBJECT":
        return arg.lower() in mail.subject.lower()
    if key == "FROM":
        return arg.lower() in fromHeader.lower()
    if key == "TO":
        return arg.lower() in mail.to.lower()
    if key == "BODY":
        return beginsAWord(mail.body, arg)
    # TEXT: the index's sender (with the envelope sender), recipients (with
    # the envelope recipient), subject and body
    indexed = [fromHeader, "bob@example.org", mail.to, "alice@example.test"]
    return any(beginsAWord(t, arg) for t in [*indexed, mail.subject, mail.body])


def sendAll(port: int, rcpt: str, mails: list[Mail]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        for mail in mails:
            client.sendmail("bob@example.org", [rcpt], mail.raw())


def search(client: imaplib.IMAP4, *criteria: str) -> set[int]:
    [line] = ok(client.uid("SEARCH", *criteria))
    return {int(n) for n in line.split()}


def searchUTF8(client: imaplib.IMAP4, key: str, word: str) -> set[int]:
    client.literal = word.encode()
    [line] = ok(client.uid("SEARCH", "CHARSET", "UTF-8", key))
    return {int(n) for n in line.split()}


class SearchAgainstReferenceTests(TestCase):
    timeout = 300

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        yield self.server.addUser("carol@example.test")

    def prepare(self, client: imaplib.IMAP4) -> list[Mail]:
        """Alice's INBOX as the reference sees it: some read, some moved to
        Archive, some expunged; carol has mail of her own."""
        mails = corpus(60)
        sendAll(self.server.smtpPort, "alice@example.test", mails)
        carols = [Mail(SENDERS[0], "carol@example.test", "quartz", "carolonly")]
        sendAll(self.server.smtpPort, "carol@example.test", carols * 5)
        ok(client.login("alice@example.test", PASSWORD))
        ok(client.select("INBOX"))
        for uid, mail in enumerate(mails, 1):
            mail.uid = uid
        rng = random.Random(SEED)
        for mail in rng.sample(mails, 20):
            mail.seen = True
            ok(client.uid("STORE", str(mail.uid), "+FLAGS", "(\\Seen)"))
        gone = rng.sample([m for m in mails if not m.seen], 15)
        for mail in gone[:8]:
            ok(client.uid("MOVE", str(mail.uid), "Archive"))
        for mail in gone[8:]:
            ok(client.uid("STORE", str(mail.uid), "+FLAGS", "(\\Deleted)"))
        ok(client.expunge())
        return [m for m in mails if m not in gone]

    @inlineCallbacks
    def test_searchEqualsTheReference(self):
        def session():
            client = starttls(self.server.imapPort)
            inbox = self.prepare(client)
            answers = []

            def check(label, found, expected):
                answers.append((label, found, {m.uid for m in expected}))

            keys = ["TEXT", "BODY", "SUBJECT", "FROM", "TO"]
            args = ["invoice", "INVOI", "budget", "quartz", "zephyr", "meeting"]
            args += ["Quill", "uil", "vance", "kestrel", "bob", "alice", "lumen"]
            for key in keys:
                for arg in args:
                    found = search(client, key, arg)
                    expected = [m for m in inbox if reference(m, key, arg)]
                    check(f"{key} {arg}", found, expected)
            for word in ["bücher", "BUCHER", "cafe", "ørsted", "über", "naïve"]:
                for key in ("TEXT", "BODY"):
                    expected = [m for m in inbox if reference(m, key, word)]
                    check(f"{key} {word}", searchUTF8(client, key, word), expected)
            check(
                "OR SUBJECT garden BODY harbor",
                search(client, "OR", "SUBJECT", "garden", "BODY", "harbor"),
                [
                    m
                    for m in inbox
                    if reference(m, "SUBJECT", "garden")
                    or reference(m, "BODY", "harbor")
                ],
            )
            check(
                "NOT TEXT tangerine SEEN",
                search(client, "NOT", "TEXT", "tangerine", "SEEN"),
                [m for m in inbox if m.seen and not reference(m, "TEXT", "tangerine")],
            )
            check(
                "UID 10:40 UNSEEN BODY budget",
                search(client, "UID", "10:40", "UNSEEN", "BODY", "budget"),
                [
                    m
                    for m in inbox
                    if 10 <= m.uid <= 40
                    and not m.seen
                    and reference(m, "BODY", "budget")
                ],
            )
            check("TEXT carolonly", search(client, "TEXT", "carolonly"), [])
            # punctuation: the exact scan of the messages
            check("TEXT @example.org", search(client, "TEXT", "@example.org"), inbox)
            client.logout()
            return answers

        answers = yield deferToThread(session)
        self.assertGreater(len(answers), 70)
        for label, found, expected in answers:
            self.assertEqual(found, expected, label)
        nonEmpty = [label for label, _, expected in answers if expected]
        self.assertGreater(len(nonEmpty), 40)

    @inlineCallbacks
    def test_otherCharsetsAreBadCharset(self):
        def session():
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.select("INBOX"))
            try:
                client.uid("SEARCH", "CHARSET", "KOI8-R", "TEXT", "x")
            except imaplib.IMAP4.error as e:
                return str(e)
            finally:
                client.logout()
            return ""

        self.assertIn("BADCHARSET", (yield deferToThread(session)))
