"""RecipientResolver units: the lookup order of docs/addresses.md over the
in-memory fakes, time from a Clock."""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailraven.smtp.addresses import parsePath
from mailraven.smtp.recipients import DIRECTORY_MAX_AGE, RecipientResolver, Rejection
from mailraven.testing import MemoryAliasStore, MemoryDomainStore, MemoryUserStore


class ResolverTests(SynchronousTestCase):
    """C{resolve} raises at once when its directory is fresh (callers wrap
    it in maybeDeferred, as these helpers do)."""

    def setUp(self):
        self.clock = Clock()
        self.users = MemoryUserStore()
        self.aliases = MemoryAliasStore(self.users)
        self.alice = self.successResultOf(self.users.add("alice@example.test", "p"))
        self.bob = self.successResultOf(self.users.add("bob@example.test", "p"))
        self.domains = MemoryDomainStore(self.users, self.aliases)
        self.resolver = RecipientResolver(
            self.users,
            ["example.test"],
            self.clock,
            aliases=self.aliases,
            domainStore=self.domains,
        )

    def resolve(self, text: str) -> list[tuple[str, int, str]]:
        found = self.successResultOf(
            maybeDeferred(self.resolver.resolve, parsePath(text))
        )
        return [(r.address, r.userId, r.tag) for r in found]

    def refusal(self, text: str) -> int:
        return self.failureResultOf(
            maybeDeferred(self.resolver.resolve, parsePath(text)), Rejection
        ).value.code

    def test_aliasOfAForeignDomainIsNeverHonoured(self):
        """Even one that reached the store without the CLI's check."""
        self.aliases.add("sales@elsewhere.org", ["alice@example.test"])
        self.aliases.add("@elsewhere.org", ["alice@example.test"])
        self.assertEqual(self.refusal("sales@elsewhere.org"), 554)
        self.assertEqual(self.refusal("x@elsewhere.org"), 554)

    def test_aliasIsSeenAfterTheDirectoryAges(self):
        self.assertEqual(self.refusal("sales@example.test"), 550)
        self.aliases.add(
            "sales@example.test", ["alice@example.test", "bob@example.test"]
        )
        self.assertEqual(self.refusal("sales@example.test"), 550)
        self.clock.advance(DIRECTORY_MAX_AGE + 0.1)
        self.assertEqual(
            self.resolve("sales@example.test"),
            [
                ("sales@example.test", self.alice, ""),
                ("sales@example.test", self.bob, ""),
            ],
        )

    def test_addedDomainIsLocalUntilRemoved(self):
        """Added: its postmaster exists and its unknown users are 550; removed:
        554 again. Each after the directory ages, or at once after forget()."""
        self.assertEqual(self.refusal("postmaster@shop.example"), 554)
        self.domains.add("shop.example", "s1")
        self.assertEqual(self.refusal("postmaster@shop.example"), 554)
        self.clock.advance(DIRECTORY_MAX_AGE + 0.1)
        self.assertEqual(
            self.resolve("postmaster@shop.example"),
            [("postmaster@shop.example", self.alice, "")],
        )
        self.assertEqual(self.refusal("nobody@shop.example"), 550)
        self.assertEqual(self.refusal("nobody%elsewhere.org@shop.example"), 550)
        self.domains.remove("shop.example")
        self.resolver.forget()
        self.assertEqual(self.refusal("postmaster@shop.example"), 554)

    def test_subaddressEdges(self):
        self.assertEqual(
            self.resolve("alice+@example.test"),
            [("alice+@example.test", self.alice, "")],
        )
        self.assertEqual(
            self.resolve("alice+a+b@example.test"),
            [("alice+a+b@example.test", self.alice, "a+b")],
        )
        self.assertEqual(self.refusal("+news@example.test"), 550)
        self.assertEqual(self.refusal("alice+x%elsewhere.org@example.test"), 550)
        self.assertEqual(self.refusal("alice+news@elsewhere.org"), 554)

    def test_catchAllTakesWhatNothingElseDoes(self):
        self.aliases.add("@example.test", ["bob@example.test"])
        self.clock.advance(DIRECTORY_MAX_AGE + 0.1)
        self.assertEqual(
            self.resolve("alice+x@example.test"),
            [("alice+x@example.test", self.alice, "x")],
        )
        self.assertEqual(
            self.resolve("abuse@example.test"), [("abuse@example.test", self.alice, "")]
        )
        self.assertEqual(
            self.resolve("Who@example.test"), [("Who@example.test", self.bob, "")]
        )
        self.assertEqual(self.refusal('"who@else.org"@example.test'), 550)
