"""SPF, DKIM and DMARC as the DATA-stage check of the policy pipeline.

No thread waits on the network. DNS is resolved on the reactor through the
server's cached resolver; the libraries (pyspf, dkimpy) run on the policy
service's own small pool and read answers that are already there:

1. on the reactor: the SPF record of the sender's domain is fetched while the
   message finishes spooling;
2. on a thread: the header is read (From: domain, DKIM-Signature d=/s=) and
   SPF evaluated; each lookup pyspf makes is answered from the cache;
3. a lookup not yet answered (an C{include:}, an C{mx} host, a new domain) is
   noted and the run ends; the reactor resolves it and SPF runs again (pyspf
   takes ~20 us; SPF allows 10 lookups, RFC 7208 4.6.4). Meanwhile the DKIM
   keys and DMARC records are fetched, all in parallel;
4. on a thread, only for signed mail: dkimpy verifies with the fetched keys.

Whatever the message looks like, the outcome is a result (C{permerror},
C{none}) and never an error reply: only DNS slower than C{mailauth.budget}
turns into C{spf=temperror}, and the message is still taken.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    inlineCallbacks,
)
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.names import dns
from zope.interface import implementer

from mailraven.interfaces import IPolicyCheck
from mailraven.policy.emailauth import (
    AuthResults,
    DNSAnswers,
    HeaderFacts,
    checkDKIM,
    checkDMARC,
    checkSPF,
    dmarcNames,
    headerFacts,
    keyName,
    spfDomain,
)
from mailraven.policy.pipeline import ACCEPT, Verdict

MAX_SPF_RUNS = 40  # 10 mechanisms, MX/A hosts of each: past this, temperror


@implementer(IPolicyCheck)
class MailAuthCheck:
    """
    Authenticates the message of a transaction (C{subject.envelope},
    C{subject.spool}), records the results on the envelope and refuses a
    DMARC failure under C{p=reject} when C{dmarcReject}.
    """

    name = "mailauth"
    log = Logger()

    def __init__(
        self,
        resolver: Any,
        reactor: Any,
        pool: Any,
        budget: float,
        authservId: str,
        dmarcReject: bool = True,
    ) -> None:
        self._resolver = resolver
        self._reactor = reactor
        self._pool = pool
        self._budget = budget
        self._authservId = authservId
        self._dmarcReject = dmarcReject

    def check(self, subject: Any) -> Deferred:
        envelope = subject.envelope
        d = self.authenticate(envelope, subject.spool)
        d.addTimeout(self._budget, self._reactor)
        d.addErrback(self._failed)
        d.addCallback(self._judge, envelope)
        return d

    def _failed(self, failure: Any) -> AuthResults:
        if failure.check(TimeoutError, CancelledError):
            return AuthResults(spf="temperror")  # DNS too slow: decide without it
        self.log.failure("mail-auth failed", failure, event="mailauth_error")
        return AuthResults(spf="permerror", dkim="permerror", dmarc="permerror")

    def _judge(self, results: AuthResults, envelope: Any) -> Verdict:
        results.authservId = self._authservId
        envelope.auth = results
        if (
            results.dmarc == "fail"
            and results.dmarcPolicy == "reject"
            and self._dmarcReject
        ):
            return Verdict.refuse(
                550,
                "5.7.1",
                f"Rejected by the DMARC policy of {results.fromDomain}",
                "dmarc",
            )
        return ACCEPT

    def _onThread(self, f: Any, *args: Any) -> Deferred:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    @inlineCallbacks
    def authenticate(self, envelope: Any, spool: Any):
        """Deferred[AuthResults] of the three checks (no budget applied)."""
        ip, mailFrom, helo = envelope.peerIP, envelope.mailFrom, envelope.helo
        domain = spfDomain(mailFrom, helo)
        spfAnswers = DNSAnswers(self._resolver)
        prefetched = spfAnswers.resolve([(domain, dns.TXT)])
        yield spool.finished()
        yield prefetched
        message, facts, spf = yield self._onThread(
            _firstLook, spool, spfAnswers, ip, mailFrom, helo
        )
        results = AuthResults(
            spf=spf, spfDomain=domain, fromDomain=facts.fromDomain, dkim=facts.dkim
        )
        others = DNSAnswers(self._resolver)
        names = [keyName(d, s) for d, s in facts.signatures]
        if facts.fromDomain:
            names += dmarcNames(facts.fromDomain)
        fetched = others.resolve([(name, dns.TXT) for name in names])
        if spfAnswers.missing:
            results.spf = yield self._evaluateSPF(spfAnswers, ip, mailFrom, helo)
        yield fetched
        if facts.signatures:
            keys = _keys(others, names[: len(facts.signatures)])
            results.dkim, results.dkimDomains = yield self._onThread(
                checkDKIM, message, keys
            )
        checkDMARC(others, results)
        return results

    @inlineCallbacks
    def _evaluateSPF(self, answers: DNSAnswers, ip: str, mailFrom: str, helo: str):
        for _ in range(MAX_SPF_RUNS):
            yield answers.resolve()
            result = yield self._onThread(checkSPF, answers, ip, mailFrom, helo)
            if not answers.missing:
                return result
        return "temperror"


def _firstLook(
    spool: Any, answers: DNSAnswers, ip: str, mailFrom: str, helo: str
) -> tuple[bytes | None, HeaderFacts, str]:
    """On a thread: the header facts, SPF if its answers are all cached."""
    message = b"".join(spool.chunks())
    facts = headerFacts(message)
    spf = checkSPF(answers, ip, mailFrom, helo)
    return (message if facts.signatures else None), facts, spf


def _keys(answers: DNSAnswers, names: list[str]) -> dict[str, Any]:
    """DKIM key records by name: the TXT text, None, or "temperror"."""
    keys: dict[str, Any] = {}
    for name in names:
        try:
            found = answers.txt(name)
        except Exception:
            keys[name] = "temperror"
            continue
        keys[name] = found[0] if found else None
    return keys
