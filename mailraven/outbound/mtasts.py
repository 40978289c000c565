"""MTA-STS (RFC 8461): which domains require verified TLS to their MX.

A domain publishing C{_mta-sts.<domain>} TXT C{v=STSv1; id=...} serves its
policy at C{https://mta-sts.<domain>/.well-known/mta-sts.txt} (fetched with a
verified certificate, no redirects, 64 KB at most). Under C{mode: enforce} mail
goes only to MX hosts the policy names, over STARTTLS with a certificate valid
for that host, and is deferred otherwise, never sent in clear. Policies are
cached for their C{max_age} (in memory and in SQLite, so a restart does not
forget them); a failed refresh keeps using a cached one, as the RFC asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import ssl
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.logger import Logger
from twisted.names import dns, error
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from mailraven.interfaces import IMTASTSPolicyCache

MAX_POLICY = 65536
FETCH_TIMEOUT = 20.0


@dataclass(frozen=True)
class STSPolicy:
    id: str
    mode: str  # enforce | testing | none
    mx: tuple[str, ...]
    maxAge: int
    fetchedAt: float

    def allows(self, host: str) -> bool:
        """RFC 8461 4.1: exact, or C{*.example.com} for one more label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern == host:
                return True
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
        return False

    def expired(self, now: float) -> bool:
        return now > self.fetchedAt + self.maxAge

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"


def parsePolicy(text: str, policyId: str, now: float) -> STSPolicy:
    """The policy file (key: value lines); ValueError when it is not valid."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise ValueError("not an STSv1 policy")
    mode = (fields.get("mode") or [""])[0].lower()
    if mode not in ("enforce", "testing", "none"):
        raise ValueError(f"bad mode {mode!r}")
    maxAge = (fields.get("max_age") or [""])[0]
    if not maxAge.isdigit():
        raise ValueError("bad max_age")
    mx = tuple(m.lower().rstrip(".") for m in fields.get("mx", []))
    if mode != "none" and not mx:
        raise ValueError("no mx in the policy")
    return STSPolicy(policyId, mode, mx, min(int(maxAge), 31557600), now)


def recordId(texts: list[bytes]) -> str | None:
    """The id of the one C{v=STSv1} TXT record (RFC 8461 3.1), else None."""
    found = []
    for text in texts:
        decoded = text.decode("ascii", "replace")
        tags = dict(
            (k.strip(), v.strip())
            for k, _, v in (part.partition("=") for part in decoded.split(";"))
        )
        if tags.get("v") == "STSv1" and tags.get("id"):
            found.append(tags["id"])
    return found[0] if len(found) == 1 else None


@implementer(IAgentEndpointFactory)
class _ToAddress:
    """An Agent that connects to an address we resolved (our resolver, not
    the system's), verifying the certificate for the URL's host name."""

    def __init__(self, reactor: Any, ip: str, port: int, tls: Any) -> None:
        self._endpoint = wrapClientTLS(tls, TCP4ClientEndpoint(reactor, ip, port, 10))

    def endpointForURI(self, uri: Any) -> Any:
        return self._endpoint


class MTASTS:
    log = Logger()

    def __init__(
        self,
        resolver: Callable[[], Any],
        reactor: Any,
        trustRoot: Any = None,
        port: int = 443,
        policies: IMTASTSPolicyCache | None = None,
    ) -> None:
        self._resolver = resolver
        self._reactor = reactor
        self._trustRoot = trustRoot
        self._port = port
        self._policies = policies  # across restarts (None: memory only)
        self._cache: dict[str, STSPolicy] = {}

    def clientTLS(self, host: str) -> Any:
        """TLS options that verify a certificate for C{host}."""
        return ssl.optionsForClientTLS(host, trustRoot=self._trustRoot)

    @inlineCallbacks
    def policyFor(self, domain: str):
        """Deferred L{STSPolicy} (or None): the domain's current policy."""
        now = self._reactor.seconds()
        cached = self._cache.get(domain)
        if cached is None and self._policies is not None:
            cached = yield self._policies.load(domain)
            if cached is not None:
                self._cache[domain] = cached
        usable = cached if cached is not None and not cached.expired(now) else None
        try:
            answers, _, _ = yield self._resolver().lookupText(f"_mta-sts.{domain}")
            texts = [b"".join(a.payload.data) for a in answers if a.type == dns.TXT]
        except error.DNSNameError:
            texts = []
        except Exception:
            return usable  # DNS trouble: keep what we know
        policyId = recordId(texts)
        if policyId is None:
            return usable
        if usable is not None and usable.id == policyId:
            return usable
        try:
            policy = yield self._fetch(domain, policyId)
        except Exception as e:
            self.log.warn(
                "MTA-STS policy of {domain} not fetched: {error}",
                domain=domain,
                error=str(e) or e.__class__.__name__,
                event="mta_sts_fetch_failed",
            )
            return usable
        self._cache[domain] = policy
        if self._policies is not None:
            yield self._policies.save(domain, policy)
        return policy

    @inlineCallbacks
    def _fetch(self, domain: str, policyId: str):
        host = f"mta-sts.{domain}"
        answers, _, _ = yield self._resolver().lookupAddress(host)
        ips = [a.payload.dottedQuad() for a in answers if a.type == dns.A]
        if not ips:
            raise ValueError(f"{host} has no address")
        agent = Agent.usingEndpointFactory(
            self._reactor,
            _ToAddress(self._reactor, ips[0], self._port, self.clientTLS(host)),
        )
        url = f"https://{host}/.well-known/mta-sts.txt".encode()
        request = agent.request(b"GET", url)
        request.addTimeout(FETCH_TIMEOUT, self._reactor)
        response = yield request
        if response.code != 200:
            raise ValueError(f"HTTP {response.code}")
        if response.length is not None and response.length > MAX_POLICY:
            raise ValueError("policy too large")
        body = yield readBody(response)
        if len(body) > MAX_POLICY:
            raise ValueError("policy too large")
        return parsePolicy(
            body.decode("utf-8", "replace"), policyId, self._reactor.seconds()
        )


def trustRootFrom(bundle: str) -> Any:
    """Certificates of a PEM bundle as a trust root; None: the platform's."""
    if not bundle:
        return None
    with open(bundle, "rb") as f:
        data = f.read()
    return ssl.trustRootFromCertificates(
        [
            ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM))
            for c in x509.load_pem_x509_certificates(data)
        ]
    )
