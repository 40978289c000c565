"""The outbound queue runner: durable, per recipient, with retries.

State lives only in SQLite (C{outbound_queue} + C{outbound_recipients},
written in the same commit as the message), so a crash loses nothing: what
was in flight is simply tried again (at-least-once, like every MTA). Each
run takes the due recipients, groups them per message and domain (one SMTP
transaction each), delivers local recipients straight into the store, and
records every recipient's outcome: delivered, deferred (4xx, no answer; the
next try doubles the wait from C{queue.retry_initial}, capped at
C{queue.retry_max}) or failed (5xx, or still deferred after
C{queue.give_up_after}). Failures, and delays past C{queue.delay_notice_after},
are reported to the sender with a DSN.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    inlineCallbacks,
    maybeDeferred,
)
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailraven.envelope import Envelope, Recipient
from mailraven.interfaces import IOutboundQueueStore
from mailraven.outbound import state
from mailraven.outbound.client import ConnectionProblem, TLSProblem, send
from mailraven.outbound.dkimsign import UnsignableMessage
from mailraven.outbound.dsn import RecipientReport, buildDSN, humanAge
from mailraven.outbound.mx import PermanentDNSFailure, TemporaryDNSFailure
from mailraven.outbound.state import DeliveryReply
from mailraven.smtp.addresses import AddressError, parsePath
from mailraven.smtp.recipients import Rejection
from mailraven.spool import memorySpool
from mailraven.store.files import readMessageFile, relativePath

STOP_WAIT = 10.0  # seconds shutdown waits for deliveries in progress
NO_SMTPUTF8 = DeliveryReply(
    553, "5.6.7 Non-ASCII addresses cannot be delivered remotely yet"
)
LOCAL_ERROR = DeliveryReply(451, "4.3.0 Local error while delivering; will retry")
DELIVERED_LOCALLY = DeliveryReply(250, "2.0.0 Delivered locally")


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def withoutReturnPath(message: bytes) -> bytes:
    """
    The message as it leaves: our stored C{Return-Path:} (and any other in
    the header) removed, since the final delivery MTA adds its own (RFC 5321
    4.4).
    """
    end = message.find(b"\r\n\r\n")
    head, body = (message, b"") if end < 0 else (message[: end + 2], message[end + 2 :])
    if b"return-path:" not in head.lower():
        return message
    kept, dropping = [], False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line[:12].lower() == b"return-path:"
        if not dropping:
            kept.append(line)
    return b"".join(kept) + body


def retryDelay(attempts: int, initial: float, cap: float) -> float:
    """Wait after the C{attempts}-th failed try: 7.5 min doubling, capped."""
    return min(cap, initial * 2 ** max(0, attempts - 1))


class OutboundQueue(Service):
    log = Logger()

    def __init__(
        self,
        queueState: IOutboundQueueStore,
        store: Any,
        resolver: Any,
        mx: Any,
        signer: Any,
        dataDir: str,
        pool: Any,
        reactor: Any,
        settings: dict[str, Any],
        metrics: Any = None,
        clock: Any = None,
        mtasts: Any = None,
    ) -> None:
        self._state = queueState
        self._mtasts = mtasts
        self._store = store
        self._resolver = resolver
        self._mx = mx
        self._signer = signer
        self._dataDir = dataDir
        self._pool = pool
        self._reactor = reactor
        self._clock = clock or reactor
        self._settings = settings
        self._metrics = metrics
        self._call: Any = None
        self._running: Any = None
        self._again = False

    # -- scheduling ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.kick()

    def stopService(self):
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._mx.close()
        return self._waitForRun(STOP_WAIT)

    def _waitForRun(self, limit: float) -> Deferred | None:
        """
        Let a run in progress record its outcomes, for at most C{limit} s: a
        slow remote server must not hold up shutdown (an unrecorded delivery
        is simply tried again: at-least-once).
        """
        if self._running is None:
            return None
        waited: Deferred = Deferred()

        def done(result: object = None) -> object:
            if not waited.called:
                waited.callback(None)
            if timer.active():
                timer.cancel()
            return result

        timer = self._reactor.callLater(limit, done)
        self._running.addBoth(done)
        return waited

    def kick(self, _: object = None) -> None:
        """New mail was queued: run now (or right after the current run)."""
        if not self.running:
            return
        if self._running is not None:
            self._again = True
            return
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if not self.running:
            return  # stopped meanwhile (e.g. while the next due time was read)
        if self._call is not None and self._call.active():
            if self._call.getTime() <= self._clock.seconds() + delay:
                return
            self._call.cancel()
        self._call = self._clock.callLater(max(0.0, delay), self._start)

    def _start(self) -> None:
        self._call = None
        self._running = self.runOnce()
        self._running.addErrback(
            lambda f: self.log.failure("outbound queue run failed", f)
        )
        self._running.addBoth(self._finished)

    @inlineCallbacks
    def _finished(self, _: object):
        self._running = None
        if not self.running:
            return
        if self._again:
            self._again = False
            self._schedule(0)
            return
        nextDue = yield self._state.nextDue()
        poll = self._settings["poll_interval"]
        delay = poll if nextDue is None else nextDue - self._clock.seconds()
        self._schedule(min(max(delay, 0.0), poll))

    # -- one run ------------------------------------------------------------

    @inlineCallbacks
    def runOnce(self):
        """Attempt every due recipient once; Deferred fires when recorded."""
        now = self._clock.seconds()
        due = yield self._state.due(now, self._settings["batch"])
        groups: dict[tuple[str, str], list[state.DueRecipient]] = defaultdict(list)
        for item in due:
            groups[(item.queueId, item.rcpt.rpartition("@")[2].lower())].append(item)
        work = list(groups.items())
        limit = self._settings["concurrency"]
        for start in range(0, len(work), limit):
            batch = work[start : start + limit]
            yield DeferredList(
                [self._attempt(domain, items) for (_, domain), items in batch],
                consumeErrors=True,
            )
        if self._metrics is not None:
            depth = yield self._state.pendingCount()
            self._metrics.outboundQueueDepth.set(depth)
        return len(due)

    @inlineCallbacks
    def _attempt(self, domain: str, items: list[state.DueRecipient]):
        first = items[0]
        try:
            raw = yield deferToThreadPool(
                self._reactor,
                self._pool,
                readMessageFile,
                self._dataDir,
                relativePath(first.messageId),
            )
            replies = yield self._deliver(domain, first, [i.rcpt for i in items], raw)
        except Exception:
            self.log.failure("outbound attempt failed for {domain}", domain=domain)
            replies = {i.rcpt: LOCAL_ERROR for i in items}
            raw = b""
        outcomes = [self._outcome(item, replies[item.rcpt]) for item in items]
        yield self._state.record(outcomes)
        for item, outcome in zip(items, outcomes, strict=True):
            self._logOutcome(item, outcome)
        yield self._notify(first, items, outcomes, raw)

    def _deliver(self, domain: str, first: state.DueRecipient, rcpts, raw: bytes):
        d = self._isLocal(rcpts[0])
        d.addCallback(
            lambda local: (
                self._deliverLocally(first, rcpts, raw)
                if local
                else self._deliverRemotely(domain, first, rcpts, raw)
            )
        )
        return d

    def _isLocal(self, rcpt: str):
        try:
            address = parsePath(rcpt, utf8=True)
        except AddressError:
            return maybeDeferred(lambda: False)
        d = maybeDeferred(self._resolver.resolve, address)

        def rejected(failure):
            failure.trap(Rejection)
            return failure.value.reason != "relay_denied"

        d.addCallbacks(lambda _: True, rejected)
        return d

    @inlineCallbacks
    def _deliverLocally(self, first, rcpts: list[str], raw: bytes):
        replies = {}
        for rcpt in rcpts:
            try:
                found = yield self._resolver.resolve(parsePath(rcpt, utf8=True))
            except Rejection as e:
                replies[rcpt] = DeliveryReply(e.code, f"{e.enhanced} {e.text}")
                continue
            envelope = Envelope(
                mailFrom=first.mailFrom,
                recipients=[Recipient(rcpt, r.userId, tag=r.tag) for r in found],
                tls=True,
            )
            yield self._store.deliver(envelope, memorySpool(raw))
            replies[rcpt] = DELIVERED_LOCALLY
        return replies

    @inlineCallbacks
    def _deliverRemotely(self, domain: str, first, rcpts: list[str], raw: bytes):
        try:
            targets = yield self._mx.targets(domain)
        except PermanentDNSFailure as e:
            return {rcpt: DeliveryReply(550, f"{e.enhanced} {e}") for rcpt in rcpts}
        except TemporaryDNSFailure as e:
            return {rcpt: DeliveryReply(451, f"{e.enhanced} {e}") for rcpt in rcpts}
        # twisted.mail's client speaks ASCII only: no SMTPUTF8 delivery yet.
        # Say so at once instead of retrying for days.
        if not first.mailFrom.isascii():
            return {rcpt: NO_SMTPUTF8 for rcpt in rcpts}
        refused = {rcpt: NO_SMTPUTF8 for rcpt in rcpts if not rcpt.isascii()}
        rcpts = [rcpt for rcpt in rcpts if rcpt.isascii()]
        if not rcpts:
            return refused
        senderDomain = first.mailFrom.rpartition("@")[2]
        try:
            signed = yield deferToThreadPool(
                self._reactor,
                self._pool,
                lambda: self._signer.sign(withoutReturnPath(raw), senderDomain),
            )
        except UnsignableMessage as e:
            reply = DeliveryReply(554, f"5.6.0 Cannot be DKIM-signed: {e}")
            return {**refused, **{rcpt: reply for rcpt in rcpts}}
        policy = None
        if self._mtasts is not None:
            policy = yield self._mtasts.policyFor(domain)
        if policy is not None and policy.enforced:
            targets = [(host, ip) for host, ip in targets if policy.allows(host)]
            if not targets:
                reply = DeliveryReply(
                    451, f"4.7.5 No MX of {domain} is allowed by its MTA-STS policy"
                )
                return {**refused, **{rcpt: reply for rcpt in rcpts}}
        problems = []
        for host, ip in targets[: self._settings["max_mx"]]:
            verified = None
            if policy is not None and policy.enforced:
                verified = self._mtasts.clientTLS(host)
            try:
                replies = yield self._send(ip, first.mailFrom, rcpts, signed, verified)
            except ConnectionProblem as e:
                problems.append(f"{host} [{ip}]: {e}")
                continue
            answered = {
                rcpt: DeliveryReply(r.code, r.text, host) for rcpt, r in replies.items()
            }
            return {**refused, **answered}
        detail = "; ".join(problems) or "no host to try"
        reply = DeliveryReply(451, f"4.4.1 No answer from {domain}: {detail}")
        return {**refused, **{rcpt: reply for rcpt in rcpts}}

    @inlineCallbacks
    def _send(
        self, ip: str, sender: str, rcpts: list[str], message: bytes, verified: Any
    ):
        """
        One host: with STARTTLS if offered, in clear if that handshake fails;
        with C{verified} TLS options (MTA-STS enforce) TLS is required.
        """
        args = (self._reactor, ip, self._settings["port"], self._settings["hostname"])
        try:
            replies = yield send(
                *args,
                sender,
                rcpts,
                message,
                timeout=self._settings["timeout"],
                verified=verified,
            )
        except TLSProblem as e:
            self.log.warn(
                "TLS with {ip} failed ({error}); delivering in clear",
                ip=ip,
                error=str(e),
                event="outbound_tls_fallback",
            )
            replies = yield send(
                *args,
                sender,
                rcpts,
                message,
                timeout=self._settings["timeout"],
                tls=False,
            )
        return replies

    # -- outcomes -------------------------------------------------------------

    def _outcome(self, item: state.DueRecipient, reply: DeliveryReply) -> state.Outcome:
        now = self._clock.seconds()
        if 200 <= reply.code < 300:
            return state.Outcome(item.queueId, item.rcpt, "delivered", reply)
        note = ""
        if 400 <= reply.code < 500:
            age = now - _timestamp(item.createdAt)
            if age < self._settings["give_up_after"]:
                delay = retryDelay(
                    item.attempts + 1,
                    self._settings["retry_initial"],
                    self._settings["retry_max"],
                )
                return state.Outcome(
                    item.queueId, item.rcpt, "deferred", reply, now + delay
                )
            note = f"gave up after {humanAge(age)}"
        return state.Outcome(item.queueId, item.rcpt, "failed", reply, note=note)

    def _logOutcome(self, item: state.DueRecipient, outcome: state.Outcome) -> None:
        if self._metrics is not None:
            self._metrics.outboundDeliveries.labels(outcome.status).inc()
            if outcome.status == "deferred":
                self._metrics.outboundRetries.inc()
        self.log.info(
            "outbound {status} {rcpt} (attempt {attempt}): {reply}",
            status=outcome.status,
            rcpt=item.rcpt,
            attempt=item.attempts + 1,
            reply=outcome.lastReply,
            queue_id=item.queueId,
            event=f"outbound_{outcome.status}",
        )

    @inlineCallbacks
    def _notify(self, first, items, outcomes, raw: bytes):
        """DSN to the sender for failures, and once for a long delay."""
        if not first.mailFrom:
            return  # never answer a bounce with a bounce
        failed = [
            RecipientReport(o.rcpt, "failed", o.reply, o.note)
            for o in outcomes
            if o.status == "failed"
        ]
        createdAt = _timestamp(first.createdAt)
        now = self._clock.seconds()
        delayed = [
            RecipientReport(
                o.rcpt, "delayed", o.reply, f"delayed for {humanAge(now - createdAt)}"
            )
            for item, o in zip(items, outcomes, strict=True)
            if o.status == "deferred"
            and not item.delayNotified
            and now - createdAt >= self._settings["delay_notice_after"]
        ]
        for reports in (failed, delayed):
            if not reports:
                continue
            report = buildDSN(
                self._settings["hostname"],
                first.mailFrom,
                raw,
                reports,
                arrivedAt=datetime.fromtimestamp(createdAt, UTC),
                attemptedAt=datetime.fromtimestamp(now, UTC),
                retryUntil=datetime.fromtimestamp(
                    createdAt + self._settings["give_up_after"], UTC
                ),
            )
            envelope = Envelope(
                mailFrom="",
                recipients=[Recipient(first.mailFrom, first.userId)],
            )
            yield self._store.deliver(envelope, memorySpool(report))
            if reports is delayed:
                rcpts = [r.address for r in reports]
                yield self._state.markDelayNotified(first.queueId, rcpts)


def queueSettings(config: Any) -> dict[str, Any]:
    return {
        "hostname": config["server.hostname"],
        "port": config["queue.port"],
        "retry_initial": config["queue.retry_initial"],
        "retry_max": config["queue.retry_max"],
        "give_up_after": config["queue.give_up_after"],
        "delay_notice_after": config["queue.delay_notice_after"],
        "concurrency": config["queue.concurrency"],
        "timeout": config["queue.timeout"],
        "poll_interval": 30.0,
        "batch": 500,
        "max_mx": 5,
    }
