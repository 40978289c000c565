"""Domains added at runtime in SQLite: a local mail domain with the selector
of its own DKIM key.

The plain functions take a connection so the CLI can use them synchronously;
L{SQLiteDomainStore} runs them off the reactor thread. Domains in
C{server.domains} are local whether or not they are in this table.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailraven.interfaces import IDomainStore
from mailraven.store.db import Database
from mailraven.store.rows import utcNow

# RFC 1035 2.3.1 labels (letters, digits, inner hyphens), at least two of them
# (or localhost, as server.domains allows); IDNs are given as A-labels.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}|localhost")


class BadDomain(ValueError):
    """Not a domain name we could receive mail for."""


class DomainExists(ValueError):
    """The domain is in the table already (its key would be replaced)."""


class DomainInUse(ValueError):
    """Accounts or aliases of the domain remain: removing it would strand them."""

    def __init__(self, domain: str, accounts: int, aliases: int) -> None:
        super().__init__(
            f"{domain} still has {accounts} account(s) and {aliases} alias(es);"
            " remove them first"
        )
        self.accounts = accounts
        self.aliases = aliases


@dataclass(frozen=True)
class Domain:
    name: str
    selector: str
    addedAt: str


def normaliseDomain(text: str) -> str:
    """Lower-case, no trailing dot; L{BadDomain} for anything else."""
    name = text.strip().lower().rstrip(".")
    if len(name) > 253 or not _DOMAIN.fullmatch(name):
        raise BadDomain(f"not a domain name: {text!r}")
    return name


def addDomain(conn: sqlite3.Connection, name: str, selector: str) -> Domain:
    name = normaliseDomain(name)
    domain = Domain(name, selector, utcNow())
    try:
        conn.execute(
            "INSERT INTO domains (name, dkim_selector, added_at) VALUES (?, ?, ?)",
            (domain.name, domain.selector, domain.addedAt),
        )
    except sqlite3.IntegrityError:
        raise DomainExists(f"{name} is a domain here already") from None
    return domain


def findDomain(conn: sqlite3.Connection, name: str) -> Domain | None:
    row = conn.execute(
        "SELECT name, dkim_selector, added_at FROM domains WHERE name = ?",
        (normaliseDomain(name),),
    ).fetchone()
    return Domain(*row) if row else None


def domainUse(conn: sqlite3.Connection, name: str) -> tuple[int, int]:
    """(accounts, aliases) with an address in C{name}, catch-all included."""
    suffix = "@" + normaliseDomain(name)
    accounts = sum(
        1
        for (email,) in conn.execute("SELECT email FROM users")
        if email.lower().endswith(suffix)
    )
    aliases = sum(
        1
        for (address,) in conn.execute("SELECT DISTINCT address FROM aliases")
        if address.lower().endswith(suffix)
    )
    return accounts, aliases


def removeDomain(conn: sqlite3.Connection, name: str) -> bool:
    """True if it was there; L{DomainInUse} while accounts or aliases remain."""
    name = normaliseDomain(name)
    accounts, aliases = domainUse(conn, name)
    if accounts or aliases:
        raise DomainInUse(name, accounts, aliases)
    return conn.execute("DELETE FROM domains WHERE name = ?", (name,)).rowcount > 0


def listDomains(conn: sqlite3.Connection) -> list[Domain]:
    return [
        Domain(*row)
        for row in conn.execute(
            "SELECT name, dkim_selector, added_at FROM domains ORDER BY name"
        )
    ]


def domainNames(conn: sqlite3.Connection) -> frozenset[str]:
    return frozenset(
        name.lower() for (name,) in conn.execute("SELECT name FROM domains")
    )


@implementer(IDomainStore)
class SQLiteDomainStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, name: str, selector: str) -> Deferred:
        return self._db.write(lambda conn: addDomain(conn, name, selector))

    def remove(self, name: str) -> Deferred:
        return self._db.write(lambda conn: removeDomain(conn, name))

    def list(self) -> Deferred:
        return self._db.read(listDomains)

    def names(self) -> Deferred:
        return self._db.read(domainNames)
