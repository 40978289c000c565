"""The acceptance chain of one SMTP session: limits at connect, message and
recipient rates, the DNSBL verdict awaited at RCPT (started at connect), and
the DATA stage's checks (L{mailraven.policy.pipeline}) on the whole message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed

from mailraven.policy.pipeline import runChecks
from mailraven.smtp.recipients import Rejection


@dataclass
class SessionPolicy:
    limits: Any = None  # ClientLimits
    dnsbl: Any = None  # DNSBLChecker
    failOpen: bool = True
    data: list[Any] = field(default_factory=list)  # IPolicyCheck, in order

    def open(self, ip: str) -> ClientPolicy:
        return ClientPolicy(self, ip)


class ClientPolicy:
    """
    Per connection. Allowlisted peers skip the rate limits and the DNSBL, not
    the bound on concurrent connections: that one guards memory.
    """

    def __init__(self, policy: SessionPolicy, ip: str) -> None:
        self._policy = policy
        self.ip = ip
        self.allowlisted = bool(policy.limits and policy.limits.allowlisted(ip))
        self._counted = False
        self.verdict: Any = None
        self._waiting: list[Deferred] | None = None

    def connect(self) -> Rejection | None:
        """None to go on; else a 421 for the greeting. Starts the DNSBL lookups."""
        if self._policy.limits is not None:
            broken = self._policy.limits.connect(self.ip, rates=not self.allowlisted)
            if broken is not None:
                return Rejection(
                    421, "4.7.0", "Too many connections, slow down", broken
                )
            self._counted = True
        if self._policy.dnsbl is not None and not self.allowlisted:
            self._waiting = []
            self._policy.dnsbl.check(self.ip).addCallback(self._gotVerdict)
        return None

    def _gotVerdict(self, verdict: Any) -> None:
        self.verdict = verdict
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            d.callback(verdict)

    def close(self) -> None:
        if self._counted:
            self._policy.limits.disconnect(self.ip)
            self._counted = False

    def message(self) -> Rejection | None:
        limits = self._policy.limits
        if limits is not None and not self.allowlisted and not limits.message(self.ip):
            return Rejection(
                451, "4.7.1", "Too many messages, slow down", "messages_per_ip"
            )
        return None

    def recipient(self) -> Rejection | None:
        limits = self._policy.limits
        if (
            limits is not None
            and not self.allowlisted
            and not limits.recipient(self.ip)
        ):
            return Rejection(
                452, "4.7.1", "Too many recipients, slow down", "recipients_per_ip"
            )
        return None

    def checkMessage(self, transaction: Any) -> Deferred:
        """Deferred[Verdict] of the DATA stage for the finished message."""
        return runChecks(self._policy.data, transaction)

    def dnsblGate(self) -> Deferred:
        """Fires with the DNSBL score to add, or fails with a Rejection."""
        if self._policy.dnsbl is None or self.allowlisted:
            return succeed(0.0)
        if self.verdict is not None:
            return succeed(self._judge(self.verdict))
        d: Deferred = Deferred()
        self._waiting.append(d)
        d.addCallback(self._judge)
        return d

    def _judge(self, verdict: Any) -> float:
        listing = verdict.rejecting
        if listing is not None:
            raise Rejection(
                554,
                "5.7.1",
                f"Client host [{self.ip}] blocked using {listing.zone.name}:"
                f" {listing.reason}",
                "dnsbl",
            )
        if (verdict.timedOut or verdict.errors) and not self._policy.failOpen:
            raise Rejection(
                451, "4.7.1", "DNSBL check failed, try again later", "dnsbl_error"
            )
        return verdict.score
