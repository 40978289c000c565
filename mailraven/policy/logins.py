"""One limit on password guessing for every login path (SMTP AUTH, the API,
later IMAP).

An attempt is reserved before its password is checked, on the reactor thread,
so attempts still being checked count against the budget: N parallel guesses
with a budget of K get at most K password checks, however fast they arrive.

Failed attempts are counted per client IP and per account over a sliding
window. The per-IP budget stops one client guessing at many accounts; the
per-account budget stops many clients (a botnet) guessing at one account.
The per-account budget is a lockout risk: anyone can spend it and keep the
owner out. Two things bound that: an IP that logged in to the account
recently (L{TRUST_SECONDS}) is not held to the account's budget (only to its
own), and the budget is a rate, so the owner's client gets in once the
failures age out of the window, never later.

A success forgets only the failures of that IP against that account (the
owner mistyped): the IP's failures against other accounts stay, so logging in
to one's own account does not buy more guesses at someone else's.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from zope.interface import implementer

from mailraven.interfaces import ILoginLimiter

WINDOW_SECONDS = 15 * 60
TRUST_SECONDS = 30 * 24 * 3600  # an IP that logged in keeps the account open
MAX_DELAY = 8.0  # seconds before a failure is answered, at most
MAX_KEYS = 100_000  # IPs and accounts remembered; beyond, the oldest go


@dataclass(frozen=True)
class Throttled:
    """A refused attempt: C{scope} is "ip" or "account"; retry after
    C{retryAfter} seconds (at least 1)."""

    scope: str
    retryAfter: float


class LoginTicket:
    """
    One reserved attempt. Exactly one of L{succeeded}/L{failed} counts; later
    calls do nothing, so every exit of an exchange may settle the ticket.
    """

    def __init__(self, limiter: LoginLimiter, ip: str, account: str, protocol: str):
        self._limiter = limiter
        self.ip, self.account, self.protocol = ip, account, protocol
        self.settled = False

    def succeeded(self) -> None:
        if not self.settled:
            self.settled = True
            self._limiter._succeeded(self)

    def failed(self) -> float:
        """Count the failure; the delay (seconds) before answering it."""
        if self.settled:
            return 0.0
        self.settled = True
        return self._limiter._failed(self)


def _keepNewest(table: dict, maxKeys: int, stamp: Any) -> None:
    if len(table) > maxKeys:
        for key in sorted(table, key=stamp)[: len(table) - maxKeys]:
            del table[key]


def accountKey(login: str) -> str:
    """Logins are case-blind; a hostile one cannot grow the table's keys."""
    return login.strip().lower()[:320]


