"""GET /api/v1/events: unit tests of one stream (heartbeat, coalescing) and
end-to-end tests against a running server (smtplib, imaplib, raw HTTP)."""

from __future__ import annotations

import http.client
import json
import time

from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from mailraven.api.events import BATCH, EventStreams
from mailraven.api.http import APIError
from mailraven.changes import ChangeFeed
from tests.helpers import PASSWORD, RunningServer
from tests.test_imap_e2e import ORIGINAL, apiCall, ok, sendBySMTP, starttls

CURSOR = "2026-12-06T06:00:00.000000Z"


class FakeDB:
    """C{read} answers from C{answers} (Deferreds or values), in order."""

    def __init__(self) -> None:
        self.answers: list = []
        self.reads = 0

    def read(self, fn):
        self.reads += 1
        answer = self.answers.pop(0)
        return answer if isinstance(answer, Deferred) else succeed(answer)


def batch(count: int, nextSince: str = CURSOR) -> dict:
    return {"messages": [{}] * count, "expunged": [], "count": count,
            "since": CURSOR, "next_since": nextSince}  # fmt: skip


class StreamTests(SynchronousTestCase):
    def setUp(self):
        self.clock, self.feed, self.db = Clock(), ChangeFeed(), FakeDB()
        self.valid = True

        def authenticate(request):
            if self.valid:
                return succeed((1, "alice@x"))
            return fail(APIError(401, "unauthorized", "The token is unknown"))

        self.streams = EventStreams(
            self.db, self.feed, self.clock, authenticate, heartbeat=25.0
        )
        self.request = DummyRequest([b"events"])
        self.request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer t"])

    def test_readyCarriesTheCursorAndHeadersForbidBuffering(self):
        self.db.answers.append(CURSOR)
        self.streams.serve(self.request, None, None)
        self.assertEqual(
            b"".join(self.request.written),
            b'event: ready\nid: %s\ndata: {"next_since":"%s"}\n\n'
            % (CURSOR.encode(), CURSOR.encode()),
        )
        headers = self.request.responseHeaders
        self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-cache"])
        self.assertEqual(headers.getRawHeaders(b"x-accel-buffering"), [b"no"])
        self.assertTrue(
            headers.getRawHeaders(b"content-type")[0].startswith(b"text/event-stream")
        )

    def test_heartbeatEveryIntervalAndAnExpiredTokenEndsTheStream(self):
        self.db.answers.append(CURSOR)
        done = self.streams.serve(self.request, None, None)
        del self.request.written[:]
        self.clock.advance(24.9)
        self.assertEqual(self.request.written, [])
        self.clock.advance(0.1)
        self.assertEqual(self.request.written, [b": ping\n\n"])
        self.clock.advance(25)
        self.assertEqual(len(self.request.written), 2)
        self.assertNoResult(done)
        self.valid = False
        self.clock.advance(25)
        self.assertEqual(self.successResultOf(done), b"")
        self.assertEqual((self.feed.subscribers(1), self.streams.count()), (0, 0))
        self.clock.advance(100)
        self.assertEqual(len(self.request.written), 3)

    def test_aBurstCostsOneMoreQueryNotOneEach(self):
        first = Deferred()
        self.db.answers += [first, batch(2, "2026-12-06T06:00:02.000000Z")]
        self.streams.serve(self.request, "2026-12-06T06:00:00.000000+00:00", CURSOR)
        for _ in range(20):
            self.feed.publish(1, "new")
        self.assertEqual(self.db.reads, 1)
        first.callback(batch(1, "2026-12-06T06:00:01.000000Z"))
        self.assertEqual(self.db.reads, 2)
        ids = [w for w in self.request.written if w.startswith(b"event: changes")]
        self.assertEqual(len(ids), 2)
        self.assertIn(b"id: 2026-12-06T06:00:02.000000Z\n", ids[1])

    def test_aFullBatchIsFollowedAtOnce(self):
        self.db.answers += [batch(BATCH), batch(0)]
        self.streams.serve(self.request, "2026-12-06T06:00:00.000000+00:00", CURSOR)
        self.assertEqual(self.db.reads, 2)

    def test_aFailingTokenCheckIs500JSON(self):
        streams = EventStreams(
            self.db, self.feed, self.clock, lambda r: fail(RuntimeError("db gone"))
        )
        body = self.successResultOf(streams.serve(self.request, None, None))
        self.assertEqual(self.request.responseCode, 500)
        self.assertEqual(json.loads(body)["error"], "internal")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_perAccountCap(self):
        streams = EventStreams(
            self.db,
            self.feed,
            self.clock,
            lambda r: succeed((1, "a")),
            perAccount=1,
        )
        self.db.answers += [CURSOR]
        streams.serve(self.request, None, None)
        second = DummyRequest([b"events"])
        body = self.successResultOf(streams.serve(second, None, None))
        self.assertEqual(second.responseCode, 429)
        self.assertEqual(json.loads(body)["error"], "too_many_streams")


