"""The spool's shared memory budget: what it keeps, what it spills, and that
every byte it took is given back."""

from __future__ import annotations

import os

from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from mailraven.spool import MemoryBudget, Spool


class InlineReactor:
    """Runs C{callFromThread} calls at once (the pool below is inline too)."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class InlinePool(ThreadPool):
    """A thread pool that runs each job in the caller's thread, at once."""

    def callInThreadWithCallback(self, onResult, func, *args, **kw):
        try:
            result = func(*args, **kw)
        except BaseException as e:  # as the real pool reports failures
            onResult(False, e)
        else:
            onResult(True, result)


class BudgetTests(SynchronousTestCase):
    def spool(self, budget: MemoryBudget, memoryLimit: int = 1 << 20) -> Spool:
        return Spool(self.tempDir(), InlineReactor(), InlinePool(), memoryLimit, budget)

    def tempDir(self) -> str:
        path = self.mktemp()
        os.makedirs(path)
        return path

    def test_spoolsShareTheBudgetAndSpillPastIt(self):
        budget = MemoryBudget(100)
        first, second = self.spool(budget), self.spool(budget)
        self.assertIsNone(first.write(b"a" * 60))
        self.assertIsNone(second.write(b"b" * 40))
        self.assertEqual(budget.used, 100)
        spilled = second.write(b"c")  # over the budget: all of it to disk
        self.assertIsNotNone(spilled)
        self.successResultOf(spilled)
        self.assertEqual(budget.used, 60)
        self.assertIsNotNone(second.path)
        self.assertEqual(b"".join(second.chunks()), b"b" * 40 + b"c")
        self.assertEqual(budget.peak, 100)

    def test_everyReservationIsGivenBack(self):
        budget = MemoryBudget(1000)
        discarded, handed = self.spool(budget), self.spool(budget)
        discarded.write(b"x" * 300)
        handed.write(b"y" * 300)
        self.assertEqual(budget.used, 600)
        discarded.discard()
        self.assertEqual(budget.used, 300)
        path, tail = handed.handOver()
        self.assertEqual((path, tail), (None, b"y" * 300))
        self.assertEqual(budget.used, 0)

    def test_perMessageLimitStillSpills(self):
        budget = MemoryBudget(1 << 30)
        spool = self.spool(budget, memoryLimit=10)
        self.assertIsNone(spool.write(b"123456789"))
        self.successResultOf(spool.write(b"0"))
        self.assertEqual(budget.used, 0)
        self.assertIsNone(spool.write(b"tail"))
        self.assertEqual(budget.used, 4)
        self.assertEqual(b"".join(spool.chunks()), b"1234567890tail")
        spool.discard()
        self.assertEqual(budget.used, 0)
        self.assertIsNone(spool.path)
