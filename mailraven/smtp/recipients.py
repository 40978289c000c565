"""Who may receive mail here: local domains and their users; nothing else.

There is no relaying in the MX path: an address whose domain is not local is
refused whatever its local part looks like (percent hack, quoted @, routes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.logger import Logger

from mailraven.envelope import Recipient
from mailraven.interfaces import IAliasStore, IDomainStore, IQuotaStore, IUserStore
from mailraven.smtp.addresses import Address
from mailraven.store.domains import asciiDomain
from mailraven.store.quotas import overQuota

DIRECTORY_MAX_AGE = 1.0  # seconds a CLI change (account, alias, domain) takes
# Every local domain has them (RFC 5321 4.5.1, RFC 2142 section 2), routed
# to the postmaster account unless an account or alias of that name exists.
# Only postmaster may come without a domain (parsePath allows no other).
ROLE_ADDRESSES = frozenset({"postmaster", "abuse"})
# Local parts that name another destination (percent hack, bang path, a
# quoted address): only an exact account or alias may have one, never a
# plus-address or a catch-all, so neither accepts what reads as a relay.
_ROUTING = frozenset('%!@"\\')


@dataclass(frozen=True)
class Rejection(Exception):
    code: int
    enhanced: str
    text: str
    reason: str


# A new exception for every refusal: one module-level instance raised again
# and again kept every earlier traceback, and with it the frames of each
# refused session (transport, buffers, spool), for the life of the process.
def unknownUser() -> Rejection:
    return Rejection(
        550, "5.1.1", "Recipient address rejected: no such user", "unknown_user"
    )


def relayDenied() -> Rejection:
    return Rejection(554, "5.7.1", "Relay access denied", "relay_denied")


def overQuotaRejection() -> Rejection:
    """Temporary (RFC 3463 4.2.2): the sender retries while the user cleans up."""
    return Rejection(452, "4.2.2", "Mailbox full", "over_quota")


class RecipientResolver:
    """
    Maps an RCPT address to a local user. Local domains are the configured ones
    plus every domain that has an account, so C{mailraven user add} is enough
    to start receiving for a new domain.

    The account, alias and domain directories are held in memory and
    reloaded (off the reactor, one load at a time) when older than
    C{maxAge}: a RCPT costs no thread round trip, and accounts, aliases and
    domains changed by the CLI in another process are seen within C{maxAge}
    seconds.
    """

    log = Logger()

    def __init__(
        self,
        users: IUserStore,
        domains: Iterable[str],
        clock: Any,
        maxAge: float = DIRECTORY_MAX_AGE,
        postmaster: str = "",
        delimiter: str = "+",
        aliases: IAliasStore | None = None,
        quotas: IQuotaStore | None = None,
        defaultQuota: int = 0,
        domainStore: IDomainStore | None = None,
    ) -> None:
        self._quotaStore = quotas
        self._defaultQuota = defaultQuota
        self._quotas: dict[int, tuple[int, int | None]] = {}
        # Bytes this process accepted per account since the directory was
        # loaded: usage the loaded counters cannot show yet.
        self._accepted: dict[int, int] = {}
        self._users = users
        self._aliasStore = aliases
        self._aliases: dict[str, list[int]] = {}
        self._domainStore = domainStore
        self._addedDomains: frozenset[str] = frozenset()
        self._delimiter = delimiter
        self._postmaster = _asciiAddress(postmaster.lower())
        # every domain (configured, added, of an account or alias) in one
        # form, lower-case A-labels: an SMTPUTF8 RCPT may spell it in U-labels
        self._domains = frozenset(asciiDomain(d.rstrip(".")) for d in domains)
        self._clock = clock
        self._maxAge = maxAge
        self._directory: dict[str, int] | None = None
        self._admins: list[int] = []
        self._userDomains: frozenset[str] = frozenset()
        self._loadedAt = float("-inf")
        self._loading: list[Deferred] | None = None

    def resolve(self, address: Address) -> Deferred:
        """
        Deferred firing with the L{Recipient}s of C{address} (one per member
        account for an alias, never empty), or failing with a L{Rejection}.
        """
        if address.isLiteral:
            raise relayDenied()
        if self._clock.seconds() - self._loadedAt <= self._maxAge:
            return succeed(self._withinQuota(self._decide(address)))
        d = self._fresh()
        d.addCallback(lambda _: self._withinQuota(self._decide(address)))
        return d

    def _withinQuota(self, recipients: list[Recipient]) -> list[Recipient]:
        """
        The recipients whose account is not past its quota (usage as of the
        last reload); 452 4.2.2 when none is. An alias still reaches the
        members with room.
        """
        room = [r for r in recipients if not self._full(r.userId)]
        if not room:
            raise overQuotaRejection()
        return room

    def _full(self, userId: int) -> bool:
        used, own = self._quotas.get(userId, (0, None))
        return overQuota(used + self._accepted.get(userId, 0), own, self._defaultQuota)

    def reserveRoom(self, groups: list[list[int]], size: int) -> set[int] | None:
        """
        At the final dot, C{groups} holding the accounts of each recipient
        address (several for an alias): the accounts to store the message
        for, C{size} counted for each; None when an address has no account
        with room left (an alias keeps its members with room, as at RCPT).
        Room counts what this process accepted since the directory was
        loaded: RCPT alone could not hold a limit, since sessions that passed
        RCPT could send their DATA any time later, each one past it.
        Synchronous on the reactor, so sessions finishing together see each
        other's messages.
        """
        kept: set[int] = set()
        for group in groups:
            room = [userId for userId in group if not self._full(userId)]
            if not room:
                return None
            kept.update(room)
        for userId in kept:
            self._accepted[userId] = self._accepted.get(userId, 0) + size
        return kept

    def reserve(self, userId: int, size: int) -> Deferred:
        """
        Deferred firing with whether the account has room for C{size} more
        (and then counting it): IMAP APPEND takes room the way the final dot
        does, so parallel APPENDs and SMTP deliveries stop at the first one
        to cross the limit instead of each passing a check of stored usage.
        """
        if self._clock.seconds() - self._loadedAt <= self._maxAge:
            return succeed(self.reserveRoom([[userId]], size) is not None)
        d = self._fresh()
        d.addCallback(lambda _: self.reserveRoom([[userId]], size) is not None)
        return d

    def isLocalDomain(self, domain: str) -> Deferred:
        """Deferred firing with whether C{domain} is ours (configured, added,
        or with an account), as of a fresh directory: the admin API checks an
        alias against it, since an alias of any other domain would relay."""
        self.forget()
        d = self._fresh()
        domain = asciiDomain(domain)
        d.addCallback(
            lambda _: (
                domain in self._domains
                or domain in self._userDomains
                or domain in self._addedDomains
            )
        )
        return d

    def forget(self) -> None:
        """The next RCPT reloads the directories: a change made in this
        process (the admin API) is seen at once."""
        self._loadedAt = float("-inf")

    def _decide(self, address: Address) -> list[Recipient]:
        """docs/addresses.md gives the order: account, alias, plus-address
        (account, then alias), role address, catch-all."""
        text = str(address)
        domain = asciiDomain(address.domain)
        local = (
            domain in self._domains
            or domain in self._userDomains
            or domain in self._addedDomains
        )
        key = f"{address.local}@{domain}" if address.domain else address.local
        found = self._members(key.lower(), local)
        if found:
            return [Recipient(text, userId) for userId in found]
        routed = not _ROUTING.isdisjoint(address.local)
        base, tag = self._subaddress(address)
        if base and not routed:
            found = self._members(f"{base}@{domain}".lower(), local)
            if found:
                return [Recipient(text, userId, tag=tag) for userId in found]
        if address.local.lower() in ROLE_ADDRESSES and (local or not address.domain):
            found = self._roleAccounts()
            if found:
                return [Recipient(text, userId) for userId in found]
        if local:
            found = [] if routed else self._aliases.get(f"@{domain}", [])
            if found:
                return [Recipient(text, userId) for userId in found]
            raise unknownUser()
        raise relayDenied()

    def _members(self, key: str, local: bool) -> list[int]:
        """The account of C{key}, or the members of the alias C{key} when its
        domain is ours (an alias of any other domain is never honoured)."""
        userId = self._directory.get(key)
        if userId is not None:
            return [userId]
        return self._aliases.get(key, []) if local else []

    def _subaddress(self, address: Address) -> tuple[str, str]:
        """
        (local part, tag) of a plus-address (RFC 5233 subaddressing):
        C{alice+news} -> (alice, news); ("", "") when the delimiter is off or
        absent, or nothing precedes it.
        """
        if not self._delimiter:
            return "", ""
        base, sep, tag = address.local.partition(self._delimiter)
        if not sep or not base:
            return "", ""
        return base, tag

    def _roleAccounts(self) -> list[int]:
        """
        RFC 5321 4.5.1: every local domain MUST accept mail for postmaster
        (and RFC 2142 names abuse). Without an account of that name it goes
        to C{server.postmaster}; when that is unset or gone, to every admin
        account; with no admin, to the first account made (quickstart's).
        """
        if self._postmaster:
            userId = self._directory.get(self._postmaster)
            if userId is not None:
                return [userId]
            self.log.warn(
                "server.postmaster {account} is not an account; postmaster mail"
                " goes to the admin accounts",
                account=self._postmaster,
            )
        if self._admins:
            return list(self._admins)
        first = min(self._directory.values(), default=None)
        return [] if first is None else [first]

    def _fresh(self) -> Deferred:
        waiter: Deferred = Deferred()
        if self._loading is not None:
            self._loading.append(waiter)
            return waiter
        self._loading = [waiter]
        startedAt = self._clock.seconds()
        loads = [
            self._users.directory(),
            self._aliasStore.directory() if self._aliasStore else succeed({}),
            self._domainStore.names() if self._domainStore else succeed(frozenset()),
            self._quotaStore.directory() if self._quotaStore else succeed({}),
            self._users.admins(),
        ]
        d = gatherResults(loads, consumeErrors=True)
        d.addCallbacks(self._loaded, self._loadFailed, callbackArgs=(startedAt,))
        return waiter

    def _loaded(self, loaded: list[dict], startedAt: float) -> None:
        directory = {_asciiAddress(a): i for a, i in loaded[0].items()}
        self._directory = directory
        self._aliases = {_asciiAddress(a): m for a, m in loaded[1].items()}
        self._addedDomains = loaded[2]
        self._quotas = loaded[3]
        self._accepted = {}
        self._admins = loaded[4]
        self._userDomains = frozenset(a.rpartition("@")[2] for a in directory)
        self._loadedAt = startedAt
        waiters, self._loading = self._loading, None
        for waiter in waiters:
            waiter.callback(None)

    def _loadFailed(self, failure: Any) -> None:
        if failure.check(FirstError):
            failure = failure.value.subFailure
        waiters, self._loading = self._loading, None
        for waiter in waiters:
            waiter.errback(failure)


def _asciiAddress(address: str) -> str:
    """C{address} (or C{@domain}) with its domain in the resolver's form."""
    local, at, domain = address.rpartition("@")
    return f"{local}@{asciiDomain(domain)}" if at else address
