"""
Fuzz target: the ESMTP framing and command parser (mailraven/smtp/server.py).

The input is a byte stream from the peer. Its first byte chooses the server
(MX or submission, whose AUTH exchange is another parser) and how the rest is
cut into reads, so chunk boundaries land anywhere. Invariants: nothing
escapes C{dataReceived}, every reply line is C{\\d{3}[ -]}, text, CRLF, with
no bare CR, LF or NUL (a peer's bytes must not end up in them raw); never an
"Internal error" reply and never a logged failure; a message is
stored exactly when its final dot got "250 ... Ok"; the trace headers of
stored mail hold no control character or line break; and every 1,000
inputs, no closed session is still alive (a leak).

    python tests/fuzz/fuzz_smtp.py -max_total_time=60 tests/fuzz/corpus/smtp
"""

from __future__ import annotations

import gc
import re
import weakref

if __name__ == "__main__":
    from harness import instrumented
else:
    from tests.fuzz.harness import uninstrumented as instrumented

from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from zope.interface import implementer

with instrumented():
    from mailraven.metrics import Metrics
    from mailraven.policy.logins import LoginLimiter
    from mailraven.smtp.recipients import RecipientResolver
    from mailraven.smtp.server import MailRavenSMTPFactory, SMTPSettings
    from mailraven.smtp.submission import SubmissionSMTPFactory
    from mailraven.spool import Spool
    from mailraven.testing import FakeDiskGuard, MemoryMessageStore, MemoryUserStore

REPLY_LINE = re.compile(rb"\d{3}[ -][^\r\n\x00]*\Z")
# what may not appear in a header field we write: C0 (but TAB), DEL, C1, and
# the line breaks of str.splitlines()
UNSAFE_IN_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_metrics = Metrics()
_sessions: weakref.WeakSet = weakref.WeakSet()
_checked = 0
LEAK_CHECK_EVERY = 1000


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    """STARTTLS succeeds at once, so the fuzzer reaches AUTH and beyond."""

    def startTLS(self, contextFactory: object) -> None:
        pass


def _factory(submission: bool, clock: Clock) -> MailRavenSMTPFactory:
    users = MemoryUserStore()
    users.add("alice@example.test", "pw")
    users.add("carol@example.test", "pw")
    args = dict(
        settings=SMTPSettings("mx.example.test", 10000, 3, 300),
        resolver=RecipientResolver(users, ["example.test"], clock),
        store=MemoryMessageStore(),
        spoolFactory=lambda: Spool("", None, None, memoryLimit=1 << 30),
        discardSpool=lambda spool: spool.discard(),
        diskGuard=FakeDiskGuard(),
        metrics=_metrics,
        tlsContext=object(),
        clock=clock,
    )
    if not submission:
        return MailRavenSMTPFactory(**args)
    return SubmissionSMTPFactory(
        **args,
        users=users,
        sentToday=lambda userId: 0,
        outboundPerDay=100,
        logins=LoginLimiter(clock, ipFailures=3),
    )


def chunks(data: bytes, seed: int) -> list[bytes]:
    """C{data} cut into reads: whole for seed 0, else pseudo-random sizes."""
    if seed == 0:
        return [data]
    pieces, state, limit = [], seed, seed * 4
    while data:
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        size = 1 + state % limit
        pieces.append(data[:size])
        data = data[size:]
    return pieces


def checkReplies(output: bytes) -> None:
    if not output:
        return
    assert output.endswith(b"\r\n"), f"reply not ended by CRLF: {output[-80:]!r}"
    for line in output[:-2].split(b"\r\n"):
        assert REPLY_LINE.match(line), f"bad reply line {line!r}"
        assert b"Internal error" not in line, f"internal error: {line!r}"


def checkTraceHeaders(raw: bytes) -> None:
    """Return-Path and Received, made of the peer's words, hold nothing unsafe."""
    lines = raw.split(b"\r\n", 4)
    trace = lines[:2] + [line for line in lines[2:4] if line.startswith(b"\tfor <")]
    for line in trace:
        text = line.decode("utf-8")
        assert not UNSAFE_IN_HEADER.search(text), f"trace header {text!r}"


def check(data: bytes) -> None:
    if not data:
        return
    _checkLeaks()
    failures: list[dict] = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            failures.append(event)

    clock = Clock()
    factory = _factory(bool(data[0] & 1), clock)
    transport = TLSStringTransport()
    globalLogPublisher.addObserver(observe)
    try:
        proto = factory.buildProtocol(None)
        _sessions.add(proto)
        proto.makeConnection(transport)
        for piece in chunks(data[1:], data[0] >> 1):
            proto.dataReceived(piece)
        clock.advance(301)  # the idle timeout's reply is a reply too
        proto.connectionLost(None)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not failures, failures[0]["log_failure"].getTraceback()
    output = transport.value()
    checkReplies(output)
    # each "250 ... Ok <id>" is a stored message and each stored one had it
    accepted = output.count(b"\r\n250 2.0.0 Ok ") + output.startswith(b"250 2.0.0 Ok ")
    assert accepted == len(factory.store.messages), (accepted, output[-300:])
    for _envelope, raw in factory.store.messages.values():
        checkTraceHeaders(raw)


def _checkLeaks() -> None:
    """Every L{LEAK_CHECK_EVERY} inputs: no earlier session may stay alive."""
    global _checked
    _checked += 1
    if _checked % LEAK_CHECK_EVERY == 0:
        gc.collect()
        alive = len(_sessions)
        assert not alive, f"{alive} sessions of the last {LEAK_CHECK_EVERY} leaked"


if __name__ == "__main__":
    from harness import fuzz

    fuzz(check)
