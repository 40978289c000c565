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


# An account's limit as SQL: its own, else quota.default (bound as :default).
_LIMIT = "coalesce(quota_limit, :default)"


def claimWarnings(
    conn: sqlite3.Connection, default: int
) -> list[tuple[int, str, int, int]]:
    """
    Re-arm the warning of accounts back under 90 % of their limit, then mark
    and return (id, address, used, limit) of those at or past 90 % not yet
    warned: each is returned once until it drops below 90 % again.
    """
    conn.execute(
        f"UPDATE users SET quota_warned = 0 WHERE quota_warned = 1"
        f" AND ({_LIMIT} = 0 OR quota_used * 10 < {_LIMIT} * 9)",
        {"default": default},
    )
    return [
        tuple(row)
        for row in conn.execute(
            f"UPDATE users SET quota_warned = 1 WHERE quota_warned = 0"
            f" AND {_LIMIT} > 0 AND quota_used * 10 >= {_LIMIT} * 9"
            f" RETURNING id, email, quota_used, {_LIMIT}",
            {"default": default},
        ).fetchall()
    ]


def effectiveLimit(own: int | None, default: int) -> int | None:
    """The limit that applies, None when there is none (0 means none)."""
    limit = default if own is None else own
    return limit or None


# SQLite's INTEGER: a larger limit would not fit the column (and is no limit).
MAX_LIMIT = 2**63 - 1


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

    def claimWarnings(self, default: int) -> Deferred:
        return self._db.write(lambda conn: claimWarnings(conn, default))
