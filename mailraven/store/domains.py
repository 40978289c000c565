"""Domains added at runtime in SQLite: a local mail domain with the selector
of its own DKIM key.

The plain functions take a connection so the CLI can use them synchronously;
L{SQLiteDomainStore} runs them off the reactor thread. Domains in
C{server.domains} are local whether or not they are in this table.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from dataclasses import dataclass
from typing import Iterable

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailraven.interfaces import IDomainStore

try:  # IDNA 2008 (twisted[tls] brings it); else the stdlib's IDNA 2003 codec
    import idna
except ImportError:  # pragma: no cover
    idna = None
from mailraven.store.db import Database
from mailraven.store.rows import utcNow

# RFC 1035 2.3.1 labels (letters, digits, inner hyphens), at least two of them
# (or localhost, as server.domains allows); IDNs are stored as A-labels. The
# last label is never all digits (RFC 1123 2.1, RFC 3696 2): 1.2.3.4 is an
# IP address, not a domain.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+(?![0-9]+$){_LABEL}|localhost")
ECHOED = 100  # characters of a refused name quoted back (a 9 MB name was)


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


class ConfiguredDomain(ValueError):
    """The domain is in server.domains: it signs with the server key and is
    local whatever the table says, so the table must not hold it."""


def asciiDomain(name: str) -> str:
    """C{name} lower-cased with its U-labels as A-labels (IDNA 2008), the one
    form configured, added and account domains are compared in; as it is
    (lower-cased) when it is no valid IDN, so it matches no local domain.
    Composed first (NFC): C{bu\u0308cher} is the same name as C{b\u00fccher}."""
    name = name.lower()
    if name.isascii():
        return name
    name = unicodedata.normalize("NFC", name)
    try:
        return _toASCII(name)
    except (UnicodeError, ValueError):
        return name


def _toASCII(name: str) -> str:
    if idna is None:  # the stdlib codec (IDNA 2003) serves as well here
        return name.encode("idna").decode("ascii")
    try:
        return idna.encode(name).decode("ascii")
    except idna.IDNAError as e:
        raise ValueError(str(e)) from None


def normaliseDomain(text: str) -> str:
    """Lower-case A-labels, no trailing dot; L{BadDomain} for anything else
    (the refused text is quoted cut to L{ECHOED} characters)."""
    name = text.strip().lower().rstrip(".")
    if not name.isascii():
        try:
            name = _toASCII(name)
        except (UnicodeError, ValueError):
            raise BadDomain(f"not a domain name: {_quoted(text)}") from None
    if len(name) > 253 or not _DOMAIN.fullmatch(name) or not _validALabels(name):
        raise BadDomain(f"not a domain name: {_quoted(text)}")
    return name


def _validALabels(name: str) -> bool:
    """Whether every C{xn--} label decodes (else no one can type the name)."""
    for label in name.split("."):
        if label.startswith("xn--"):
            try:
                _fromALabel(label)
            except (UnicodeError, ValueError):
                return False
    return True


def _fromALabel(label: str) -> str:
    if idna is None:
        return label.encode("ascii").decode("idna")
    try:
        return idna.decode(label)
    except idna.IDNAError as e:
        raise ValueError(str(e)) from None


def _quoted(text: str) -> str:
    if len(text) <= ECHOED:
        return repr(text)
    return f"{text[:ECHOED]!r}... ({len(text)} characters)"


def checkNotConfigured(name: str, configured: Iterable[str]) -> None:
    """L{ConfiguredDomain} if C{name} (normalised) is in C{server.domains}."""
    if name in {asciiDomain(d.rstrip(".")) for d in configured}:
        raise ConfiguredDomain(
            f"{name} is configured in server.domains; it signs with the server"
            " key and cannot be added or removed at runtime"
        )


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


def domainSelector(conn: sqlite3.Connection, name: str) -> str | None:
    """The DKIM selector recorded for an added domain (the key it publishes),
    or None when C{name} was not added."""
    row = conn.execute(
        "SELECT dkim_selector FROM domains WHERE name = ?", (asciiDomain(name),)
    ).fetchone()
    return row[0] if row else None


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
