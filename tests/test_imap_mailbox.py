"""The IMAP account and a session's folder view over the store fakes:
sequence numbers stay what the session was told until it reports changes."""

from __future__ import annotations

from twisted.mail.imap4 import MessageSet, parseIdList
from twisted.trial.unittest import SynchronousTestCase

from mailraven.envelope import Envelope, Recipient
from mailraven.imap.mailbox import IMAPAccount, uidRanges
from mailraven.imap.search import SearchError, parseSearch
from mailraven.spool import memorySpool
from mailraven.testing import MemoryFolderStore, MemoryMessageStore
from tests.test_imap_protocol import IMAPTestCase


class FolderViewTests(SynchronousTestCase):
    def setUp(self):
        self.store = MemoryMessageStore()
        self.folders = MemoryFolderStore(self.store)
        for n in range(3):
            self.deliver(f"Subject: message {n}\r\n\r\nbody {n}\r\n".encode())
        self.account = IMAPAccount(self.folders, self.store, 1, "alice@example.test")

    def deliver(self, raw: bytes) -> None:
        envelope = Envelope("bob@example.org", recipients=[Recipient("alice@x", 1)])
        self.successResultOf(self.store.deliver(envelope, memorySpool(raw)))

    def select(self, writeable=True):
        return self.successResultOf(self.account.select("inbox", writeable))

    def test_sequenceSetsAndUidSets(self):
        view = self.select()
        self.assertEqual(view.uids, [1, 2, 3])
        self.assertEqual(view.resolve(parseIdList(b"2:*"), False), [(2, 2), (3, 3)])
        self.assertEqual(view.resolve(parseIdList(b"9:*"), True), [(3, 3)])
        self.assertEqual(view.resolve(parseIdList(b"3,1"), False), [(1, 1), (3, 3)])
        self.assertEqual(view.resolve(parseIdList(b"4"), False), [])
        self.assertEqual(uidRanges([5, 1, 2, 3, 7]), [(1, 3), (5, 5), (7, 7)])

    def test_anotherSessionsExpungeIsReportedHighestFirst(self):
        mine, other = self.select(), self.select()
        flags = self.successResultOf(
            other.store(MessageSet(1, 1) + MessageSet(3, 3), ["\\Deleted"], 1, False)
        )
        self.assertEqual(flags, ({1: ["\\Deleted"], 3: ["\\Deleted"]}, []))
        self.assertEqual(self.successResultOf(other.expunge()), [3, 1])
        self.assertEqual(other.uids, [2])
        # the first session still numbers 1..3 until it reports the change
        self.assertEqual(mine.getUID(3), 3)
        expunged, exists, changed = self.successResultOf(mine.refresh())
        self.assertEqual((expunged, exists, changed), ([3, 1], None, {}))
        self.assertEqual(mine.uids, [2])

    def test_arrivalsAndFlagChangesAreReported(self):
        mine, other = self.select(), self.select()
        self.successResultOf(other.store(MessageSet(2, 2), ["$Work"], 1, False))
        self.deliver(b"Subject: late\r\n\r\nnew\r\n")
        expunged, exists, changed = self.successResultOf(mine.refresh())
        self.assertEqual((expunged, exists), ([], 4))
        self.assertEqual(changed, {2: ["$Work"]})
        self.assertEqual(mine.keywords, ["$Work"])

    def test_examineIsReadOnly(self):
        view = self.select(writeable=False)
        failure = self.failureResultOf(
            view.store(MessageSet(1, 1), ["\\Seen"], 1, False)
        )
        self.assertIn("read-only", str(failure.value))
        self.failureResultOf(view.expunge())

    def test_searchOverFlagsSizesAndText(self):
        view = self.select()
        self.successResultOf(view.store(MessageSet(2, 2), ["\\Flagged"], 1, False))

        def search(line: bytes):
            return self.successResultOf(parseSearch(line, view).run())

        self.assertEqual(search(b"FLAGGED"), [(2, 2)])
        self.assertEqual(search(b"UNFLAGGED NOT 1"), [(3, 3)])
        self.assertEqual(
            search(b'OR SUBJECT "message 0" BODY "body 2"'), [(1, 1), (3, 3)]
        )
        self.assertEqual(search(b"UID 2:* LARGER 10"), [(2, 2), (3, 3)])
        self.assertEqual(search(b"(SEEN) ALL"), [])
        for bad in (b"FOO", b"LARGER x", b"(", b"CHARSET KOI8-R ALL"):
            self.assertRaises(SearchError, parseSearch, bad, view)

    def test_listShowsSpecialUseAndChildren(self):
        self.successResultOf(self.account.create("Work/2026"))
        folders = self.successResultOf(self.account.listFolders())
        byName = {f.name: f.attributes for f in folders}
        self.assertIn("\\Sent", byName["Sent"])
        self.assertIn("\\HasChildren", byName["Work"])
        self.assertIn("\\HasNoChildren", byName["Work/2026"])


class RacingStore(MemoryMessageStore):
    """Another message lands in the same folder right after each delivery."""

    racing = False

    def deliver(self, envelope, spool):
        d = super().deliver(envelope, spool)
        if self.racing:
            other = Envelope("carol@example.org", recipients=envelope.recipients)
            super().deliver(other, memorySpool(b"Subject: racing\r\n\r\nx\r\n"))
        return d


