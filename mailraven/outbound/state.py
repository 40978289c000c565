"""The queue's rows: what is due, what happened to each recipient.

Blocking sqlite3 functions for the database's read pool and writer thread.
A queue entry (one message from one account) has a row per recipient in
C{outbound_recipients}; the entry's own C{status} summarises them.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def dueRecipients(conn: sqlite3.Connection, now: float, limit: int) -> list:
    rows = conn.execute(
        "SELECT r.queue_id, q.message_id, q.user_id, q.mail_from, r.rcpt,"
        " r.attempts, q.created_at, r.delay_notified"
        " FROM outbound_recipients r JOIN outbound_queue q ON q.id = r.queue_id"
        " WHERE r.status IN ('queued', 'deferred') AND r.next_attempt <= ?"
        " ORDER BY r.next_attempt LIMIT ?",
        (now, limit),
    ).fetchall()
    return [
        DueRecipient(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows
    ]


def nextDue(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        "SELECT min(next_attempt) FROM outbound_recipients"
        " WHERE status IN ('queued', 'deferred')"
    ).fetchone()
    return row[0]


def pendingCount(conn: sqlite3.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM outbound_recipients"
        " WHERE status IN ('queued', 'deferred')"
    ).fetchone()[0]


def record(conn: sqlite3.Connection, outcomes: list[Outcome]) -> None:
    """Store attempt results and refresh each touched entry's summary status."""
    now = _now()
    conn.executemany(
        "UPDATE outbound_recipients SET status = ?, last_reply = ?,"
        " attempts = attempts + 1, next_attempt = ?, updated_at = ?"
        " WHERE queue_id = ? AND rcpt = ?",
        [
            (o.status, o.lastReply, o.nextAttempt, now, o.queueId, o.rcpt)
            for o in outcomes
        ],
    )
    for queueId in {o.queueId for o in outcomes}:
        summarise(conn, queueId)


def markDelayNotified(conn: sqlite3.Connection, queueId: str, rcpts: list) -> None:
    conn.executemany(
        "UPDATE outbound_recipients SET delay_notified = 1"
        " WHERE queue_id = ? AND rcpt = ?",
        [(queueId, rcpt) for rcpt in rcpts],
    )


def summarise(conn: sqlite3.Connection, queueId: str) -> None:
    statuses = {
        row[0]
        for row in conn.execute(
            "SELECT status FROM outbound_recipients WHERE queue_id = ?", (queueId,)
        )
    }
    if "queued" in statuses:
        status = "queued"
    elif "deferred" in statuses:
        status = "deferred"
    elif "failed" in statuses:
        status = "failed"
    else:
        status = "delivered"
    conn.execute("UPDATE outbound_queue SET status = ? WHERE id = ?", (status, queueId))


def entryStatus(conn: sqlite3.Connection, messageId: str, userId: int) -> dict | None:
    """The API's view of a sent message's delivery (None: not this user's)."""
    entry = conn.execute(
        "SELECT id, status, created_at FROM outbound_queue"
        " WHERE message_id = ? AND user_id = ?",
        (messageId, userId),
    ).fetchone()
    if entry is None:
        return None
    recipients = conn.execute(
        "SELECT rcpt, status, attempts, last_reply, next_attempt, updated_at"
        " FROM outbound_recipients WHERE queue_id = ? ORDER BY rcpt",
        (entry[0],),
    ).fetchall()
    return {
        "id": messageId,
        "status": entry[1],
        "queued_at": entry[2],
        "recipients": [
            {
                "address": r[0],
                "status": r[1],
                "attempts": r[2],
                "last_reply": r[3],
                "next_attempt_at": (
                    datetime.fromtimestamp(r[4], UTC).isoformat()
                    if r[1] in PENDING
                    else None
                ),
                "updated_at": r[5],
            }
            for r in recipients
        ],
    }