@implementer(ILoginLimiter)
class LoginLimiter:
    """
    C{ipFailures} failed logins per IP and C{accountFailures} per account in
    C{window} seconds, attempts in flight included. Time comes from C{clock}.
    C{metric} is a counter labelled (protocol, outcome) or None.
    """

    def __init__(
        self,
        clock: Any,
        ipFailures: int = 10,
        accountFailures: int = 30,
        window: float = WINDOW_SECONDS,
        metric: Any = None,
        maxKeys: int = MAX_KEYS,
    ) -> None:
        self._clock = clock
        self.ipFailures = ipFailures
        self.accountFailures = accountFailures
        self._window = window
        self._metric = metric
        self._maxKeys = maxKeys
        # failure times, with the account (per IP) or the IP (per account)
        self._byIP: dict[str, deque[tuple[float, str]]] = {}
        self._byAccount: dict[str, deque[tuple[float, str]]] = {}
        self._inFlightIP: Counter[str] = Counter()
        self._inFlightAccount: Counter[str] = Counter()
        self._trusted: dict[tuple[str, str], float] = {}

    # -- the interface ---------------------------------------------------------

    def reserve(self, ip: str, login: str, protocol: str) -> LoginTicket | Throttled:
        account = accountKey(login)
        now = self._clock.seconds()
        refusal = self._refusal(
            "ip", self._byIP, self._inFlightIP, ip, self.ipFailures, now
        )
        if refusal is None and not self._isTrusted(ip, account, now):
            refusal = self._refusal(
                "account",
                self._byAccount,
                self._inFlightAccount,
                account,
                self.accountFailures,
                now,
            )
        if refusal is not None:
            self._count(protocol, "throttled")
            return refusal
        self._inFlightIP[ip] += 1
        self._inFlightAccount[account] += 1
        return LoginTicket(self, ip, account, protocol)

    def prune(self) -> None:
        """Forget what has aged out; past C{maxKeys}, the oldest too."""
        now = self._clock.seconds()
        for table in (self._byIP, self._byAccount):
            for key in list(table):
                self._recent(table, key, now)
            _keepNewest(table, self._maxKeys, lambda k, t=table: t[k][-1][0])
        horizon = now - TRUST_SECONDS
        for pair in [p for p, t in self._trusted.items() if t < horizon]:
            del self._trusted[pair]
        _keepNewest(self._trusted, self._maxKeys, self._trusted.__getitem__)

    def failures(self, ip: str | None = None, login: str | None = None) -> int:
        """Failures in the window of C{ip} or of the account C{login}."""
        now = self._clock.seconds()
        if ip is not None:
            return len(self._recent(self._byIP, ip, now))
        return len(self._recent(self._byAccount, accountKey(login), now))

    # -- the tickets' side ---------------------------------------------------

    def _release(self, ticket: LoginTicket) -> None:
        for counter, key in (
            (self._inFlightIP, ticket.ip),
            (self._inFlightAccount, ticket.account),
        ):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def _failed(self, ticket: LoginTicket) -> float:
        self._release(ticket)
        self._count(ticket.protocol, "failure")
        now = self._clock.seconds()
        byIP = self._recent(self._byIP, ticket.ip, now)
        byIP.append((now, ticket.account))
        self._byIP[ticket.ip] = byIP
        byAccount = self._recent(self._byAccount, ticket.account, now)
        byAccount.append((now, ticket.ip))
        self._byAccount[ticket.account] = byAccount
        return min(MAX_DELAY, 0.5 * 2 ** (len(byIP) - 1))

    def _succeeded(self, ticket: LoginTicket) -> None:
        self._release(ticket)
        self._count(ticket.protocol, "success")
        ip, account = ticket.ip, ticket.account
        self._trusted[(ip, account)] = self._clock.seconds()
        self._forget(self._byIP, ip, lambda other: other == account)
        self._forget(self._byAccount, account, lambda other: other == ip)

    # -- tables ---------------------------------------------------------------

    def _recent(self, table: dict, key: str, now: float) -> deque:
        """The failures of C{key} still in the window (dropped when none)."""
        entries = table.get(key)
        if entries is None:
            return deque()
        horizon = now - self._window
        while entries and entries[0][0] <= horizon:
            entries.popleft()
        if not entries:
            del table[key]
        return entries

    def _refusal(
        self,
        scope: str,
        table: dict,
        inFlight: Counter,
        key: str,
        budget: int,
        now: float,
    ) -> Throttled | None:
        failures = self._recent(table, key, now)
        if len(failures) + inFlight[key] < budget:
            return None
        # enough failures must age out to leave room; in-flight ones end soon
        excess = len(failures) + inFlight[key] - budget
        if excess < len(failures):
            wait = failures[excess][0] + self._window - now
        else:
            wait = 1.0
        return Throttled(scope, max(1.0, wait))

    def _forget(self, table: dict, key: str, matches: Any) -> None:
        entries = table.get(key)
        if entries is None:
            return
        kept = deque(e for e in entries if not matches(e[1]))
        if kept:
            table[key] = kept
        else:
            del table[key]

    def _isTrusted(self, ip: str, account: str, now: float) -> bool:
        since = self._trusted.get((ip, account))
        return since is not None and now - since < TRUST_SECONDS

    def _count(self, protocol: str, outcome: str) -> None:
        if self._metric is not None:
            self._metric.labels(protocol, outcome).inc()
