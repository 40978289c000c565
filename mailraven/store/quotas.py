"""Per-account storage quotas in SQLite (docs/quotas.md).

Usage is a counter on the account's row kept by triggers (schema 14), so
reading it costs one row, never a sum over the mailbox. The plain functions
take a connection so the CLI can use them synchronously; L{SQLiteQuotaStore}
runs them off the reactor thread.
"""

from __future__ import annotations

import sqlite3

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailraven.interfaces import IQuotaStore
from mailraven.store.db import Database


def quotaOf(conn: sqlite3.Connection, email: str) -> tuple[int, int | None] | None:
    """(bytes used, own limit or None for quota.default); None: no account."""
    row = conn.execute(
        "SELECT quota_used, quota_limit FROM users WHERE email = ?", (email,)
    ).fetchone()
    return None if row is None else (row[0], row[1])


def setQuotaLimit(conn: sqlite3.Connection, email: str, limit: int | None) -> bool:
    """Give the account its own limit (0: none), or None: back to the default."""
    if limit is not None and limit < 0:
        raise ValueError("a quota is a number of bytes, 0 or more")
    cursor = conn.execute(
        "UPDATE users SET quota_limit = ? WHERE email = ?", (limit, email)
    )
    return cursor.rowcount == 1


def quotaDirectory(conn: sqlite3.Connection) -> dict[int, tuple[int, int | None]]:
    """{user id: (bytes used, own limit or None)}: what the resolver holds."""
    return {
        uid: (used, limit)
        for uid, used, limit in conn.execute(
            "SELECT id, quota_used, quota_limit FROM users"
        )
    }


def effectiveLimit(own: int | None, default: int) -> int | None:
    """The limit that applies, None when there is none (0 means none)."""
    limit = default if own is None else own
    return limit or None


def overQuota(used: int, own: int | None, default: int) -> bool:
    """'Past it' is usage >= limit at RCPT time (as Postfix/Dovecot quota
    policy services decide): one message may cross the limit, the next waits."""
    limit = effectiveLimit(own, default)
    return limit is not None and used >= limit


@implementer(IQuotaStore)
class SQLiteQuotaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def quota(self, email: str) -> Deferred:
        return self._db.read(lambda conn: quotaOf(conn, email))

    def setLimit(self, email: str, limit: int | None) -> Deferred:
        return self._db.write(lambda conn: setQuotaLimit(conn, email, limit))

    def directory(self) -> Deferred:
        return self._db.read(quotaDirectory)
