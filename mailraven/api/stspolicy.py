"""The MTA-STS policy MailRaven publishes for its own domains (RFC 8461).

Senders that honour MTA-STS fetch C{https://mta-sts.<domain>/.well-known/mta-sts.txt}
with a certificate valid for that name. The policy is served here, on the
C{api.listen} listeners, so the printed DNS records and the served file come
from one place and cannot disagree; its id (the C{_mta-sts} TXT record) is a
hash of the text, so changing the mode or the MX name changes the id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import Resource

from mailraven.api.site import JSONNotFound

POLICY_HOST_PREFIX = "mta-sts."
WELL_KNOWN = b".well-known"
POLICY_FILE = b"mta-sts.txt"

log = Logger()


@dataclass(frozen=True)
class PublishedPolicy:
    """What C{mtasts.*} and C{server.hostname} say senders should enforce."""

    mode: str  # testing | enforce | none
    mx: tuple[str, ...]
    maxAge: int

    def text(self) -> str:
        """RFC 8461 3.2: one C{key: value} field per line, one C{mx} per host."""
        fields = [("version", "STSv1"), ("mode", self.mode)]
        fields.extend(("mx", host) for host in self.mx)
        fields.append(("max_age", str(self.maxAge)))
        return "".join(f"{key}: {value}\r\n" for key, value in fields)

    @property
    def id(self) -> str:
        """RFC 8461 3.1 C{sts-id} (1-32 letters/digits), new for a new text."""
        return hashlib.sha256(self.text().encode("ascii")).hexdigest()[:20]

    def record(self) -> str:
        """The value of the C{_mta-sts.<domain>} TXT record."""
        return f"v=STSv1; id={self.id}"


def policyFromConfig(config: Any) -> PublishedPolicy:
    return PublishedPolicy(
        config["mtasts.mode"],
        (config["server.hostname"].lower().rstrip("."),),
        config["mtasts.max_age"],
    )


def policyDomains(domains: list[str]) -> list[str]:
    """The mail domains that can have a policy: single labels (C{localhost})
    have no public DNS and no certificate."""
    return [d for d in domains if "." in d]


def policyHosts(domains: list[str]) -> list[str]:
    """The names the policy is served under, one per mail domain."""
    return [POLICY_HOST_PREFIX + d for d in policyDomains(domains)]


class PolicyResource(Resource):
    """C{/.well-known/mta-sts.txt}, only for the Host C{mta-sts.<our domain>}."""

    isLeaf = True

    def __init__(self, policy: PublishedPolicy, domains: list[str]) -> None:
        super().__init__()
        self._body = policy.text().encode("ascii")
        self._hosts = frozenset(policyHosts(domains))

    def render_GET(self, request: Any) -> bytes:
        host = request.getRequestHostname().decode("ascii", "replace").lower()
        if request.postpath not in ([], [b""]) or host.rstrip(".") not in self._hosts:
            return JSONNotFound().render(request)
        request.setHeader(b"content-type", b"text/plain")
        return self._body


def mountPolicy(root: Resource, resource: PolicyResource) -> None:
    """Put C{resource} at C{/.well-known/mta-sts.txt}, beside what else is
    under C{/.well-known/} (the ACME challenges)."""
    wellKnown = root.children.get(WELL_KNOWN)
    if wellKnown is None:
        wellKnown = Resource()
        root.putChild(WELL_KNOWN, wellKnown)
    wellKnown.putChild(POLICY_FILE, resource)


def announce(policy: PublishedPolicy, domains: list[str]) -> None:
    """Log the TXT record to publish: after a change of C{mtasts.mode} the
    operator needs the new id, and senders only refetch when it changes."""
    for domain in policyDomains(domains):
        log.info(
            "serving MTA-STS policy (mode {mode}) for {domain}; publish"
            ' _mta-sts.{domain}. TXT "{record}"',
            mode=policy.mode,
            domain=domain,
            record=policy.record(),
            event="mtasts_policy",
        )
