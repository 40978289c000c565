"""Aliases in SQLite: an address of ours whose mail goes to one or more
accounts, and per-domain catch-alls (the address C{@domain}).

Members are accounts of this server only: an alias never forwards, so it can
neither relay nor break SPF at a receiver (docs/addresses.md). The plain
functions take a connection so the CLI can use them synchronously;
L{SQLiteAliasStore} runs them off the reactor thread.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailraven.interfaces import IAliasStore
from mailraven.store.db import Database
from mailraven.store.rows import utcNow
from mailraven.store.users import BadAddress, lookupUser, normaliseAddress


class UnknownMember(ValueError):
    """A member that is not an account here (aliases do not forward)."""


class AliasIsAccount(ValueError):
    """The address is an account's: the account would always win."""


def normaliseAlias(address: str) -> str:
    """An address, or C{@domain} for the domain's catch-all."""
    text = address.strip()
    if text.startswith("@"):
        domain = normaliseAddress(f"catchall{text}").rpartition("@")[2]
        return f"@{domain}"
    return normaliseAddress(text)


def addAlias(conn: sqlite3.Connection, address: str, members: Iterable[str]) -> str:
    """Add C{members} (account addresses) to the alias, made if new; all or none."""
    address = normaliseAlias(address)
    if not address.startswith("@") and lookupUser(conn, address) is not None:
        raise AliasIsAccount(f"{address} is an account")
    userIds = []
    for member in members:
        try:
            userId = lookupUser(conn, normaliseAddress(member))
        except BadAddress:
            userId = None
        if userId is None:
            raise UnknownMember(
                f"{member} is not an account here; aliases deliver to accounts"
                " only and never forward"
            )
        userIds.append(userId)
    if not userIds:
        raise UnknownMember("an alias needs at least one member")
    # one spelling per alias: members added as Sales@ join sales@
    existing = conn.execute(
        "SELECT address FROM aliases WHERE address = ? LIMIT 1", (address,)
    ).fetchone()
    if existing is not None:
        address = existing[0]
    now = utcNow()
    conn.executemany(
        "INSERT OR IGNORE INTO aliases (address, user_id, created_at) VALUES (?, ?, ?)",
        [(address, userId, now) for userId in userIds],
    )
    return address


def removeAlias(
    conn: sqlite3.Connection, address: str, members: Iterable[str] = ()
) -> bool:
    """The whole alias, or only C{members} of it (the alias is gone with its
    last member); True if anything was removed."""
    address = normaliseAlias(address)
    members = [normaliseAddress(m) for m in members]
    if not members:
        cursor = conn.execute("DELETE FROM aliases WHERE address = ?", (address,))
        return cursor.rowcount > 0
    removed = 0
    for member in members:
        removed += conn.execute(
            "DELETE FROM aliases WHERE address = ? AND user_id ="
            " (SELECT id FROM users WHERE email = ?)",
            (address, member),
        ).rowcount
    return removed > 0


def listAliases(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """{alias: [member addresses]}, sorted."""
    found: dict[str, list[str]] = {}
    for address, email in conn.execute(
        "SELECT a.address, u.email FROM aliases a JOIN users u ON u.id = a.user_id"
        " ORDER BY a.address, u.email"
    ):
        found.setdefault(address, []).append(email)
    return found


def aliasDirectory(conn: sqlite3.Connection) -> dict[str, list[int]]:
    """{lower-cased alias: [member account ids]}: what the resolver holds."""
    found: dict[str, list[int]] = {}
    for address, userId in conn.execute(
        "SELECT address, user_id FROM aliases ORDER BY address, user_id"
    ):
        found.setdefault(address.lower(), []).append(userId)
    return found


@implementer(IAliasStore)
class SQLiteAliasStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, address: str, members: list[str]) -> Deferred:
        return self._db.write(lambda conn: addAlias(conn, address, members))

    def remove(self, address: str, members: list[str] = ()) -> Deferred:
        return self._db.write(lambda conn: removeAlias(conn, address, members))

    def list(self) -> Deferred:
        return self._db.read(listAliases)

    def directory(self) -> Deferred:
        return self._db.read(aliasDirectory)
