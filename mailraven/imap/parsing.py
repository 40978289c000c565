"""MIME parsing for FETCH, off the reactor thread.

ENVELOPE, BODYSTRUCTURE, RFC822.HEADER and the body sections need the
message parsed (the email package, and the boundary scan of
L{mailraven.imap.sections}): for a message of megabytes that is long enough
to stall every other session, so it runs in a thread pool the IMAP service
owns (L{PooledParser}). L{InlineParser} parses at once, for protocol tests
driven by a Clock.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

from mailraven.imap.message import MessagePart
from mailraven.imap.sections import Entity, parseEntity

POOL_SIZE = 2  # parses at once; more would only compete for the GIL


@dataclass(frozen=True)
class ParsedMessage:
    """What FETCH reads from a message besides its bytes."""

    part: MessagePart
    sections: Entity


def parseMessage(raw: bytes) -> ParsedMessage:
    """Parse C{raw}; blocking, pure, safe to run in any thread."""
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    return ParsedMessage(MessagePart(parsed, raw), parseEntity(raw))


class PooledParser:
    """Runs C{parse} (L{parseMessage}) in C{pool}, a pool the IMAP service
    starts and stops."""

    def __init__(
        self,
        reactor: Any,
        pool: Any,
        parse: Callable[[bytes], ParsedMessage] = parseMessage,
    ) -> None:
        self._reactor = reactor
        self._pool = pool
        self._parse = parse

    def parse(self, raw: bytes) -> Deferred:
        """Fires with the L{ParsedMessage} of C{raw}."""
        return deferToThreadPool(self._reactor, self._pool, self._parse, raw)


class InlineParser:
    """Parses on the caller's thread: for tests without a reactor."""

    def parse(self, raw: bytes) -> Deferred:
        return succeed(parseMessage(raw))
