"""Per-account sender lists in SQLite: what an account trained as spam
('block') or not ('allow'), read whole by the scorer's L{SenderLists}."""

from __future__ import annotations

import sqlite3

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailraven.interfaces import ISenderListStore
from mailraven.store.db import Database


def loadSenderLists(conn: sqlite3.Connection) -> dict[int, dict[str, str]]:
    lists: dict[int, dict[str, str]] = {}
    for userId, value, kind in conn.execute(
        "SELECT user_id, value, kind FROM sender_lists"
    ):
        lists.setdefault(userId, {})[value] = kind
    return lists


def train(conn: sqlite3.Connection, userId: int, sender: str, kind: str) -> None:
    """The account marked mail from C{sender} as spam ('block') or not ('allow')."""
    conn.execute(
        "INSERT INTO sender_lists (user_id, value, kind) VALUES (?, ?, ?)"
        " ON CONFLICT (user_id, value) DO UPDATE SET kind = excluded.kind",
        (userId, sender.lower(), kind),
    )


@implementer(ISenderListStore)
class SQLiteSenderListStore:
    """Rows of C{sender_lists}, read and written off the reactor thread."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def lists(self) -> Deferred:
        return self._db.read(loadSenderLists)

    def train(self, userId: int, sender: str, kind: str) -> Deferred:
        return self._db.write(lambda conn: train(conn, userId, sender, kind))
