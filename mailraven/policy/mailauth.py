"""SPF, DKIM and DMARC as the DATA-stage check of the policy pipeline.

No thread waits on the network. DNS is resolved on the reactor through the
server's cached resolver; pyspf and dkimpy read answers that are already
there, never the network:

1. on the reactor: the SPF record of the sender's domain is fetched (unless
   cached) while the message finishes spooling;
2. the header is read (From: domain, DKIM-Signature d=/s=), SPF evaluated,
   the DMARC record and DKIM keys looked for; every question is answered
   from this check's answers or the resolver's cache. For a message of up
   to L{INLINE_LIMIT} bytes in memory this runs on the reactor (~70 us for
   1 KB, less than a thread hop costs under load), else on the policy
   service's own threads;
3. questions not answered yet (an SPF C{include:}, an C{mx} host, a new
   domain's DMARC record, a DKIM key) are noted and the run gives no result;
   the reactor resolves them all in parallel and step 2 runs again (SPF
   allows 10 lookups, RFC 7208 4.6.4);
4. signed mail: dkimpy verifies with the fetched keys on a policy thread.

Unsigned mail from a domain in the cache: no DNS round trip, no thread.

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
    evaluate,
    spfDomain,
    verifySignatures,
)
from mailraven.policy.pipeline import ACCEPT, Verdict

MAX_RUNS = 40  # SPF's 10 mechanisms, MX/A hosts of each: past this, temperror
INLINE_LIMIT = 16 * 1024  # bytes of an in-memory message read on the reactor


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

    @inlineCallbacks
    def authenticate(self, envelope: Any, spool: Any):
        """Deferred[AuthResults] of the three checks (no budget applied)."""
        ip, mailFrom, helo = envelope.peerIP, envelope.mailFrom, envelope.helo
        answers = DNSAnswers(self._resolver)
        domain = spfDomain(mailFrom, helo)
        prefetched = None
        if self._resolver.cached(domain, dns.TXT) is None:
            prefetched = answers.resolve([(domain, dns.TXT)])
        yield spool.finished()
        if prefetched is not None:
            yield prefetched
        # A small message is read on the reactor (~70 us for 1 KB: header,
        # SPF, DMARC from cached answers); a thread hop would cost as much.
        inline = spool.path is None and spool.size <= INLINE_LIMIT
        for _ in range(MAX_RUNS):
            if inline:
                found = evaluate(_bytes(spool), answers, ip, mailFrom, helo, False)
            else:
                found = yield deferToThreadPool(
                    self._reactor,
                    self._pool,
                    _evaluate,
                    spool,
                    answers,
                    ip,
                    mailFrom,
                    helo,
                )
            if found is not None:
                break
            yield answers.resolve()
        else:
            scope = "mailfrom" if mailFrom else "helo"
            return AuthResults(spf="temperror", spfDomain=domain, spfScope=scope)
        results, keys = found
        if keys is not None:  # signatures to verify: dkimpy's work, on a thread
            results = yield deferToThreadPool(
                self._reactor, self._pool, _verify, spool, answers, results, keys
            )
        return results


def _bytes(spool: Any) -> bytes:
    return b"".join(spool.chunks())


def _evaluate(spool: Any, answers: DNSAnswers, *args: Any) -> Any:
    return evaluate(_bytes(spool), answers, *args)


def _verify(spool: Any, answers: DNSAnswers, results: Any, keys: dict) -> Any:
    return verifySignatures(_bytes(spool), answers, results, keys)