class SSE:
    """A blocking server-sent events client (run it in a thread)."""

    def __init__(self, port: int, token: str | None, lastEventId: str | None = None):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if lastEventId:
            headers["Last-Event-ID"] = lastEventId
        self.connection.request("GET", "/api/v1/events", headers=headers)
        self.response = self.connection.getresponse()

    def next(self) -> dict | None:
        """The next event (comments skipped), or None at the end."""
        event: dict = {}
        while True:
            line = self.response.readline()
            if not line:
                return None
            line = line.rstrip(b"\n").decode()
            if not line:
                if event:
                    return event
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value

    def close(self) -> None:
        self.connection.close()


def login(port: int) -> str:
    body = {"email": "alice@example.test", "password": PASSWORD}
    return apiCall(port, "POST", "/auth/login", body)["token"]


def since(port: int, token: str, cursor: str, limit: int) -> dict:
    path = f"/messages/since?since={cursor}&limit={limit}"
    return apiCall(port, "GET", path, token=token)


def subjectMessage(subject: str) -> bytes:
    return ORIGINAL.replace(b"Plans for Friday", subject.encode())


class EventStreamE2ETests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self, api__events_per_account=2)
        yield self.server.addUser("alice@example.test")
        self.api = self.server.apiPort

    def inThread(self, fn):
        return deferToThread(fn)

    @inlineCallbacks
    def test_smtpDeliveryReachesTheStreamWithinOneSecond(self):
        def session():
            stream = SSE(self.api, login(self.api))
            ready = stream.next()
            sending = time.monotonic()  # the whole SMTP session counts
            sendBySMTP(self.server.smtpPort, subjectMessage("Fresh"))
            changes = stream.next()
            delay = time.monotonic() - sending
            stream.close()
            return stream.response, ready, changes, delay

        response, ready, changes, delay = yield self.inThread(session)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader("Cache-Control"), "no-cache")
        self.assertEqual(ready["event"], "ready")
        self.assertEqual(changes["event"], "changes")
        [message] = changes["data"]["messages"]
        self.assertEqual(message["subject"], "Fresh")
        self.assertEqual(changes["id"], changes["data"]["next_since"])
        self.assertLess(delay, 1.0)

    @inlineCallbacks
    def test_imapFlagChangeShowsInTheStream(self):
        def session():
            sendBySMTP(self.server.smtpPort, ORIGINAL)
            stream = SSE(self.api, login(self.api))
            stream.next()
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.select("INBOX"))
            ok(client.store("1", "+FLAGS", "(\\Flagged)"))
            changes = stream.next()
            client.logout()
            stream.close()
            return changes

        changes = yield self.inThread(session)
        [message] = changes["data"]["messages"]
        self.assertTrue(message["starred"])

    @inlineCallbacks
    def test_apiSendPatchDeleteAndImapExpungeShowInTheStream(self):
        def session():
            token = login(self.api)
            stream = SSE(self.api, token)
            stream.next()
            body = {"to": ["alice@example.test"], "subject": "note", "body": "hi"}
            apiCall(self.api, "POST", "/messages/send", body, token)
            sent = stream.next()
            while len(sent["data"]["messages"]) < 2:  # the Sent copy and inbox
                more = stream.next()
                sent["data"]["messages"] += more["data"]["messages"]
            inbox = next(m for m in sent["data"]["messages"] if m["mailbox"] == "inbox")
            path = f"/messages/{inbox['id']}"
            apiCall(self.api, "PATCH", path, {"starred": True}, token)
            patched = stream.next()
            apiCall(self.api, "DELETE", path, None, token)
            deleted = stream.next()
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.select("Trash"))
            ok(client.store("1", "+FLAGS", "(\\Deleted)"))
            flagged = stream.next()
            ok(client.expunge())
            expunged = stream.next()
            client.logout()
            stream.close()
            return sent, inbox, patched, deleted, flagged, expunged

        sent, inbox, patched, deleted, flagged, expunged = yield self.inThread(session)
        self.assertEqual(
            sorted(m["mailbox"] for m in sent["data"]["messages"]), ["inbox", "sent"]
        )
        [starred] = patched["data"]["messages"]
        self.assertTrue(starred["starred"])
        [trashed] = deleted["data"]["messages"]
        self.assertEqual(trashed["mailbox"], "trash")
        self.assertEqual(flagged["event"], "changes")
        [gone] = expunged["data"]["expunged"]
        self.assertEqual(gone["id"], inbox["id"])

    @inlineCallbacks
    def test_resumeGetsWhatWasMissedAndNothingTwice(self):
        def session():
            token = login(self.api)
            stream = SSE(self.api, token)
            stream.next()
            sendBySMTP(self.server.smtpPort, subjectMessage("one"))
            first = stream.next()
            stream.close()
            for subject in ("two", "three"):
                sendBySMTP(self.server.smtpPort, subjectMessage(subject))
            stream = SSE(self.api, token, lastEventId=first["id"])
            missed = stream.next()
            stream.close()
            return first, missed

        first, missed = yield self.inThread(session)
        self.assertEqual([m["subject"] for m in first["data"]["messages"]], ["one"])
        self.assertEqual(
            [m["subject"] for m in missed["data"]["messages"]], ["two", "three"]
        )

    @inlineCallbacks
    def test_aBatchMoveResumedMidwayLosesNothing(self):
        """An IMAP MOVE gives five entries one time: a page of two still
        carries all five, and the stream resumed before the move gets them."""

        def session():
            token = login(self.api)
            for n in range(5):
                sendBySMTP(self.server.smtpPort, subjectMessage(f"m{n}"))
            before = since(self.api, token, "2000-01-01T00:00:00Z", 100)["next_since"]
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.select("INBOX"))
            ok(client.uid("MOVE", "1:5", "Archive"))
            client.logout()
            page = since(self.api, token, before, 2)
            after = since(self.api, token, page["next_since"], 2)
            stream = SSE(self.api, token, lastEventId=before)
            resumed = stream.next()
            stream.close()
            return page, after, resumed

        page, after, resumed = yield self.inThread(session)
        self.assertEqual(len({m["id"] for m in page["messages"]}), 5)
        self.assertEqual({m["mailbox"] for m in page["messages"]}, {"archive"})
        self.assertEqual(after["count"], 0)
        self.assertEqual(len(resumed["data"]["messages"]), 5)

    @inlineCallbacks
    def test_badOrMissingTokenIs401(self):
        def session():
            answers = []
            for token in (None, "not-a-token"):
                stream = SSE(self.api, token)
                answers.append(
                    (stream.response.status, json.loads(stream.response.read()))
                )
                stream.close()
            return answers

        for status, body in (yield self.inThread(session)):
            self.assertEqual((status, body["error"]), (401, "unauthorized"))

    @inlineCallbacks
    def test_logoutEndsTheOpenStream(self):
        def session():
            token = login(self.api)
            stream = SSE(self.api, token)
            stream.next()
            apiCall(self.api, "POST", "/auth/logout", {}, token)
            started = time.monotonic()
            end = stream.next()
            return end, time.monotonic() - started

        end, waited = yield self.inThread(session)
        self.assertIsNone(end)
        self.assertLess(waited, 5.0)

    @inlineCallbacks
    def test_capIs429(self):
        def session():
            token = login(self.api)
            streams = [SSE(self.api, token) for _ in range(2)]
            for stream in streams:
                stream.next()
            third = SSE(self.api, token)
            answer = third.response.status, json.loads(third.response.read())
            for stream in [*streams, third]:
                stream.close()
            return answer

        status, body = yield self.inThread(session)
        self.assertEqual((status, body["error"]), (429, "too_many_streams"))
