"""The change feed: its contract, and that every path publishes its kind."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailraven.changes import KINDS, ChangeFeed, PublishingStore
from mailraven.envelope import Envelope, Recipient
from mailraven.imap.mailbox import IMAPAccount
from mailraven.interfaces import IChangeFeed
from mailraven.spool import memorySpool
from mailraven.testing import (
    MemoryFolderStore,
    MemoryMessageStore,
    RecordingChangeFeed,
)


class ChangeFeedContract:
    """Run against every IChangeFeed: C{makeFeed} returns a fresh one."""

    def makeFeed(self):
        raise NotImplementedError

    def test_providesIChangeFeed(self):
        self.assertTrue(verifyObject(IChangeFeed, self.makeFeed()))

    def test_listenersOfTheAccountOnlyHearItsChanges(self):
        feed, alice, bob = self.makeFeed(), [], []
        feed.subscribe(1, alice.append)
        feed.subscribe(2, bob.append)
        for kind in KINDS:
            feed.publish(1, kind)
        self.assertEqual([(c.userId, c.kind) for c in alice], [(1, k) for k in KINDS])
        self.assertEqual(bob, [])
        self.assertEqual(feed.subscribers(1), 1)

    def test_unsubscribedListenersHearNothing(self):
        feed, heard = self.makeFeed(), []
        feed.subscribe(1, heard.append)
        feed.unsubscribe(1, heard.append)
        feed.unsubscribe(1, heard.append)  # twice is harmless
        feed.publish(1, "new")
        self.assertEqual((heard, feed.subscribers(1)), ([], 0))

    def test_unknownKindRefused(self):
        self.assertRaises(ValueError, self.makeFeed().publish, 1, "bogus")

    def test_aFailingListenerDoesNotStopTheOthers(self):
        feed, heard = self.makeFeed(), []
        feed.subscribe(1, lambda change: 1 / 0)
        feed.subscribe(1, heard.append)
        feed.publish(1, "flags")
        self.assertEqual(len(heard), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class InProcessFeedTests(ChangeFeedContract, SynchronousTestCase):
    def makeFeed(self):
        return ChangeFeed()


class RecordingFeedTests(ChangeFeedContract, SynchronousTestCase):
    def makeFeed(self):
        return RecordingChangeFeed()

    def test_recordsWhatWasPublished(self):
        feed = self.makeFeed()
        feed.publish(3, "expunged")
        self.assertEqual(feed.published, [(3, "expunged")])


class PublishingPathTests(SynchronousTestCase):
    """Each store path publishes the kind a subscriber is promised."""

    def setUp(self):
        self.feed = ChangeFeed()
        self.kinds: list[str] = []
        self.feed.subscribe(1, lambda change: self.kinds.append(change.kind))
        self.messages = MemoryMessageStore()
        self.store = PublishingStore(self.messages, self.feed)
        self.folders = MemoryFolderStore(self.messages)
        self.account = IMAPAccount(
            self.folders, self.store, 1, "alice@x", changes=self.feed
        )

    def deliver(self) -> str:
        envelope = Envelope("bob@example.org", recipients=[Recipient("alice@x", 1)])
        raw = b"Subject: hi\r\n\r\nbody\r\n"
        return self.successResultOf(self.store.deliver(envelope, memorySpool(raw)))

    def entryId(self) -> str:
        [entry] = self.successResultOf(self.messages.list(1, "inbox", 10, 0))
        return entry["id"]

    def test_messageStorePaths(self):
        self.deliver()
        entryId = self.entryId()
        self.successResultOf(self.store.updateFlags(entryId, 1, {"starred": True}))
        self.successResultOf(self.store.updateFlags(entryId, 1, {"mailbox": "archive"}))
        self.successResultOf(self.store.delete(entryId, 1))
        self.successResultOf(self.store.delete("no-such-entry", 1))
        self.assertEqual(self.kinds, ["new", "flags", "moved", "moved"])

    def test_imapPaths(self):
        self.deliver()
        del self.kinds[:]
        account = self.account
        for call in (
            lambda: account.create("Work"),
            lambda: account.rename("Work", "Jobs"),
            lambda: account._call("setFlags", "INBOX", [(1, 1)], ["\\Seen"], "add"),
            lambda: account._call("copy", "INBOX", [(1, 1)], "Jobs"),
            lambda: account._call("move", "INBOX", [(1, 1)], "Archive"),
            lambda: account._call("setFlags", "Jobs", [(1, 1)], ["\\Deleted"], "add"),
            lambda: account._call("expunge", "Jobs", None),
            lambda: account.delete("Jobs"),
        ):
            self.successResultOf(call())
        self.assertEqual(
            self.kinds,
            ["folders", "folders", "flags", "new", "moved", "flags", "expunged"]
            + ["folders"],
        )
