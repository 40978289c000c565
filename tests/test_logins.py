"""The login limiter every login path shares, driven with a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailraven.interfaces import ILoginLimiter
from mailraven.metrics import Metrics
from mailraven.policy.logins import LoginLimiter, LoginTicket, Throttled

A, B = "alice@example.test", "bob@example.test"


class LoginLimiterTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.metrics = Metrics()
        self.limiter = LoginLimiter(
            self.clock,
            ipFailures=3,
            accountFailures=5,
            window=900,
            metric=self.metrics.loginAttempts,
        )

    def failAs(self, ip: str, login: str) -> None:
        ticket = self.limiter.reserve(ip, login, "smtp")
        self.assertIsInstance(ticket, LoginTicket)
        ticket.failed()

    def count(self, outcome: str) -> float:
        return self.metrics.registry.get_sample_value(
            "mailraven_login_attempts_total",
            {"protocol": "smtp", "outcome": outcome},
        )

    def test_providesTheInterface(self):
        verifyObject(ILoginLimiter, self.limiter)

    def test_attemptsInFlightCountAgainstTheBudget(self):
        tickets = [self.limiter.reserve("192.0.2.1", A, "smtp") for _ in range(3)]
        self.assertTrue(all(isinstance(t, LoginTicket) for t in tickets))
        refused = self.limiter.reserve("192.0.2.1", A, "smtp")
        self.assertEqual(refused, Throttled("ip", 1.0))
        tickets[0].succeeded()
        self.assertIsInstance(self.limiter.reserve("192.0.2.1", A, "smtp"), LoginTicket)
        self.assertEqual((self.count("success"), self.count("throttled")), (1, 1))

    def test_aTicketCountsOnce(self):
        ticket = self.limiter.reserve("192.0.2.1", A, "smtp")
        self.assertEqual(ticket.failed(), 0.5)
        ticket.failed()
        ticket.succeeded()
        self.assertEqual(self.limiter.failures(ip="192.0.2.1"), 1)
        self.assertEqual((self.count("failure"), self.count("success")), (1, None))

    def test_failuresAgeOutOfTheWindow(self):
        for _ in range(3):
            self.failAs("192.0.2.1", A)
            self.clock.advance(100)
        refused = self.limiter.reserve("192.0.2.1", A, "smtp")
        self.assertEqual(refused, Throttled("ip", 600.0))  # the first ages out
        self.clock.advance(600)
        self.assertIsInstance(self.limiter.reserve("192.0.2.1", A, "smtp"), LoginTicket)

    def test_successOnOneAccountKeepsTheFailuresAgainstAnother(self):
        self.failAs("192.0.2.1", A)
        self.failAs("192.0.2.1", A)
        self.limiter.reserve("192.0.2.1", B, "smtp").succeeded()
        self.assertEqual(self.limiter.failures(ip="192.0.2.1"), 2)
        self.failAs("192.0.2.1", A)
        self.assertIsInstance(self.limiter.reserve("192.0.2.1", B, "smtp"), Throttled)

    def test_successForgetsThatIPsFailuresAgainstThatAccountOnly(self):
        self.failAs("192.0.2.1", A)
        self.failAs("198.51.100.7", A)
        self.limiter.reserve("192.0.2.1", A, "smtp").succeeded()
        self.assertEqual(self.limiter.failures(ip="192.0.2.1"), 0)
        self.assertEqual(self.limiter.failures(login=A), 1)  # the other IP's

    def test_manyIPsAgainstOneAccountAreThrottled(self):
        for n in range(5):
            self.failAs(f"203.0.113.{n}", A.upper())  # logins are case-blind
        refused = self.limiter.reserve("203.0.113.99", A, "smtp")
        self.assertEqual(refused.scope, "account")
        self.assertIsInstance(
            self.limiter.reserve("203.0.113.99", B, "smtp"), LoginTicket
        )

    def test_anIPThatLoggedInIsNotLockedOutOfItsAccount(self):
        self.limiter.reserve("192.0.2.1", A, "smtp").succeeded()
        for n in range(5):
            self.failAs(f"203.0.113.{n}", A)
        self.assertIsInstance(
            self.limiter.reserve("203.0.113.99", A, "smtp"), Throttled
        )
        self.assertIsInstance(self.limiter.reserve("192.0.2.1", A, "smtp"), LoginTicket)

    def test_pruneForgetsWhatAgedOutAndBoundsTheTables(self):
        limiter = LoginLimiter(self.clock, ipFailures=3, window=60, maxKeys=10)
        for n in range(30):
            limiter.reserve(f"203.0.113.{n}", f"u{n}@example.test", "api").failed()
            self.clock.advance(1)
        limiter.prune()
        self.assertEqual((len(limiter._byIP), len(limiter._byAccount)), (10, 10))
        self.assertEqual(limiter.failures(ip="203.0.113.29"), 1)
        self.assertEqual(limiter.failures(ip="203.0.113.0"), 0)
        self.clock.advance(61)
        limiter.prune()
        self.assertEqual((len(limiter._byIP), len(limiter._byAccount)), (0, 0))
