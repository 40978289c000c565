"""The outbound queue's durable state (IOutboundQueueStore): one contract,
run against the in-memory fake and SQLite fed by the message store."""

from __future__ import annotations

import time

from twisted.internet.defer import inlineCallbacks, succeed
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from mailraven.envelope import Recipient
from mailraven.interfaces import IOutboundQueueStore
from mailraven.outbound.state import DeliveryReply, Outcome
from mailraven.spool import memorySpool
from mailraven.store.outbound import SQLiteOutboundQueueStore
from mailraven.testing import MemoryOutboundQueueStore
from tests.test_store import MESSAGE, SQLiteFixture, envelope

RCPTS = ["dave@remote.test", "erin@remote.test"]


class OutboundQueueStoreContract:
    """What every IOutboundQueueStore does; send() queues RCPTS as sending
    one message does."""

    def setUp(self):
        self.queue = self.makeQueue()

    def test_providesTheInterface(self):
        self.assertTrue(verifyObject(IOutboundQueueStore, self.queue))

    @inlineCallbacks
    def test_emptyQueueHasNothingDue(self):
        self.assertIsNone((yield self.queue.nextDue()))
        self.assertEqual((yield self.queue.pendingCount()), 0)
        self.assertEqual((yield self.queue.due(time.time(), 10)), [])

    @inlineCallbacks
    def test_sentMessageIsDueForEachRecipient(self):
        yield self.send()
        due = yield self.queue.due(time.time(), 10)
        self.assertEqual(sorted(r.rcpt for r in due), RCPTS)
        self.assertEqual({r.attempts for r in due}, {0})
        self.assertEqual((yield self.queue.pendingCount()), 2)
        self.assertEqual(len((yield self.queue.due(time.time(), 1))), 1)

    @inlineCallbacks
    def test_recordedOutcomesLeaveOnlyTheDeferredRecipientDueLater(self):
        yield self.send()
        first, second = sorted(
            (yield self.queue.due(time.time(), 10)), key=lambda r: r.rcpt
        )
        later = time.time() + 600
        yield self.queue.record(
            [
                Outcome(
                    first.queueId, first.rcpt, "delivered", DeliveryReply(250, "ok")
                ),
                Outcome(
                    second.queueId,
                    second.rcpt,
                    "deferred",
                    DeliveryReply(451, "4.3.0 later"),
                    later,
                ),
            ]
        )
        self.assertEqual((yield self.queue.pendingCount()), 1)
        self.assertEqual((yield self.queue.nextDue()), later)
        self.assertEqual((yield self.queue.due(time.time(), 10)), [])
        [again] = yield self.queue.due(later, 10)
        self.assertEqual((again.rcpt, again.attempts), (second.rcpt, 1))

    @inlineCallbacks
    def test_delayNoticeIsRemembered(self):
        yield self.send()
        [first, _] = yield self.queue.due(time.time(), 10)
        yield self.queue.markDelayNotified(first.queueId, [first.rcpt])
        due = yield self.queue.due(time.time(), 10)
        self.assertEqual(
            {r.rcpt: r.delayNotified for r in due},
            {first.rcpt: True, next(r for r in RCPTS if r != first.rcpt): False},
        )


class MemoryOutboundQueueStoreTests(OutboundQueueStoreContract, TestCase):
    def makeQueue(self):
        return MemoryOutboundQueueStore()

    def send(self):
        self.queue.enqueue("q1", "m1", 1, "alice@example.test", list(RCPTS))
        return succeed(None)


class SQLiteOutboundQueueStoreTests(
    OutboundQueueStoreContract, SQLiteFixture, TestCase
):
    def makeQueue(self):
        self.setUpStore()
        return SQLiteOutboundQueueStore(self.db)

    @inlineCallbacks
    def send(self):
        sent = envelope(Recipient("alice@example.test", 1))
        sent.outbound = list(RCPTS)
        yield self.sqliteStore().deliver(sent, memorySpool(MESSAGE))
