"""GET /api/v1/events: the delta sync pushed as server-sent events.

A stream subscribes to the account's L{mailraven.interfaces.IChangeFeed}
and, on each change, runs the same query as GET /messages/since from its
cursor (L{queries.deltaBatch}) and sends the batch as C{event: changes}
with C{id:} its C{next_since}. One query runs at a time per stream; changes
arriving meanwhile cost one more query after it, not one each. A heartbeat
comment keeps proxies from closing an idle stream and re-checks the token,
so a logout or a password change ends the stream.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import orjson
from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mailraven.api import queries
from mailraven.api.http import APIError, bearer, errorBody, writeJSON

BATCH = 100


def frame(event: str, data: Any, eventId: str) -> bytes:
    """One server-sent event (the data is JSON on one line)."""
    body = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    return b"event: %s\nid: %s\ndata: %s\n\n" % (
        event.encode(),
        eventId.encode(),
        body,
    )


class EventStreams(Service):
    """The open streams of one API: caps per account and overall; stopping
    the service ends them (a client reconnects with its Last-Event-ID)."""

    log = Logger()

    def __init__(
        self,
        db: Any,
        feed: Any,
        clock: Any,
        authenticate: Callable[[Any], Deferred],
        heartbeat: float = 25.0,
        perAccount: int = 10,
        total: int = 1000,
        gauge: Any = None,
    ) -> None:
        self.db = db
        self.feed = feed
        self.clock = clock
        self.authenticate = authenticate
        self.heartbeat = heartbeat
        self._perAccount = perAccount
        self._total = total
        self._gauge = gauge
        self._open: set[EventStream] = set()
        self._counts: Counter[int] = Counter()

    @inlineCallbacks
    def serve(self, request: Any, since: str | None, sinceText: str | None):
        """Answer GET /events: a 401/429 JSON body, or a stream until it ends."""
        try:
            user = yield self.authenticate(request)
            self._admit(user[0])
        except APIError as error:
            return writeJSON(request, error.status, errorBody(error))
        except Exception:
            self.log.failure("event stream refused")
            body = {"error": "internal", "message": "Internal server error"}
            return writeJSON(request, 500, body)
        stream = EventStream(self, request, user[0], bearer(request))
        self._opened(stream)
        try:
            yield stream.run(since, sinceText)
        finally:
            self._closed(stream)
        return b""

    def _admit(self, userId: int) -> None:
        if self._counts[userId] >= self._perAccount or len(self._open) >= self._total:
            raise APIError(
                429, "too_many_streams", "Too many open event streams", retry_after=60
            )

    def _opened(self, stream: EventStream) -> None:
        self._open.add(stream)
        self._counts[stream.userId] += 1
        if self._gauge is not None:
            self._gauge.inc()

    def _closed(self, stream: EventStream) -> None:
        self._open.discard(stream)
        self._counts[stream.userId] -= 1
        if not self._counts[stream.userId]:
            del self._counts[stream.userId]
        if self._gauge is not None:
            self._gauge.dec()

    def revoked(self, bearer: str) -> None:
        """A logout: the streams opened with C{bearer} end now."""
        for stream in [s for s in self._open if s.token == bearer]:
            stream.end()

    def stopService(self) -> None:
        super().stopService()
        for stream in list(self._open):
            stream.end()

    def count(self) -> int:
        return len(self._open)


class EventStream:
    """One client's stream: its cursor, its feed subscription, its heartbeat."""

    log = Logger()

    def __init__(self, streams: EventStreams, request: Any, userId: int, bearer: str):
        self.streams = streams
        self.request = request
        self.userId = userId
        self.token = bearer
        self.cursor = ""
        self._since = ""
        self._querying = False
        self._again = False
        self._ended = False
        # klein cancels it when the client goes: that ends the stream
        self._done: Deferred = Deferred(lambda _: self.end())
        self._beat = LoopingCall(self._heartbeat)
        self._beat.clock = streams.clock

    def run(self, since: str | None, sinceText: str | None) -> Deferred:
        """Start the stream; the Deferred fires when it has ended."""
        request = self.request
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        self.streams.feed.subscribe(self.userId, self.changed)
        self._beat.start(self.streams.heartbeat, now=False).addErrback(self._failed)
        request.notifyFinish().addBoth(lambda _: self.end())  # also if gone now
        if since is not None:
            self._since, self.cursor = since, sinceText or since
            self.changed()
        else:
            d = self.streams.db.read(lambda c: queries.latestChange(c, self.userId))
            d.addCallback(self._ready).addErrback(self._failed)
        return self._done

    def _ready(self, cursor: str) -> None:
        if self._ended:
            return
        self._since, self.cursor = cursor.replace("Z", "+00:00"), cursor
        self._write(frame("ready", {"next_since": cursor}, cursor))
        if self._again:
            self._again = False
            self.changed()

    def changed(self, change: Any = None) -> None:
        """A change of the account (from the feed): query, or once more after."""
        if self._ended:
            return
        if self._querying or not self._since:
            self._again = True
            return
        self._querying = True
        since, text = self._since, self.cursor
        d = self.streams.db.read(
            lambda c: queries.deltaBatch(c, self.userId, since, text, BATCH)
        )
        d.addCallback(self._send).addErrback(self._failed)

    def _send(self, batch: dict) -> None:
        self._querying = False
        if self._ended:
            return
        if batch["count"]:
            self.cursor = batch["next_since"]
            self._since = self.cursor.replace("Z", "+00:00")
            self._write(frame("changes", batch, self.cursor))
        more = batch["count"] >= BATCH
        if self._again or more:
            self._again = False
            self.changed()

    def _heartbeat(self) -> None:
        self._write(b": ping\n\n")
        d = self.streams.authenticate(self.request)
        d.addErrback(lambda f: f.trap(APIError) and self.end())
        d.addErrback(self._failed)

    def _write(self, data: bytes) -> None:
        if not self._ended:
            self.request.write(data)

    def _failed(self, failure: Any) -> None:
        self.log.failure("event stream failed", failure)
        self.end()

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self.streams.feed.unsubscribe(self.userId, self.changed)
        if self._beat.running:
            self._beat.stop()
        if not self._done.called:
            self._done.callback(None)
