"""The sender list store (ISenderListStore): one contract, run against the
in-memory fake and the SQLite store."""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from mailraven.interfaces import ISenderListStore
from mailraven.store.senderlists import SQLiteSenderListStore
from mailraven.testing import MemorySenderListStore
from tests.test_store import SQLiteFixture


class SenderListStoreContract:
    """What every ISenderListStore does (users 1 and 2 exist)."""

    def setUp(self):
        self.store = self.makeStore()

    def test_providesTheInterface(self):
        self.assertTrue(verifyObject(ISenderListStore, self.store))

    @inlineCallbacks
    def test_nothingTrainedIsEmpty(self):
        self.assertEqual((yield self.store.lists()), {})

    @inlineCallbacks
    def test_trainedSendersAreListedPerAccountLowerCased(self):
        yield self.store.train(1, "Spammer@Example.TEST", "block")
        yield self.store.train(1, "friend.test", "allow")
        yield self.store.train(2, "spammer@example.test", "allow")
        self.assertEqual(
            (yield self.store.lists()),
            {
                1: {"spammer@example.test": "block", "friend.test": "allow"},
                2: {"spammer@example.test": "allow"},
            },
        )

    @inlineCallbacks
    def test_trainingAgainReplacesTheKind(self):
        yield self.store.train(1, "x@example.test", "block")
        yield self.store.train(1, "x@example.test", "allow")
        self.assertEqual((yield self.store.lists()), {1: {"x@example.test": "allow"}})


class MemorySenderListStoreTests(SenderListStoreContract, TestCase):
    def makeStore(self):
        return MemorySenderListStore()


class SQLiteSenderListStoreTests(SenderListStoreContract, SQLiteFixture, TestCase):
    def makeStore(self):
        self.setUpStore()
        return SQLiteSenderListStore(self.db)
