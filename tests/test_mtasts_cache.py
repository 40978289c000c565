"""The MTA-STS policy cache (IMTASTSPolicyCache): one contract, run against
the in-memory fake and the SQLite store."""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from mailraven.interfaces import IMTASTSPolicyCache
from mailraven.outbound.mtasts import STSPolicy
from mailraven.store.mtasts import SQLiteMTASTSPolicyCache
from mailraven.testing import MemoryMTASTSPolicyCache
from tests.test_store import SQLiteFixture

ENFORCED = STSPolicy("20260101", "enforce", ("mx.example.test",), 86400, 1000.0)
TESTING = STSPolicy("20260202", "testing", ("*.example.test", "mx2.test"), 60, 5.5)


class MTASTSPolicyCacheContract:
    """What every IMTASTSPolicyCache does."""

    def setUp(self):
        self.cache = self.makeCache()

    def test_providesTheInterface(self):
        self.assertTrue(verifyObject(IMTASTSPolicyCache, self.cache))

    @inlineCallbacks
    def test_unknownDomainHasNoPolicy(self):
        self.assertIsNone((yield self.cache.load("example.test")))

    @inlineCallbacks
    def test_savedPolicyComesBackWhole(self):
        yield self.cache.save("example.test", ENFORCED)
        self.assertEqual((yield self.cache.load("example.test")), ENFORCED)

    @inlineCallbacks
    def test_saveReplacesOnlyThatDomainsPolicy(self):
        yield self.cache.save("example.test", ENFORCED)
        yield self.cache.save("other.test", ENFORCED)
        yield self.cache.save("example.test", TESTING)
        self.assertEqual((yield self.cache.load("example.test")), TESTING)
        self.assertEqual((yield self.cache.load("other.test")), ENFORCED)


class MemoryMTASTSPolicyCacheTests(MTASTSPolicyCacheContract, TestCase):
    def makeCache(self):
        return MemoryMTASTSPolicyCache()


class SQLiteMTASTSPolicyCacheTests(MTASTSPolicyCacheContract, SQLiteFixture, TestCase):
    def makeCache(self):
        self.setUpStore()
        return SQLiteMTASTSPolicyCache(self.db)
