"""The DATA stage of the acceptance chain: a list of L{IPolicyCheck}s run in
order on a finished message, built once by the policy service.

Connection, MAIL and RCPT checks (limits, DNSBL) are still the methods of
L{mailraven.policy.session.ClientPolicy}; spam scoring runs in the store
(its CPU work is spread over the store worker processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from mailraven.smtp.recipients import Rejection


@dataclass
class Verdict:
    """What one check says: go on (C{refusal} None), or refuse the message."""

    refusal: Rejection | None = None

    @classmethod
    def refuse(cls, code: int, enhanced: str, text: str, reason: str) -> Verdict:
        return cls(Rejection(code, enhanced, text, reason))


ACCEPT = Verdict()


@inlineCallbacks
def runChecks(checks: list[Any], subject: Any) -> Deferred:
    """
    Deferred[Verdict]: the first refusal among C{checks} (each an
    L{mailraven.interfaces.IPolicyCheck}), else L{ACCEPT}. A check may record
    facts on C{subject} (mail-auth results on its envelope) for later checks
    and the store.
    """
    for check in checks:
        verdict = yield check.check(subject)
        if verdict.refusal is not None:
            return verdict
    return ACCEPT
