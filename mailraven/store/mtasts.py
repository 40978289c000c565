"""MTA-STS policies in SQLite: the queue's memory of them across restarts."""

from __future__ import annotations

import json
import sqlite3

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailraven.interfaces import IMTASTSPolicyCache
from mailraven.outbound.mtasts import STSPolicy
from mailraven.store.db import Database


def loadPolicy(conn: sqlite3.Connection, domain: str) -> STSPolicy | None:
    row = conn.execute(
        "SELECT policy FROM mta_sts_policies WHERE domain = ?", (domain,)
    ).fetchone()
    if row is None:
        return None
    stored = json.loads(row[0])
    return STSPolicy(
        stored["id"],
        stored["mode"],
        tuple(stored["mx"]),
        stored["max_age"],
        stored["fetched_at"],
    )


def savePolicy(conn: sqlite3.Connection, domain: str, policy: STSPolicy) -> None:
    stored = {
        "id": policy.id,
        "mode": policy.mode,
        "mx": list(policy.mx),
        "max_age": policy.maxAge,
        "fetched_at": policy.fetchedAt,
    }
    conn.execute(
        "INSERT INTO mta_sts_policies (domain, policy) VALUES (?, ?)"
        " ON CONFLICT (domain) DO UPDATE SET policy = excluded.policy",
        (domain, json.dumps(stored)),
    )


@implementer(IMTASTSPolicyCache)
class SQLiteMTASTSPolicyCache:
    """Policies as JSON rows of C{mta_sts_policies}, read and written off the
    reactor thread by the store's L{Database}."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def load(self, domain: str) -> Deferred:
        return self._db.read(lambda conn: loadPolicy(conn, domain))

    def save(self, domain: str, policy: STSPolicy) -> Deferred:
        return self._db.write(lambda conn: savePolicy(conn, domain, policy))
