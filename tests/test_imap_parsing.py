"""FETCH parses messages in the IMAP service's pool, never on the reactor."""

from __future__ import annotations

import threading

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.python.threadable import isInIOThread
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from mailraven.imap.parsing import PooledParser, parseMessage
from tests import test_imap_sections as sections
from tests.helpers import PASSWORD, RunningServer
from tests.test_imap_e2e import fetchOne, ok, starttls


class RecordingParse:
    """L{parseMessage}, noting where it ran; held until C{release} is set."""

    def __init__(self) -> None:
        self.inReactorThread: list[bool] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, raw: bytes):
        self.inReactorThread.append(isInIOThread())
        self.release.wait(60)
        return parseMessage(raw)


class PooledParserTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_parseRunsInThePoolAndFiresOnTheReactor(self):
        pool = ThreadPool(1, 1, name="test-parse")
        pool.start()
        self.addCleanup(pool.stop)
        recording = RecordingParse()
        parsed = yield PooledParser(reactor, pool, recording).parse(sections.MESSAGE)
        self.assertEqual(recording.inReactorThread, [False])
        self.assertTrue(isInIOThread())
        self.assertEqual(parsed.part.message["subject"], "nested")
        self.assertEqual(len(parsed.sections.children), 3)


class FetchParsingTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        imap = self.server.root.getServiceNamed("imap")
        self.recording = RecordingParse()
        imap.factory.parser = PooledParser(reactor, imap.parsePool, self.recording)

    def session(self, *commands):
        client = starttls(self.server.imapPort)
        ok(client.login("alice@example.test", PASSWORD))
        ok(client.append("INBOX", None, None, sections.MESSAGE))
        ok(client.select("INBOX"))
        [uid] = ok(client.uid("SEARCH", "ALL"))
        found = [fetchOne(client, uid, items) for items in commands]
        client.logout()
        return found

    @inlineCallbacks
    def test_structureThenPartsParseOnceInThePool(self):
        found = yield deferToThread(
            self.session,
            "(BODY.PEEK[])",
            "(ENVELOPE BODYSTRUCTURE)",
            "(BODY.PEEK[2.1])",
            "(BODY.PEEK[3.MIME])",
        )
        self.assertEqual(found[0][1], sections.MESSAGE)
        self.assertIn(b'"nested"', found[1][0])
        self.assertIn(b'"MIXED"', found[1][0])
        self.assertEqual(found[2][1], sections.PART21_BODY)
        self.assertEqual(found[3][1], sections.PART3_MIME)
        # BODY[] needs no parse; the structure one; the parts reuse it
        self.assertEqual(self.recording.inReactorThread, [False])

    @inlineCallbacks
    def test_otherSessionsAreAnsweredWhileAParseRuns(self):
        self.recording.release.clear()
        fetching = deferToThread(self.session, "(BODYSTRUCTURE)")

        def otherSession():
            for _ in range(600):  # the first session's parse has started
                if self.recording.inReactorThread:
                    break
                threading.Event().wait(0.1)
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.noop())
            client.logout()
            return self.recording.release.is_set()

        releasedBefore = yield deferToThread(otherSession)
        self.assertFalse(releasedBefore)
        self.assertEqual(self.recording.inReactorThread, [False])
        self.recording.release.set()
        [(line, _)] = yield fetching
        self.assertIn(b"BODYSTRUCTURE", line)
