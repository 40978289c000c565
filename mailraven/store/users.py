"""Mail accounts in SQLite, passwords hashed with argon2id (argon2-cffi), plus
SCRAM-SHA-256 verifiers (scramp) for submission logins that never send it.

The plain functions take a connection so the CLI can use them synchronously;
L{SQLiteUserStore} runs the same functions off the reactor thread.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, datetime
from typing import Any, Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from scramp import ScramMechanism
from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailraven.interfaces import IUserStore
from mailraven.smtp.addresses import AddressError, parsePath
from mailraven.store.db import Database
from mailraven.store.domains import asciiDomain
from mailraven.store.searchindex import createSearchTable, dropSearchTable

_hasher = PasswordHasher()

# What the commands that let a person choose a password (user add, user
# passwd, quickstart --password-stdin) require; docs/configuration.md says it.
MIN_PASSWORD_LENGTH = 10
_scram = ScramMechanism("SCRAM-SHA-256")


class UserExists(Exception):
    """There is already an account with that address."""


class BadAddress(ValueError):
    """Not an address an account can have."""


def normaliseAddress(email: str) -> str:
    """
    An address an account or alias can have: one SMTP can name (RFC 5321
    and 6531 syntax, checked by the SMTP parser, so no control or bidi
    characters, local part up to 64 octets), with a domain that has a dot
    (or is localhost). Lower-cases the domain and writes its U-labels as
    A-labels; local parts keep their case but compare NOCASE.
    """
    text = email.strip()
    if text.endswith("."):
        text = text[:-1]
    shown = email if len(email) <= 100 else email[:100] + "..."
    if text.startswith("@"):  # a source route: not an account's address
        raise BadAddress(f"not an email address: {shown!r}")
    try:
        address = parsePath(text, utf8=True)
    except AddressError as e:
        raise BadAddress(f"not an email address: {shown!r} ({e})") from None
    # one spelling per domain: U-labels as A-labels, as domains are stored
    domain = asciiDomain(address.domain)
    if address.isLiteral or "." not in domain and domain != "localhost":
        raise BadAddress(f"not an email address: {shown!r}")
    if domain.rpartition(".")[2].isdigit():
        raise BadAddress(f"not an email address: {shown!r} (an IP is no domain)")
    return f"{address.local}@{domain}"


def lookupKey(email: str) -> str:
    """C{email} as accounts are stored: the domain in A-labels (names then
    compare NOCASE), so either spelling of an IDN finds the account."""
    local, at, domain = email.strip().rpartition("@")
    return f"{local}@{asciiDomain(domain.rstrip('.'))}" if at else email


def hashPassword(password: str) -> str:
    if not password:
        raise ValueError("the password must not be empty")
    return _hasher.hash(password)


def scramVerifier(password: str) -> str:
    """SCRAM-SHA-256 verifiers (RFC 7677) of C{password}, as JSON: what lets
    a client log in without the password crossing the wire."""
    salt, storedKey, serverKey, iterations = _scram.make_auth_info(password)
    return json.dumps(
        {
            "salt": base64.b64encode(salt).decode(),
            "stored_key": base64.b64encode(storedKey).decode(),
            "server_key": base64.b64encode(serverKey).decode(),
            "iterations": iterations,
        }
    )


def passwordSecrets(password: str) -> tuple[str, str]:
    """(argon2id hash, SCRAM verifier): everything kept of a password."""
    return hashPassword(password), scramVerifier(password)


def scramCredentials(
    conn: sqlite3.Connection, email: str
) -> tuple[bytes, bytes, bytes, int] | None:
    """The SCRAM verifier of an account (None: no account, or none set yet)."""
    row = conn.execute(
        "SELECT scram FROM users WHERE email = ?", (lookupKey(email),)
    ).fetchone()
    if row is None or not row[0]:
        return None
    stored = json.loads(row[0])
    return (
        base64.b64decode(stored["salt"]),
        base64.b64decode(stored["stored_key"]),
        base64.b64decode(stored["server_key"]),
        stored["iterations"],
    )


def addUser(
    conn: sqlite3.Connection,
    email: str,
    passwordHash: str,
    admin: bool = False,
    scram: str | None = None,
) -> int:
    try:
        cursor = conn.execute(
            "INSERT INTO users (email, password_hash, is_admin, created_at, scram)"
            " VALUES (?, ?, ?, ?, ?)",
            (normaliseAddress(email), passwordHash, admin, _now(), scram),
        )
    except sqlite3.IntegrityError:
        raise UserExists(email) from None
    userId = cursor.lastrowid
    # Ids of removed accounts come back (INTEGER PRIMARY KEY): never inherit
    # an index, even one left by an account removed with plain SQL.
    dropSearchTable(conn, userId)
    createSearchTable(conn, userId)
    return userId


def setPasswordHash(
    conn: sqlite3.Connection, email: str, passwordHash: str, scram: str | None = None
) -> bool:
    """A new password also revokes every API token of the account."""
    cursor = conn.execute(
        "UPDATE users SET password_hash = ?, scram = ? WHERE email = ?",
        (passwordHash, scram, lookupKey(email)),
    )
    conn.execute(
        "DELETE FROM tokens WHERE user_id = (SELECT id FROM users WHERE email = ?)",
        (lookupKey(email),),
    )
    return cursor.rowcount == 1


def removeUser(conn: sqlite3.Connection, email: str) -> bool:
    """The account, its mailbox entries and tokens (cascade), and its index."""
    userId = lookupUser(conn, email)
    if userId is None:
        return False
    conn.execute("DELETE FROM users WHERE id = ?", (userId,))
    dropSearchTable(conn, userId)
    return True


def setAdmin(conn: sqlite3.Connection, email: str, admin: bool) -> bool:
    """Grant or revoke the admin role; True if the account exists."""
    cursor = conn.execute(
        "UPDATE users SET is_admin = ? WHERE email = ?", (int(admin), lookupKey(email))
    )
    return cursor.rowcount > 0


def adminEmails(conn: sqlite3.Connection) -> list[str]:
    return [
        r[0] for r in conn.execute("SELECT email FROM users WHERE is_admin ORDER BY id")
    ]


def lookupUser(conn: sqlite3.Connection, email: str) -> int | None:
    row = conn.execute(
        "SELECT id FROM users WHERE email = ?", (lookupKey(email),)
    ).fetchone()
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


def adminIds(conn: sqlite3.Connection) -> list[int]:
    return [
        r[0] for r in conn.execute("SELECT id FROM users WHERE is_admin ORDER BY id")
    ]


def checkPassword(conn: sqlite3.Connection, email: str, password: str) -> int | None:
    row = conn.execute(
        "SELECT id, password_hash FROM users WHERE email = ?", (lookupKey(email),)
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
    def __init__(
        self, db: Database, onRevoke: Callable[[], None] = lambda: None
    ) -> None:
        """
        C{onRevoke} runs after a password change or removal has committed:
        tokens the API remembered as valid may no longer be.
        """
        self._db = db
        self._onRevoke = onRevoke

    def _revoked(self, result: Any) -> Any:
        self._onRevoke()
        return result

    def _hash(self, password: str) -> Deferred:
        # argon2 and PBKDF2 are deliberately slow: a read thread, not the
        # reactor or the writer.
        return self._db.read(lambda conn: passwordSecrets(password))

    def add(self, email: str, password: str, admin: bool = False) -> Deferred:
        d = self._hash(password)
        d.addCallback(
            lambda secrets: self._db.write(
                lambda conn: addUser(
                    conn, email, secrets[0], admin=admin, scram=secrets[1]
                )
            )
        )
        return d

    def setPassword(self, email: str, password: str) -> Deferred:
        d = self._hash(password)
        d.addCallback(
            lambda secrets: self._db.write(
                lambda conn: setPasswordHash(conn, email, *secrets)
            )
        )
        return d.addCallback(self._revoked)

    def scramCredentials(self, email: str) -> Deferred:
        return self._db.read(lambda conn: scramCredentials(conn, email))

    def remove(self, email: str) -> Deferred:
        return self._db.write(lambda conn: removeUser(conn, email)).addCallback(
            self._revoked
        )

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

    def admins(self) -> Deferred:
        return self._db.read(adminIds)
