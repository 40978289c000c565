"""The server's one cached resolver against a real twisted.names server:
answers and negative answers are cached for their TTL, identical questions
share one query, different ones run in parallel, and queries log nothing."""

from __future__ import annotations

import io

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.names import dns, error
from twisted.trial.unittest import TestCase

from mailraven.dnsresolver import CachingResolver, QuietResolver, makeResolver
from mailraven.logs import makeObserver
from mailraven.metrics import Metrics
from tests.dnszone import Zone, serveZone
from tests.helpers import sleep


def records() -> dict:
    return {
        "sender.example": [(dns.TXT, "v=spf1 ip4:127.0.0.1 -all")],
        "mx.sender.example": [(dns.A, "127.0.0.1")],
    }


class CachingResolverTests(TestCase):
    timeout = 30

    def resolverFor(self, zone: Zone, clock=None, **kwargs) -> CachingResolver:
        port = serveZone(self, zone)
        if clock is None:
            return makeResolver([f"127.0.0.1:{port}"], 1.0, reactor)
        return CachingResolver(
            lambda: QuietResolver(servers=[("127.0.0.1", port)], reactor=reactor),
            clock,
            **kwargs,
        )

    @inlineCallbacks
    def test_secondQuestionIsAnsweredFromTheCache(self):
        zone = Zone(records())
        resolver = self.resolverFor(zone)
        first, _, _ = yield resolver.lookupText("sender.example")
        second, _, _ = yield resolver.lookupText("Sender.Example.")
        self.assertEqual(zone.asked, [("sender.example", dns.TXT)])
        self.assertEqual(second[0].payload.data, first[0].payload.data)
        self.assertEqual(resolver.queries, 1)

    @inlineCallbacks
    def test_metricsCountCachedSentAndShared(self):
        metrics = Metrics()
        port = serveZone(self, Zone(records(), delay=0.1))
        resolver = makeResolver([f"127.0.0.1:{port}"], 1.0, reactor, metrics)
        yield gatherResults([resolver.lookupText("sender.example") for _ in range(3)])
        yield resolver.lookupText("sender.example")
        counts = {
            result: metrics.dnsQueries.labels(result)._value.get()
            for result in ("sent", "shared", "cached")
        }
        self.assertEqual(counts, {"sent": 1, "shared": 2, "cached": 1})

    @inlineCallbacks
    def test_answerExpiresWithItsTTL(self):
        zone = Zone(records())
        clock = Clock()
        resolver = self.resolverFor(zone, clock)
        yield resolver.lookupAddress("mx.sender.example")
        clock.advance(59)
        answers, _, _ = yield resolver.lookupAddress("mx.sender.example")
        self.assertEqual(answers[0].ttl, 1)  # what is left of the 60 s
        self.assertEqual(len(zone.asked), 1)
        clock.advance(2)
        yield resolver.lookupAddress("mx.sender.example")
        self.assertEqual(len(zone.asked), 2)

    @inlineCallbacks
    def test_nxdomainIsCachedForTheSOAMinimum(self):
        zone = Zone(records(), soa=(300, 120))
        clock = Clock()
        resolver = self.resolverFor(zone, clock)
        for _ in range(2):
            yield self.assertFailure(
                resolver.lookupText("_dmarc.sender.example"), error.DNSNameError
            )
        self.assertEqual(len(zone.asked), 1)
        clock.advance(121)
        yield self.assertFailure(
            resolver.lookupText("_dmarc.sender.example"), error.DNSNameError
        )
        self.assertEqual(len(zone.asked), 2)

    @inlineCallbacks
    def test_nodataIsCachedForTheSOAMinimum(self):
        zone = Zone(records(), soa=(30, 600))
        clock = Clock()
        resolver = self.resolverFor(zone, clock)
        for _ in range(2):
            answers, _, _ = yield resolver.lookupMailExchange("sender.example")
            self.assertEqual(answers, [])
        self.assertEqual(len(zone.asked), 1)
        clock.advance(31)  # min(SOA TTL, MINIMUM), RFC 2308 5
        yield resolver.lookupMailExchange("sender.example")
        self.assertEqual(len(zone.asked), 2)

    @inlineCallbacks
    def test_negativeAnswerWithoutSOAIsNotCached(self):
        zone = Zone(records())
        resolver = self.resolverFor(zone)
        for _ in range(2):
            yield self.assertFailure(
                resolver.lookupText("nowhere.example"), error.DNSNameError
            )
        self.assertEqual(len(zone.asked), 2)

    @inlineCallbacks
    def test_identicalQuestionsShareOneQuery(self):
        zone = Zone(records(), delay=0.2)
        resolver = self.resolverFor(zone)
        yield gatherResults([resolver.lookupText("sender.example") for _ in range(5)])
        self.assertEqual(len(zone.asked), 1)

    @inlineCallbacks
    def test_differentQuestionsRunInParallel(self):
        zone = Zone(records(), delay=1.0)
        resolver = self.resolverFor(zone)
        names = [f"n{i}.sender.example" for i in range(5)]
        pending = [resolver.lookupText(name) for name in names]
        yield sleep(0.5)
        # all five reached the server while the first answer is still due
        self.assertEqual(sorted(name for name, _ in zone.asked), names)
        self.assertFalse(any(d.called for d in pending))
        for d in pending:
            yield self.assertFailure(d, error.DNSNameError)

    @inlineCallbacks
    def test_cacheIsBounded(self):
        zone = Zone({f"h{i}.example": [(dns.A, "127.0.0.1")] for i in range(6)})
        resolver = self.resolverFor(zone, Clock(), maxEntries=3)
        for i in range(6):
            yield resolver.lookupAddress(f"h{i}.example")
        self.assertEqual(len(resolver), 3)
        yield resolver.lookupAddress("h5.example")  # the newest stayed
        self.assertEqual(len(zone.asked), 6)

    def test_cachedIsNoneForWhatWasNeverAsked(self):
        resolver = CachingResolver(lambda: None, Clock())
        self.assertIsNone(resolver.cached("sender.example", dns.TXT))

    @inlineCallbacks
    def test_queriesLogNothing(self):
        """
        twisted.names logged four lines per query (protocol start/stop, UDP
        port opened/closed): none of them reach the server's log.
        """
        resolver = self.resolverFor(Zone(records()))  # the server's port logs
        events: list[dict] = []
        output = io.StringIO()
        observer = makeObserver("text", "info", output)
        for each in (events.append, observer):
            globalLogPublisher.addObserver(each)
            self.addCleanup(globalLogPublisher.removeObserver, each)
        for i in range(3):
            yield self.assertFailure(
                resolver.lookupText(f"x{i}.sender.example"), error.DNSNameError
            )
        yield sleep(0.05)  # the ports close after the answer
        texts = [e.get("log_text", "") for e in events]
        self.assertEqual([t for t in texts if "ing protocol" in t], [])
        self.assertEqual(len([t for t in texts if "starting on" in t]), 3)
        self.assertEqual(output.getvalue(), "")
