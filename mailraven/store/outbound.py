"""The outbound queue's state in SQLite: which recipients are due, what each
attempt did, and the summary status the API shows."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailraven.interfaces import IOutboundQueueStore
from mailraven.outbound.state import PENDING, DueRecipient, Outcome
from mailraven.store.db import Database


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


@implementer(IOutboundQueueStore)
class SQLiteOutboundQueueStore:
    """Rows of C{outbound_queue}/C{outbound_recipients}, off the reactor."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def nextDue(self) -> Deferred:
        return self._db.read(nextDue)

    def due(self, now: float, limit: int) -> Deferred:
        return self._db.read(lambda conn: dueRecipients(conn, now, limit))

    def pendingCount(self) -> Deferred:
        return self._db.read(pendingCount)

    def record(self, outcomes: list[Outcome]) -> Deferred:
        return self._db.write(lambda conn: record(conn, outcomes))

    def markDelayNotified(self, queueId: str, rcpts: list[str]) -> Deferred:
        return self._db.write(lambda conn: markDelayNotified(conn, queueId, rcpts))