class AppendTests(SynchronousTestCase):
    def test_appendUidNamesOurMessageWhenAnotherArrivesAtOnce(self):
        store = RacingStore()
        folders = MemoryFolderStore(store)
        account = IMAPAccount(folders, store, 1, "alice@example.test")
        self.successResultOf(account.listFolders())
        store.racing = True
        raw = b"Subject: mine\r\n\r\nappended\r\n"
        code = self.successResultOf(
            account.append("INBOX", memorySpool(raw), ["$Mine"], None)
        )
        view = self.successResultOf(account.select("INBOX", True))
        self.assertEqual(len(view.uids), 2)
        self.assertEqual(code, b"[APPENDUID %d 1]" % view.uidValidity)
        self.assertEqual(sorted(view.rows[1].keywords), ["$Mine"])
        self.assertEqual(sorted(view.rows[2].keywords), [])

    def test_appendToAMissingFolderDiscardsTheSpool(self):
        store = MemoryMessageStore()
        discarded = []
        account = IMAPAccount(
            MemoryFolderStore(store), store, 1, "a@x", discard=discarded.append
        )
        spool = memorySpool(b"Subject: x\r\n\r\ny\r\n")
        failure = self.failureResultOf(account.append("Nowhere", spool, [], None))
        self.assertEqual(failure.type.__name__, "NoSuchMailbox")
        self.assertEqual(discarded, [spool])


class SessionOverFakesTests(IMAPTestCase):
    """The protocol over the real account layer and the store fakes."""

    def setUp(self):
        super().setUp()
        self.store = MemoryMessageStore()
        folders = MemoryFolderStore(self.store)
        for n in range(2):
            envelope = Envelope("bob@example.org", recipients=[Recipient("a@x", 1)])
            raw = f"Subject: {n}\r\n\r\nbody {n}\r\n".encode()
            self.successResultOf(self.store.deliver(envelope, memorySpool(raw)))
        self.account = IMAPAccount(folders, self.store, 1, "alice@example.test")
        self.login()

    def test_aMessageExpungedElsewhereIsLeftOutOfFETCH(self):
        self.send(b"s SELECT INBOX\r\n")
        self.replies()
        gone = next(iter(self.store.entries))
        del self.store.entries[gone]
        self.send(b"a FETCH 1:* (BODY.PEEK[TEXT])\r\n")
        lines = self.replies()
        self.assertEqual(lines[0], "* 2 FETCH (BODY[TEXT] {8}")
        self.assertEqual(lines[-1], "a OK FETCH completed")
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertFalse(self.transport.disconnecting)

    def test_appendWithAFlagNoMessageCarriesIsAnsweredNo(self):
        """\\Recent and unknown system flags: a NO naming the flag, as STORE."""
        raw = b"hello"
        for flag in (b"\\Recent", b"\\Foo"):
            self.send(b"a APPEND INBOX (%s) {%d}\r\n" % (flag, len(raw)))
            self.send(raw + b"\r\n")
            last = self.replies()[-1]
            self.assertTrue(last.startswith("a NO "), last)
            self.assertIn(flag.decode(), last)
            self.assertNotIn("SERVERBUG", last)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.send(b"s STATUS INBOX (MESSAGES)\r\n")
        self.assertIn("(MESSAGES 2)", self.replies()[0])

    def test_keywordLimitsAreNoLimitAndAnAppendPastThemStoresNothing(self):
        self.send(b"s SELECT INBOX\r\n")
        self.replies()
        self.send(b"a STORE 1 +FLAGS (%s)\r\n" % (b"K" * 65))
        self.assertTrue(self.replies()[-1].startswith("a NO [LIMIT]"))
        many = b" ".join(b"kw%d" % n for n in range(100))
        self.send(b"b STORE 1 +FLAGS.SILENT (%s)\r\n" % many)
        self.assertEqual(self.replies()[-1], "b OK STORE completed")
        raw = b"hello"
        self.send(b"c APPEND INBOX (one-more) {%d}\r\n" % len(raw))
        self.send(raw + b"\r\n")
        self.assertTrue(self.replies()[-1].startswith("c NO [LIMIT]"))
        self.send(b"d STATUS INBOX (MESSAGES)\r\n")
        self.assertIn("(MESSAGES 2)", self.replies()[0])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_renameRefusalsAreCleanNo(self):
        """Special-use folders keep their names; a rename stranding an
        inferior past 200 characters and odd names are refused whole."""
        self.send(b"a CREATE ln2/child\r\n")
        self.replies()
        for line in (
            b"b RENAME Sent FooSent",
            b'c RENAME ln2 "%s"' % (b"M" * 199),
            b'd RENAME ln2 " ln3"',
            b"e RENAME ln2 ln2/../x",
            b'f CREATE "x "',
        ):
            self.send(line + b"\r\n")
            last = self.replies()[-1]
            self.assertTrue(last.startswith(line[:2].decode() + "NO "), (line, last))
        self.send(b'g LIST "" *\r\n')
        listed = "\n".join(self.replies())
        self.assertIn('\\Sent) "/" Sent', listed)
        self.assertIn("ln2/child", listed)
        self.assertNotIn("FooSent", listed)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_transferringNothingToAMissingFolderSaysTryCreate(self):
        """An empty message set still names the target: TRYCREATE as with
        messages, OK when the target exists."""
        self.send(b"s SELECT Archive\r\n")
        self.replies()
        for command in (b"UID COPY", b"UID MOVE", b"COPY", b"MOVE"):
            self.send(b"a %s 1:* Nope\r\n" % command)
            self.assertEqual(self.replies()[-1], "a NO [TRYCREATE] No such mailbox")
            self.send(b"b %s 1:* Trash\r\n" % command)
            self.assertTrue(self.replies()[-1].startswith("b OK"))
        self.assertEqual(self.flushLoggedErrors(), [])
