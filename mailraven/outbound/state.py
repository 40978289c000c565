"""The queue's rows: what is due, what happened to each recipient.

Blocking sqlite3 functions for the database's read pool and writer thread.
A queue entry (one message from one account) has a row per recipient in
C{outbound_recipients}; the entry's own C{status} summarises them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PENDING = ("queued", "deferred")


@dataclass(frozen=True)
class DueRecipient:
    queueId: str
    messageId: str
    userId: int
    mailFrom: str
    rcpt: str
    attempts: int
    createdAt: str
    delayNotified: bool


_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")


@dataclass(frozen=True)
class DeliveryReply:
    """
    One recipient's answer to one attempt. C{remoteMTA} is the host whose SMTP
    server gave it; empty when the verdict is ours (DNS, no connection, local
    delivery, policy), so a DSN never calls our own words an SMTP reply.
    """

    code: int
    text: str  # after the code; usually starts with the enhanced status
    remoteMTA: str = ""

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()

    @property
    def status(self) -> str:
        """The RFC 3463 status: the reply's own, else its class's x.0.0."""
        first = self.text.split(" ", 1)[0]
        if _ENHANCED.match(first) and first[0] == str(self.code)[0]:
            return first
        return f"{str(self.code)[0]}.0.0" if str(self.code)[0] in "245" else "4.0.0"

    @property
    def detail(self) -> str:
        """The text without its enhanced status code."""
        first, _, rest = self.text.partition(" ")
        return rest if _ENHANCED.match(first) else self.text


@dataclass(frozen=True)
class Outcome:
    """What one attempt did for one recipient; C{note} says why a deferral
    became a failure (the time given up after)."""

    queueId: str
    rcpt: str
    status: str  # delivered | deferred | failed
    reply: DeliveryReply
    nextAttempt: float = 0.0
    note: str = ""

    @property
    def lastReply(self) -> str:
        """What the API shows as the recipient's C{last_reply}."""
        return f"{self.reply} ({self.note})" if self.note else str(self.reply)


def entryStatus(conn: Any, messageId: str, userId: int) -> dict | None:
    """The mobile API reads delivery status through this name until its SQL
    moves behind the store too; imported late, as the store imports us."""
    from mailraven.store.outbound import entryStatus as query

    return query(conn, messageId, userId)
