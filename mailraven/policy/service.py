"""The policy part of the service tree: builds the DNSBL checker, the rate
limits and the DATA-stage checks (mail-auth) from configuration, owns the
mail-auth threads, prunes buckets and health-checks zones on timers."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService

from mailraven.policy.dnsbl import DNSBLChecker, parseZone
from mailraven.policy.limits import ClientLimits
from mailraven.policy.logins import LoginLimiter
from mailraven.policy.mailauth import MailAuthCheck
from mailraven.policy.session import SessionPolicy
from mailraven.threads import ThreadPoolService

PRUNE_SECONDS = 60
# pyspf and dkimpy only compute here (their DNS is answered on the reactor):
# threads beyond the cores would only contend for the GIL.
MAILAUTH_THREADS = 2


class PolicyService(MultiService):
    def __init__(self, config: Any, clock: Any, metrics: Any, resolver: Any) -> None:
        super().__init__()
        self.limits = ClientLimits(
            clock,
            connectionsPerIP=config["ratelimit.connections_per_ip"],
            connectionsPerSubnet=config["ratelimit.connections_per_subnet"],
            concurrentPerIP=config["ratelimit.concurrent_per_ip"],
            messagesPerIP=config["ratelimit.messages_per_ip"],
            recipientsPerIP=config["ratelimit.recipients_per_ip"],
            allowlist=config["ratelimit.allowlist"],
            metrics=metrics,
        )
        self._prune = TimerService(PRUNE_SECONDS, self.limits.prune)
        self._prune.clock = clock
        self._prune.setServiceParent(self)
        self.logins = LoginLimiter(
            clock,
            config["ratelimit.auth_failures"],
            config["ratelimit.auth_failures_per_account"],
            metric=metrics.loginAttempts,
        )
        prune = TimerService(PRUNE_SECONDS, self.logins.prune)
        prune.clock = clock
        prune.setServiceParent(self)
        self.dnsbl = None
        zones = [parseZone(spec) for spec in config["dnsbl.zones"]]
        if zones:
            self.dnsbl = DNSBLChecker(
                zones,
                resolver,
                clock,
                config["dnsbl.budget"],
                metrics,
                queryTimeout=(config["dns.timeout"],),
            )
            health = TimerService(config["dnsbl.health_interval"], self.checkZones)
            health.clock = clock
            health.setServiceParent(self)
        self.mx = SessionPolicy(
            self.limits,
            self.dnsbl,
            config["dnsbl.fail_open"],
            data=self._dataChecks(config, clock, resolver),
        )
        self.submission = SessionPolicy(self.limits)

    def _dataChecks(self, config: Any, clock: Any, resolver: Any) -> list[Any]:
        """The DATA stage of MX mail, in order (IPolicyCheck providers)."""
        if not config["mailauth.enabled"]:
            return []
        threads = ThreadPoolService(MAILAUTH_THREADS, "mailraven-mailauth")
        threads.setServiceParent(self)
        return [
            MailAuthCheck(
                resolver,
                clock,
                threads.pool,
                config["mailauth.budget"],
                config["server.hostname"],
                config["mailauth.dmarc_reject"],
            )
        ]

    def checkZones(self):
        d = self.dnsbl.checkHealth()
        d.addErrback(lambda f: None)
        return d

    def health(self) -> dict:
        if self.dnsbl is None:
            return {"status": "ok", "zones": {}}
        zones = {
            name: "healthy" if ok else "unhealthy"
            for name, ok in self.dnsbl.healthy.items()
        }
        status = "ok" if all(self.dnsbl.healthy.values()) else "degraded"
        return {"status": status, "zones": zones}
