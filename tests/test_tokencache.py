"""The API's memory of valid tokens: short, bounded, never past expiry."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailraven.api.tokencache import TokenCache

ALICE = (1, "alice@example.test", False)


class TokenCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.cache = TokenCache(self.clock, ttl=5, maxEntries=3)

    def test_rememberedForTheTTLOnly(self) -> None:
        self.cache.put("t", ALICE, expiresAt=10**10)
        self.clock.advance(4.9)
        self.assertEqual(self.cache.get("t"), ALICE)
        self.clock.advance(0.1)
        self.assertIsNone(self.cache.get("t"))

    def test_neverPastTheTokensExpiry(self) -> None:
        self.cache.put("t", ALICE, expiresAt=1002)
        self.clock.advance(1.9)
        self.assertEqual(self.cache.get("t"), ALICE)
        self.clock.advance(0.1)
        self.assertIsNone(self.cache.get("t"))

    def test_dropAndClearForgetAtOnce(self) -> None:
        self.cache.put("t", ALICE, expiresAt=10**10)
        self.cache.put("u", ALICE, expiresAt=10**10)
        self.cache.drop("t")
        self.assertIsNone(self.cache.get("t"))
        self.assertEqual(self.cache.get("u"), ALICE)
        self.cache.clear()
        self.assertIsNone(self.cache.get("u"))

    def test_boundedInSize(self) -> None:
        for n in range(3):
            self.cache.put(f"t{n}", ALICE, expiresAt=10**10)
        self.cache.put("t3", ALICE, expiresAt=10**10)
        self.assertEqual(
            [self.cache.get(f"t{n}") for n in range(4)], [None, None, None, ALICE]
        )
