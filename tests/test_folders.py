"""The folder store IMAP will stand on (IFolderStore): one contract run
against the in-memory fake and SQLite, the message-set helpers, and what a
delivery through a running server gives a folder."""

from __future__ import annotations

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mailraven.envelope import Recipient
from mailraven.interfaces import IFolderStore
from mailraven.spool import memorySpool
from mailraven.store.folders import (
    MAX_FOLDERS,
    BadFlag,
    BadFolderName,
    BadMessageSet,
    FolderExists,
    FolderLimit,
    FolderRefused,
    KeywordLimit,
    NoSuchFolder,
    SQLiteFolderStore,
    normaliseFolderName,
    resolveUidSet,
    sequenceUids,
    uidsIn,
)
from mailraven.store.users import addUser, removeUser
from mailraven.testing import MemoryFolderStore, MemoryMessageStore
from tests.helpers import RunningServer
from tests.test_mobile_api import APIClient
from tests.test_recipient_addresses import send
from tests.test_store import MESSAGE, SQLiteFixture, envelope
from tests.test_workers import WorkerFixture

ALICE = 1
CAROL = 2
ALL = [(1, None)]  # the UID set 1:*


class FolderStoreContract:
    """What every IFolderStore does. Subclasses define makeStores(): an
    IMessageStore that delivers (the API's view) and the IFolderStore over
    the same mail, for accounts 1 (alice) and 2 (carol)."""

    @inlineCallbacks
    def setUp(self):
        self.messages, self.folders = self.makeStores()
        yield self.settled()

    def settled(self):
        """Fires once the accounts exist (the fake's need no wait)."""
        return None

    @inlineCallbacks
    def deliver(self, count=1, userId=ALICE):
        for _ in range(count):
            yield self.messages.deliver(
                envelope(Recipient(f"u{userId}@example.test", userId)),
                memorySpool(MESSAGE),
            )

    @inlineCallbacks
    def uids(self, name="INBOX", userId=ALICE):
        listed = yield self.folders.messages(userId, name)
        return [m.uid for m in listed]

    @inlineCallbacks
    def folder(self, name, userId=ALICE):
        found = yield self.folders.folder(userId, name)
        return found

    def test_providesInterface(self):
        self.assertTrue(verifyObject(IFolderStore, self.folders))

    @inlineCallbacks
    def test_everyAccountStartsWithTheSixFolders(self):
        found = yield self.folders.folders(ALICE)
        self.assertEqual(
            [(f.name, f.mailbox, f.specialUse) for f in found],
            [
                ("INBOX", "inbox", None),
                ("Archive", "archive", "\\Archive"),
                ("Drafts", "drafts", "\\Drafts"),
                ("Junk", "junk", "\\Junk"),
                ("Sent", "sent", "\\Sent"),
                ("Trash", "trash", "\\Trash"),
            ],
        )
        for f in found:
            self.assertEqual(
                (f.uidnext, f.total, f.unseen, f.subscribed), (1, 0, 0, True)
            )
            self.assertGreater(f.uidvalidity, 0)
            self.assertGreaterEqual(f.highestModseq, 1)

    @inlineCallbacks
    def test_deliveredMailGetsUidsInArrivalOrder(self):
        yield self.deliver(3)
        listed = yield self.folders.messages(ALICE, "inbox")  # INBOX in any case
        self.assertEqual([m.uid for m in listed], [1, 2, 3])
        first = listed[0]
        self.assertEqual((first.flags, first.keywords), (frozenset(), frozenset()))
        self.assertEqual(first.size, len(MESSAGE))
        self.assertTrue(first.internalDate.startswith("20"))
        self.assertEqual(len({m.entryId for m in listed}), 3)
        self.assertLess(listed[0].modseq, listed[2].modseq)
        inbox = yield self.folder("INBOX")
        self.assertEqual((inbox.uidnext, inbox.total, inbox.unseen), (4, 3, 3))
        self.assertGreaterEqual(inbox.highestModseq, listed[2].modseq)
        self.assertEqual((yield self.uids(userId=CAROL)), [])

    @inlineCallbacks
    def deliverText(self, subject, body, userId=ALICE, sender="Bob <bob@example.org>"):
        raw = (
            f"From: {sender}\r\nTo: Team <u{userId}@example.test>\r\n"
            f"Subject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"\r\n{body}\r\n"
        ).encode()
        recipient = Recipient(f"u{userId}@example.test", userId)
        yield self.messages.deliver(envelope(recipient), memorySpool(raw))

    @inlineCallbacks
    def test_searchFindsWordsInItsFolderOfItsAccountOnly(self):
        yield self.deliverText("Quarterly budget", "see the attached invoices")
        yield self.deliverText(
            "Lunch", "Bücher and budgeting", sender="Zed Quill <z@q.org>"
        )
        yield self.deliverText("Budget draft", "nothing else")  # moved
        yield self.deliverText("Old budget", "expunged invoice")  # expunged
        yield self.deliverText("Budget", "carol's invoice", userId=CAROL)
        yield self.folders.move(ALICE, "INBOX", [(3, 3)], "Archive")
        yield self.folders.setFlags(ALICE, "INBOX", [(4, 4)], ["\\Deleted"], "add")
        yield self.folders.expunge(ALICE, "INBOX")

        def search(field, text, name="INBOX", userId=ALICE):
            return self.folders.search(userId, name, field, text)

        for field, text, expected in [
            ("text", "budget", {1, 2}),  # subject of 1, a prefix of "budgeting"
            ("body", "budget", {2}),  # not in 1's body
            ("body", "INVOICE", {1}),  # prefix, any case
            ("body", "bucher", {2}),  # accents ignored
            ("body", "bücher", {2}),
            ("body", "voice", set()),  # not the start of a word
            ("text", "quill", {2}),
            ("text", "carol", set()),
            ("subject", "udget", {1}),  # a substring of the header
            ("subject", "lunch", {2}),
            ("from", "zed q", {2}),
            ("from", "bob@", {1}),
            ("to", "TEAM", {1, 2}),
        ]:
            self.assertEqual((yield search(field, text)), expected, (field, text))
        self.assertEqual((yield search("text", "budget", "Archive")), {1})
        self.assertEqual((yield search("body", "invoice", userId=CAROL)), {1})
        self.assertEqual((yield search("text", "budget", "Sent")), set())
        for field, text in [("body", "two words"), ("text", "@example"), ("cc", "x")]:
            yield self.assertFailure(search(field, text), ValueError)
        yield self.assertFailure(search("text", "budget", "Nowhere"), NoSuchFolder)

    @inlineCallbacks
    def test_uidSetsSelectMessages(self):
        yield self.deliver(5)
        for uids, expected in [
            ([(2, 3)], [2, 3]),
            ([(4, 2)], [2, 3, 4]),  # high end first
            ([(4, None)], [4, 5]),
            ([(9, None)], [5]),  # n:* always holds the last message
            ([(1, 1), (5, 5), (7, 8)], [1, 5]),
            ([(7, 8)], []),
        ]:
            listed = yield self.folders.messages(ALICE, "INBOX", uids)
            self.assertEqual([m.uid for m in listed], expected, uids)

    @inlineCallbacks
    def test_flagsAreAddedRemovedAndReplacedWithNewModseqs(self):
        yield self.deliver(2)
        before = (yield self.folder("INBOX")).highestModseq
        change = yield self.folders.setFlags(
            ALICE, "INBOX", [(1, 1)], ["\\seen", "\\Answered", "$Label1"], "add"
        )
        self.assertEqual(list(change.changed), [1])
        self.assertGreater(change.changed[1], before)
        [first] = yield self.folders.messages(ALICE, "INBOX", [(1, 1)])
        self.assertEqual(first.flags, {"\\Seen", "\\Answered"})
        self.assertEqual(first.keywords, {"$Label1"})
        self.assertEqual(first.modseq, change.changed[1])
        self.assertEqual((yield self.folder("INBOX")).highestModseq, first.modseq)
        # nothing to change: no new modseq
        again = yield self.folders.setFlags(ALICE, "INBOX", ALL, ["\\Seen"], "add")
        self.assertEqual(list(again.changed), [2])
        removed = yield self.folders.setFlags(
            ALICE, "INBOX", ALL, ["\\Answered", "$Label1"], "remove"
        )
        self.assertEqual(list(removed.changed), [1])
        replaced = yield self.folders.setFlags(
            ALICE,
            "INBOX",
            ALL,
            ["\\Flagged", "\\Draft", "\\Deleted", "work"],
            "replace",
        )
        self.assertEqual(sorted(replaced.changed), [1, 2])
        listed = yield self.folders.messages(ALICE, "INBOX")
        for m in listed:
            self.assertEqual(m.flags, {"\\Flagged", "\\Draft", "\\Deleted"})
            self.assertEqual(m.keywords, {"work"})
        inbox = yield self.folder("INBOX")
        self.assertEqual(inbox.unseen, 2)

    @inlineCallbacks
    def test_flagsSetHereAreTheApisAndTheReverse(self):
        """\\Seen is read_state, \\Flagged is starred: one state, two views."""
        yield self.deliver(1)
        [entry] = yield self.messages.list(ALICE, "inbox", 10, 0)
        yield self.folders.setFlags(ALICE, "INBOX", ALL, ["\\Seen", "\\Flagged"], "add")
        seen = yield self.messages.get(entry["id"], ALICE)
        self.assertEqual((seen["read_state"], seen["starred"]), (True, True))
        [before] = yield self.folders.messages(ALICE, "INBOX")
        yield self.messages.updateFlags(entry["id"], ALICE, {"starred": False})
        [after] = yield self.folders.messages(ALICE, "INBOX")
        self.assertEqual(after.flags, {"\\Seen"})
        self.assertGreater(after.modseq, before.modseq)

    @inlineCallbacks
    def test_unchangedSinceLeavesNewerMessagesAlone(self):
        yield self.deliver(2)
        listed = yield self.folders.messages(ALICE, "INBOX")
        change = yield self.folders.setFlags(
            ALICE, "INBOX", ALL, ["\\Seen"], "add", unchangedSince=listed[0].modseq
        )
        self.assertEqual((list(change.changed), change.modified), ([1], [2]))

    @inlineCallbacks
    def test_badFlagsChangeNothing(self):
        yield self.deliver(1)
        for flags in (["\\Recent"], ["\\Whatever"], ["two words"], ["\\Seen", "a(b"]):
            yield self.assertFailure(
                self.folders.setFlags(ALICE, "INBOX", ALL, flags, "add"), BadFlag
            )
        [m] = yield self.folders.messages(ALICE, "INBOX")
        self.assertEqual(m.flags, frozenset())

    @inlineCallbacks
    def test_keywordsAreCappedInLengthAndNumber(self):
        """64 characters a keyword, 100 distinct an account ([LIMIT]); a
        keyword the account has, a removal or a COPY still passes."""
        yield self.deliver(2)
        failure = yield self.assertFailure(
            self.folders.setFlags(ALICE, "INBOX", ALL, ["K" * 65], "add"), KeywordLimit
        )
        self.assertIn("[LIMIT]", str(failure))
        yield self.folders.setFlags(ALICE, "INBOX", ALL, ["K" * 64], "add")
        many = [f"kw{n}" for n in range(99)]
        yield self.folders.setFlags(ALICE, "INBOX", [(1, 1)], many, "add")
        for target in ([(2, 2)], []):  # an empty set checks all the same
            yield self.assertFailure(
                self.folders.setFlags(ALICE, "INBOX", target, ["one-more"], "add"),
                KeywordLimit,
            )
        yield self.assertFailure(
            self.folders.setFlags(ALICE, "INBOX", ALL, ["x", "y"], "replace"),
            KeywordLimit,
        )
        yield self.folders.setFlags(ALICE, "INBOX", [(2, 2)], ["kw5"], "add")
        yield self.folders.copy(ALICE, "INBOX", ALL, "Archive")
        [first, second] = yield self.folders.messages(ALICE, "INBOX")
        self.assertEqual(len(first.keywords), 100)
        self.assertEqual(second.keywords, {"K" * 64, "kw5"})
        # another account has its own hundred
        yield self.deliver(1, userId=2)
        yield self.folders.setFlags(2, "INBOX", ALL, ["one-more"], "add")
        # a removal makes room
        yield self.folders.setFlags(ALICE, "INBOX", ALL, many, "remove")
        yield self.folders.setFlags(ALICE, "Archive", ALL, many, "remove")
        yield self.folders.setFlags(ALICE, "INBOX", ALL, ["one-more"], "add")

    @inlineCallbacks
    def test_moveGivesNewUidsFromTheDestination(self):
        yield self.deliver(3)
        yield self.folders.move(ALICE, "INBOX", [(1, 1)], "Archive")
        pairs = yield self.folders.move(ALICE, "INBOX", [(2, 3)], "Archive")
        self.assertEqual(pairs, [(2, 2), (3, 3)])
        self.assertEqual((yield self.uids("Archive")), [1, 2, 3])
        self.assertEqual((yield self.uids("INBOX")), [])
        # the API sees them in archive
        listed = yield self.messages.list(ALICE, "archive", 10, 0)
        self.assertEqual(len(listed), 3)
        # and back: new UIDs again, never the old ones
        back = yield self.folders.move(ALICE, "Archive", [(1, 1)], "INBOX")
        self.assertEqual(back, [(1, 4)])
        yield self.assertFailure(
            self.folders.move(ALICE, "INBOX", ALL, "inbox"), FolderRefused
        )

    @inlineCallbacks
    def test_aMoveByTheApiGivesANewUidToo(self):
        yield self.deliver(2)
        [newest, _] = yield self.messages.list(ALICE, "inbox", 10, 0)
        yield self.messages.delete(newest["id"], ALICE)  # a move to trash
        self.assertEqual((yield self.uids("INBOX")), [1])
        [trashed] = yield self.folders.messages(ALICE, "Trash")
        self.assertEqual((trashed.uid, trashed.entryId), (1, newest["id"]))
        yield self.deliver(1)
        self.assertEqual((yield self.uids("INBOX")), [1, 3])

    @inlineCallbacks
    def test_moveEntryTakesAUidFromAnyFolderOfTheAccount(self):
        yield self.deliver(2)
        yield self.deliver(1, userId=CAROL)
        [newest, oldest] = yield self.messages.list(ALICE, "inbox", 10, 0)
        made = yield self.folders.create(ALICE, "Work/Projects")
        yield self.folders.move(ALICE, "INBOX", [(1, 1)], "Work/Projects")
        before = yield self.folder("Work/Projects")
        uid = yield self.folders.moveEntry(ALICE, newest["id"], made.mailbox)
        self.assertEqual(uid, 2)  # after the one MOVE put there
        self.assertEqual((yield self.uids("Work/Projects")), [1, 2])
        self.assertEqual((yield self.uids("INBOX")), [])
        after = yield self.folder("Work/Projects")
        self.assertEqual(after.uidnext, 3)
        self.assertGreater(after.highestModseq, before.highestModseq)
        # there already: nothing changes
        self.assertEqual(
            (yield self.folders.moveEntry(ALICE, newest["id"], made.mailbox)), 2
        )
        self.assertEqual((yield self.folder("Work/Projects")).uidnext, 3)
        # back to a standard folder by its key, through the same path
        self.assertEqual(
            (yield self.folders.moveEntry(ALICE, oldest["id"], "archive")), 1
        )
        [carols] = yield self.messages.list(CAROL, "inbox", 10, 0)
        self.assertIsNone((yield self.folders.moveEntry(ALICE, carols["id"], "inbox")))
        yield self.assertFailure(
            self.folders.moveEntry(CAROL, carols["id"], made.mailbox), NoSuchFolder
        )
        yield self.assertFailure(
            self.folders.moveEntry(ALICE, newest["id"], "folder-0"), NoSuchFolder
        )

    @inlineCallbacks
    def test_anAccountHasAtMostMaxFolders(self):
        levels = 99  # "0/a/a/...": 100 folders in one create, 199 characters
        for n in range((MAX_FOLDERS - 6) // (levels + 1)):
            yield self.folders.create(ALICE, str(n) + "/a" * levels)
        yield self.folders.create(ALICE, "solo")
        left = MAX_FOLDERS - len((yield self.folders.folders(ALICE)))
        yield self.assertFailure(
            self.folders.create(ALICE, "full" + "/a" * left), FolderLimit
        )
        yield self.assertFailure(
            self.folders.rename(ALICE, "solo", "new" + "/a" * left + "/solo"),
            FolderLimit,
        )
        self.assertEqual(len((yield self.folders.folders(ALICE))), MAX_FOLDERS - left)
        yield self.folders.create(ALICE, "last" + "/a" * (left - 1))
        yield self.assertFailure(self.folders.create(ALICE, "one"), FolderLimit)
        yield self.folders.create(CAROL, "one")  # a limit per account

    @inlineCallbacks
    def test_copyKeepsFlagsAndTheOriginal(self):
        yield self.deliver(2)
        yield self.folders.setFlags(ALICE, "INBOX", [(2, 2)], ["\\Seen", "kw"], "add")
        yield self.folders.create(ALICE, "Saved")
        pairs = yield self.folders.copy(ALICE, "INBOX", ALL, "Saved")
        self.assertEqual(pairs, [(1, 1), (2, 2)])
        copies = yield self.folders.messages(ALICE, "Saved")
        originals = yield self.folders.messages(ALICE, "INBOX")
        self.assertEqual([m.flags for m in copies], [m.flags for m in originals])
        self.assertEqual(copies[1].keywords, {"kw"})
        self.assertEqual(
            [m.internalDate for m in copies], [m.internalDate for m in originals]
        )
        self.assertNotEqual(copies[0].entryId, originals[0].entryId)
        again = yield self.folders.copy(ALICE, "Saved", [(1, 1)], "Saved")
        self.assertEqual(again, [(1, 3)])

    @inlineCallbacks
    def test_expungeRemovesOnlyDeletedAndUidsAreNeverReused(self):
        yield self.deliver(4)
        yield self.folders.setFlags(ALICE, "INBOX", [(2, 4)], ["\\Deleted"], "add")
        self.assertEqual((yield self.folders.expunge(ALICE, "INBOX", [(4, 4)])), [4])
        before = (yield self.folder("INBOX")).highestModseq
        self.assertEqual((yield self.folders.expunge(ALICE, "INBOX")), [2, 3])
        self.assertEqual((yield self.uids()), [1])
        inbox = yield self.folder("INBOX")
        self.assertEqual((inbox.uidnext, inbox.total), (5, 1))
        self.assertGreater(inbox.highestModseq, before)
        yield self.deliver(1)
        self.assertEqual((yield self.uids()), [1, 5])
        self.assertEqual((yield self.folders.expunge(ALICE, "INBOX")), [])

    @inlineCallbacks
    def test_createMakesMissingParentsAndRefusesDuplicates(self):
        made = yield self.folders.create(ALICE, "Work/Projects")
        self.assertEqual(
            (made.name, made.specialUse, made.subscribed),
            ("Work/Projects", None, False),
        )
        self.assertEqual(made.uidnext, 1)
        names = [f.name for f in (yield self.folders.folders(ALICE))]
        self.assertIn("Work", names)
        for name, error in [
            ("Work", FolderExists),
            ("inbox", FolderExists),
            ("", BadFolderName),
            ("a//b", BadFolderName),
            ("trailing/", BadFolderName),
            ("star*", BadFolderName),
            ("tab\there", BadFolderName),
        ]:
            yield self.assertFailure(self.folders.create(ALICE, name), error)
        # another account's names are its own
        yield self.folders.create(CAROL, "Work")

    @inlineCallbacks
    def test_renameTakesInferiorsAndKeepsMailUids(self):
        yield self.folders.create(ALICE, "Work/Projects")
        yield self.deliver(1)
        yield self.folders.move(ALICE, "INBOX", ALL, "Work/Projects")
        before = yield self.folder("Work/Projects")
        yield self.folders.rename(ALICE, "Work", "Jobs/Old")
        after = yield self.folder("Jobs/Old/Projects")
        self.assertEqual(
            (after.mailbox, after.uidvalidity, after.uidnext, after.total),
            (before.mailbox, before.uidvalidity, before.uidnext, 1),
        )
        self.assertIsNone((yield self.folder("Work")))
        self.assertIsNotNone((yield self.folder("Jobs")))
        for special in ("Sent", "Drafts", "Junk", "Trash", "Archive"):
            yield self.assertFailure(
                self.folders.rename(ALICE, special, special + "-old"), FolderRefused
            )
        sent = yield self.folder("Sent")
        self.assertEqual((sent.mailbox, sent.specialUse), ("sent", "\\Sent"))
        self.assertIsNone((yield self.folder("Sent-old")))
        yield self.assertFailure(
            self.folders.rename(ALICE, "Jobs", "Archive"), FolderExists
        )
        yield self.assertFailure(
            self.folders.rename(ALICE, "Nowhere", "Else"), NoSuchFolder
        )
        yield self.assertFailure(
            self.folders.rename(ALICE, "Jobs", "Jobs/Inner"), BadFolderName
        )

    @inlineCallbacks
    def test_aRenameThatWouldStrandAnInferiorChangesNothing(self):
        """An inferior renamed past 200 characters could not be reached."""
        yield self.folders.create(ALICE, "ln2/child")
        yield self.assertFailure(
            self.folders.rename(ALICE, "ln2", "M" * 199), BadFolderName
        )
        self.assertIsNotNone((yield self.folder("ln2/child")))
        self.assertIsNone((yield self.folder("M" * 199)))
        yield self.folders.rename(ALICE, "ln2", "M" * 194)
        self.assertIsNotNone((yield self.folder("M" * 194 + "/child")))

    @inlineCallbacks
    def test_namesWithEdgeSpacesOrDotLevelsAreNotMade(self):
        yield self.folders.create(ALICE, "Work")
        for name in (" Lead", "Trail ", "a/ b", "a /b", ".", "..", "a/../b", "a/."):
            yield self.assertFailure(self.folders.create(ALICE, name), BadFolderName)
            yield self.assertFailure(
                self.folders.rename(ALICE, "Work", name), BadFolderName
            )
        yield self.folders.create(ALICE, "My .files/a.b")
        self.assertIsNotNone((yield self.folder("Work")))

    @inlineCallbacks
    def test_renamingInboxMovesItsMailAndInboxStays(self):
        yield self.deliver(2)
        yield self.folders.rename(ALICE, "inbox", "Old mail")
        self.assertEqual((yield self.uids("Old mail")), [1, 2])
        inbox = yield self.folder("INBOX")
        self.assertEqual((inbox.total, inbox.uidnext), (0, 3))

    @inlineCallbacks
    def test_deleteRemovesAUserFolderAndItsMailOnly(self):
        yield self.folders.create(ALICE, "Old")
        yield self.deliver(2)
        yield self.folders.move(ALICE, "INBOX", [(1, 1)], "Old")
        old = yield self.folder("Old")
        self.assertEqual((yield self.folders.delete(ALICE, "Old")), 1)
        self.assertIsNone((yield self.folder("Old")))
        self.assertEqual((yield self.uids()), [2])
        for name in ("INBOX", "Trash", "Sent", "Drafts", "Junk", "Archive"):
            yield self.assertFailure(self.folders.delete(ALICE, name), FolderRefused)
        yield self.assertFailure(self.folders.delete(ALICE, "Old"), NoSuchFolder)
        # the name made again is a new folder to a client (RFC 3501 2.3.1.1)
        again = yield self.folders.create(ALICE, "Old")
        self.assertNotEqual(again.uidvalidity, old.uidvalidity)
        self.assertNotEqual(again.mailbox, old.mailbox)

    @inlineCallbacks
    def test_subscribeAndUnsubscribe(self):
        yield self.folders.create(ALICE, "News")
        yield self.folders.subscribe(ALICE, "News")
        self.assertTrue((yield self.folder("News")).subscribed)
        yield self.folders.subscribe(ALICE, "News", False)
        self.assertFalse((yield self.folder("News")).subscribed)
        yield self.assertFailure(self.folders.subscribe(ALICE, "Nope"), NoSuchFolder)

    @inlineCallbacks
    def test_unknownFolderFails(self):
        self.assertIsNone((yield self.folder("Nope")))
        for call in (
            lambda: self.folders.messages(ALICE, "Nope"),
            lambda: self.folders.setFlags(ALICE, "Nope", ALL, ["\\Seen"], "add"),
            lambda: self.folders.copy(ALICE, "INBOX", ALL, "Nope"),
            lambda: self.folders.move(ALICE, "Nope", ALL, "INBOX"),
            lambda: self.folders.expunge(ALICE, "Nope"),
            lambda: self.folders.delete(ALICE, "Nope"),
        ):
            yield self.assertFailure(call(), NoSuchFolder)


class MemoryFolderStoreTests(FolderStoreContract, TestCase):
    def makeStores(self):
        messages = MemoryMessageStore()
        return messages, MemoryFolderStore(messages)


class SQLiteFolderStoreTests(SQLiteFixture, FolderStoreContract, TestCase):
    def makeStores(self):
        messages = self.sqliteStore()
        return messages, SQLiteFolderStore(self.db)

    def settled(self):
        return self.db.write(lambda conn: None)  # after the fixture's accounts


class SQLiteFolderCountingTests(SQLiteFixture, TestCase):
    """What the database's triggers keep beside the folders."""

    @inlineCallbacks
    def setUp(self):
        self.messages = self.sqliteStore()
        self.folders = SQLiteFolderStore(self.db)
        yield self.messages.deliver(
            envelope(Recipient("alice@example.test", ALICE)), memorySpool(MESSAGE)
        )

    def used(self):
        return self.db.read(
            lambda c: c.execute("SELECT quota_used FROM users WHERE id = 1").fetchone()[
                0
            ]
        )

    @inlineCallbacks
    def test_quotaCountsCopiesAndFreesExpungedMail(self):
        self.assertEqual((yield self.used()), len(MESSAGE))
        yield self.folders.copy(ALICE, "INBOX", ALL, "Archive")
        self.assertEqual((yield self.used()), 2 * len(MESSAGE))
        yield self.folders.setFlags(ALICE, "Archive", ALL, ["\\Deleted"], "add")
        yield self.folders.expunge(ALICE, "Archive")
        self.assertEqual((yield self.used()), len(MESSAGE))
        yield self.folders.move(ALICE, "INBOX", ALL, "Trash")  # trash is free
        self.assertEqual((yield self.used()), 0)

    @inlineCallbacks
    def test_anAccountGivenARemovedOnesIdStartsAfresh(self):
        """Ids of removed accounts come back: never their folders or UIDs."""
        # the newest account's id is the one handed out again
        yield self.folders.create(CAROL, "Private")
        old = yield self.folders.folder(CAROL, "INBOX")
        yield self.db.write(lambda c: removeUser(c, "carol@example.test"))
        userId = yield self.db.write(lambda c: addUser(c, "eve@example.test", "x"))
        self.assertEqual(userId, CAROL)
        found = yield self.folders.folders(userId)
        self.assertEqual(len(found), 6)
        self.assertNotIn("Private", [f.name for f in found])
        inbox = found[0]
        self.assertEqual((inbox.uidnext, inbox.total), (1, 0))
        self.assertGreater(inbox.uidvalidity, old.uidvalidity)


class WorkerFolderStoreTests(WorkerFixture, FolderStoreContract, TestCase):
    """The contract again with the rows committed by store worker processes
    (the server's default path), which take UIDs under the writers' lock."""

    def makeStores(self):
        self.startWorkers()
        return self.store, SQLiteFolderStore(self.db)

    def settled(self):
        started = self.ready()
        started.addCallback(lambda _: self.db.write(lambda conn: None))
        return started

    @inlineCallbacks
    def test_mailArrivingTogetherGetsDistinctUids(self):
        yield gatherResults(
            [
                self.messages.deliver(
                    envelope(Recipient("alice@example.test", ALICE)),
                    memorySpool(MESSAGE),
                )
                for _ in range(12)
            ]
        )
        self.assertEqual(sorted((yield self.uids())), list(range(1, 13)))
        self.assertEqual((yield self.folder("INBOX")).uidnext, 13)


class ServerFolderTests(TestCase):
    """A running server: mail from a real SMTP client takes UIDs in INBOX, and
    the mobile API and the folder store show one state."""

    timeout = 60

    @inlineCallbacks
    def test_smtpMailAndApiChangesReachTheFolders(self):
        server = RunningServer(self)
        userId = yield server.addUser("alice@example.test")
        folders = server.root.folders
        self.assertTrue(verifyObject(IFolderStore, folders))
        for _ in range(2):
            refused, (code, _) = yield send(server, ["alice@example.test"])
            self.assertEqual((refused, code), ({}, 250))
        listed = yield folders.messages(userId, "INBOX")
        self.assertEqual([m.uid for m in listed], [1, 2])
        api = APIClient(self, server.apiPort)
        yield api.login()
        page = yield api.json("GET", "/messages")
        newest, oldest = page["messages"]
        yield api.json("PATCH", f"/messages/{newest['id']}", {"mailbox": "junk"})
        yield api.json("PATCH", f"/messages/{oldest['id']}", {"read_state": True})
        [kept] = yield folders.messages(userId, "INBOX")
        self.assertEqual(
            (kept.uid, kept.entryId, kept.flags), (1, oldest["id"], {"\\Seen"})
        )
        self.assertGreater(kept.modseq, listed[0].modseq)
        [junk] = yield folders.messages(userId, "Junk")
        self.assertEqual((junk.uid, junk.entryId), (1, newest["id"]))
        yield folders.setFlags(userId, "Junk", ALL, ["\\Flagged"], "add")
        found = yield api.json("GET", f"/messages/{newest['id']}")
        self.assertTrue(found["starred"])


class MessageSetTests(SynchronousTestCase):
    def test_uidSetsResolveAgainstTheLargestUid(self):
        self.assertEqual(resolveUidSet([(4, None), (1, 2), (3, 3)], 9), [(1, 9)])
        self.assertEqual(resolveUidSet([(5, 6), (1, 2)], 9), [(1, 2), (5, 6)])
        self.assertEqual(resolveUidSet([(20, None)], 9), [(9, 20)])
        self.assertEqual(resolveUidSet([(4, 2), (8, 9)], 0), [(2, 4), (8, 9)])

    def test_uidsInPicksPresentOnes(self):
        self.assertEqual(uidsIn([(2, 5)], [1, 3, 7]), [3])
        self.assertEqual(uidsIn([(9, None)], [1, 3, 7]), [7])
        self.assertEqual(uidsIn([(1, None)], []), [])

    def test_sequenceNumbersNameUidsByPosition(self):
        present = [3, 8, 10, 42]
        self.assertEqual(sequenceUids([(2, 3)], present), [8, 10])
        self.assertEqual(sequenceUids([(1, None)], present), present)
        self.assertEqual(sequenceUids([(None or 4, 4)], present), [42])
        self.assertRaises(BadMessageSet, sequenceUids, [(5, 5)], present)
        self.assertRaises(BadMessageSet, sequenceUids, [(0, 1)], present)

    def test_inboxIsCaseInsensitiveOthersAreNot(self):
        self.assertEqual(normaliseFolderName("iNbOx"), "INBOX")
        self.assertEqual(normaliseFolderName("Sent"), "Sent")
        self.assertEqual(normaliseFolderName("Über/Ärger"), "Über/Ärger")
        self.assertRaises(BadFolderName, normaliseFolderName, "x" * 201)
