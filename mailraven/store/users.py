"""Mail accounts in SQLite, passwords hashed with argon2id (argon2-cffi).

The plain functions take a connection so the CLI can use them synchronously;
L{SQLiteUserStore} runs the same functions off the reactor thread.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailraven.interfaces import IUserStore
from mailraven.store.db import Database

_hasher = PasswordHasher()


class UserExists(Exception):
    """There is already an account with that address."""


class BadAddress(ValueError):
    """Not an address an account can have."""


def normaliseAddress(email: str) -> str:
    """Lower-case the domain (local parts keep their case but compare NOCASE)."""
    local, at, domain = email.strip().rpartition("@")
    if not at or not local or not domain or "." not in domain and domain != "localhost":
        raise BadAddress(f"not an email address: {email!r}")
    if any(c.isspace() or c in '<>()[]\\,;:"' for c in local + domain):
        raise BadAddress(f"not an email address: {email!r}")
    return f"{local}@{domain.lower().rstrip('.')}"


def hashPassword(password: str) -> str:
    if not password:
        raise ValueError("the password must not be empty")
    return _hasher.hash(password)


def addUser(
    conn: sqlite3.Connection, email: str, passwordHash: str, admin: bool = False
) -> int:
    try:
        cursor = conn.execute(
            "INSERT INTO users (email, password_hash, is_admin, created_at)"
            " VALUES (?, ?, ?, ?)",
            (normaliseAddress(email), passwordHash, admin, _now()),
        )
    except sqlite3.IntegrityError:
        raise UserExists(email) from None
    return cursor.lastrowid


def setPasswordHash(conn: sqlite3.Connection, email: str, passwordHash: str) -> bool:
    """A new password also revokes every API token of the account."""
    cursor = conn.execute(
        "UPDATE users SET password_hash = ? WHERE email = ?", (passwordHash, email)
    )
    conn.execute(
        "DELETE FROM tokens WHERE user_id = (SELECT id FROM users WHERE email = ?)",
        (email,),
    )
    return cursor.rowcount == 1


def removeUser(conn: sqlite3.Connection, email: str) -> bool:
    return conn.execute("DELETE FROM users WHERE email = ?", (email,)).rowcount == 1


def lookupUser(conn: sqlite3.Connection, email: str) -> int | None:
    row = conn.execute("SELECT id FROM users WHERE email = ?", (email,)).fetchone()
    return None if row is None else row[0]


def listUsers(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT email FROM users ORDER BY email")]


def userDomains(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT lower(substr(email, instr(email, '@') + 1)) FROM users"
    )
    return {r[0] for r in rows}


def userDirectory(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        email.lower(): uid for uid, email in conn.execute("SELECT id, email FROM users")
    }


def checkPassword(conn: sqlite3.Connection, email: str, password: str) -> int | None:
    row = conn.execute(
        "SELECT id, password_hash FROM users WHERE email = ?", (email,)
    ).fetchone()
    if row is None:
        _hasher.hash(password)  # same cost either way: no user enumeration by timing
        return None
    try:
        _hasher.verify(row["password_hash"], password)
    except (VerificationError, InvalidHashError):
        return None
    return row["id"]


def _now() -> str:
    return datetime.now(UTC).isoformat()


@implementer(IUserStore)
class SQLiteUserStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _hash(self, password: str) -> Deferred:
        # argon2 is deliberately slow: a read thread, not the reactor or the writer.
        return self._db.read(lambda conn: hashPassword(password))

    def add(self, email: str, password: str) -> Deferred:
        d = self._hash(password)
        d.addCallback(lambda h: self._db.write(lambda conn: addUser(conn, email, h)))
        return d

    def setPassword(self, email: str, password: str) -> Deferred:
        d = self._hash(password)
        d.addCallback(
            lambda h: self._db.write(lambda conn: setPasswordHash(conn, email, h))
        )
        return d

    def remove(self, email: str) -> Deferred:
        return self._db.write(lambda conn: removeUser(conn, email))

    def lookup(self, email: str) -> Deferred:
        return self._db.read(lambda conn: lookupUser(conn, email))

    def authenticate(self, email: str, password: str) -> Deferred:
        return self._db.read(lambda conn: checkPassword(conn, email, password))

    def listUsers(self) -> Deferred:
        return self._db.read(listUsers)

    def domains(self) -> Deferred:
        return self._db.read(userDomains)

    def directory(self) -> Deferred:
        return self._db.read(userDirectory)
