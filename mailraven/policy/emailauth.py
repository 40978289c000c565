"""SPF, DKIM and DMARC for inbound mail, on kept libraries: the parts that
run on a mail-auth thread.

pyspf evaluates SPF, dkimpy verifies DKIM signatures, publicsuffixlist gives
the organizational domain for DMARC alignment; DMARC's own policy record is
simple enough to read here (RFC 7489 6.3). None of them waits on the network:
their DNS questions are answered from L{DNSAnswers}, which holds what the
reactor has already resolved (or the shared cache holds). A question not yet
answered is noted and ends the run; L{mailraven.policy.mailauth} resolves it
on the reactor and runs the check again (see docs/architecture.md).
"""

from __future__ import annotations

import functools
import re
import socket
import threading
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any

import dkim
import spf
from authres import DKIMAuthenticationResult, SPFAuthenticationResult
from authres.dmarc import DMARCAuthenticationResult
from publicsuffixlist import PublicSuffixList
from twisted.internet.defer import DeferredList
from twisted.names import dns, error
from twisted.python.failure import Failure

_PSL = PublicSuffixList()
_current = threading.local()


def _pyspfLookup(name: str, qtype: str, tcpfallback: bool = True, timeout: int = 30):
    return _current.lookup(name, qtype)


# pyspf resolves through this module function; ours dispatches to the answers
# of the check running on this thread.
spf.DNSLookup = _pyspfLookup

QTYPES = {"A": dns.A, "AAAA": dns.AAAA, "MX": dns.MX, "TXT": dns.TXT, "PTR": dns.PTR}


class NotYetResolved(Exception):
    """A check asked what the reactor has not resolved yet: run it again later."""


class DNSAnswers:
    """
    The DNS answers one message's checks may use: resolved on the reactor
    (L{resolve}), read on a thread. A question neither here nor in the shared
    cache is added to L{missing} and raises L{NotYetResolved}.
    """

    def __init__(self, resolver: Any) -> None:
        self._resolver = resolver  # mailraven.dnsresolver.CachingResolver
        self._known: dict[tuple[str, int], Any] = {}
        self.missing: list[tuple[str, int]] = []

    def _records(self, name: str, qtype: int) -> list:
        key = (name.lower().rstrip("."), qtype)
        found = self._known.get(key)
        if found is None:
            found = self._resolver.cached(key[0], qtype)
            if found is None:
                if key not in self.missing:
                    self.missing.append(key)
                raise NotYetResolved(key)
            self._known[key] = found
        if isinstance(found, Failure):
            if found.check(error.DNSNameError):
                return []
            raise spf.TempError(f"DNS {name}: {found.type.__name__}")
        return found[0]

    def resolve(self, questions: list[tuple[str, int]] | None = None) -> Any:
        """Deferred: answer C{questions} (default: L{missing}) in parallel."""
        if questions is None:
            questions, self.missing = self.missing, []

        def keep(result: Any, key: tuple[str, int]) -> None:
            self._known[key] = result

        lookups = []
        for key in questions:
            d = self._resolver.query(dns.Query(key[0], key[1], dns.IN))
            lookups.append(d.addBoth(keep, key))
        return DeferredList(lookups)

    def pyspf(self, name: str, qtype: str) -> list:
        """Answers in pyspf's format: [((name, qtype), value)]."""
        kind = QTYPES.get(qtype)
        if kind is None:
            return []
        found = []
        for answer in self._records(name, kind):
            rname = str(answer.name)
            if answer.type == dns.CNAME:
                found.append(((rname, "CNAME"), str(answer.payload.name)))
            elif answer.type != kind:
                continue
            elif kind == dns.A:
                found.append(((rname, qtype), answer.payload.dottedQuad()))
            elif kind == dns.AAAA:
                found.append(
                    (
                        (rname, qtype),
                        socket.inet_ntop(socket.AF_INET6, answer.payload.address),
                    )
                )
            elif kind == dns.MX:
                found.append(
                    (
                        (rname, qtype),
                        (answer.payload.preference, str(answer.payload.name)),
                    )
                )
            elif kind == dns.PTR:
                found.append(((rname, qtype), str(answer.payload.name)))
            else:
                found.append(((rname, qtype), list(answer.payload.data)))
        return found

    def txt(self, name: str) -> list[bytes]:
        return [
            b"".join(answer.payload.data)
            for answer in self._records(name, dns.TXT)
            if answer.type == dns.TXT
        ]


@dataclass
class AuthResults:
    spf: str = "none"
    spfDomain: str = ""
    dkim: str = "none"
    dkimDomains: list[str] = field(default_factory=list)
    dmarc: str = "none"
    dmarcPolicy: str = "none"
    fromDomain: str = ""
    authservId: str = ""  # our hostname, set by the SMTP session
    spfScope: str = "mailfrom"  # or "helo": the null sender's SPF identity

    def header(self) -> bytes:
        """
        One Authentication-Results header (RFC 8601). The domains come from
        the peer (MAIL FROM, HELO, From:, DKIM d=); only a plain domain name
        goes in (L{resultDomain}), else the property is left out, so nothing
        the sender wrote can add a result or end the field.
        """
        scope = {f"smtp_{self.spfScope}": resultDomain(self.spfDomain)}
        results: list[Any] = [SPFAuthenticationResult(result=self.spf, **scope)]
        for d in self.dkimDomains or [""]:
            results.append(
                DKIMAuthenticationResult(result=self.dkim, header_d=resultDomain(d))
            )
        results.append(
            DMARCAuthenticationResult(
                result=self.dmarc, header_from=resultDomain(self.fromDomain)
            )
        )
        # authres writes the field on one line; it is folded between results
        # here (RFC 5322 2.2.3) so each line stays short.
        lines = [f"Authentication-Results: {self.authservId}"]
        lines += [str(result) for result in results]
        return (";\r\n\t".join(lines) + "\r\n").encode()

    def asDict(self) -> dict[str, str]:
        return {"spf": self.spf, "dkim": self.dkim, "dmarc": self.dmarc}

    def scoring(self) -> list[tuple[str, float]]:
        rules = []
        if self.spf in ("fail", "softfail"):
            rules.append(
                ("SPF_" + self.spf.upper(), 2.0 if self.spf == "fail" else 1.0)
            )
        if self.dkim == "fail":
            rules.append(("DKIM_FAIL", 1.5))
        if self.dmarc == "fail":
            weight = 5.0 if self.dmarcPolicy in ("quarantine", "reject") else 2.0
            rules.append(("DMARC_FAIL", weight))
        return rules


# RFC 1035 2.3.1 labels (plus "_", which DNS names carry): every character a
# token (RFC 2045) may hold, none that quotes, comments or separates
_RESULT_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")


def resultDomain(domain: str) -> str | None:
    """
    C{domain} as a plain RFC 8601 C{value} token (lower case, an IDN as its
    A-labels), or None when it is not a domain name at all: an address
    literal, quotes, comments, blanks, C{;} or control characters.
    """
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    domain = domain.lower()
    if len(domain) > 253:
        return None
    labels = domain.split(".")
    if not all(_RESULT_LABEL.match(label) for label in labels):
        return None
    return domain


def spfDomain(mailFrom: str, helo: str) -> str:
    """The domain SPF checks: MAIL FROM's, else the HELO name (RFC 7208 2.3)."""
    return (mailFrom.rpartition("@")[2] if mailFrom else helo).lower()


def checkSPF(answers: DNSAnswers, ip: str, mailFrom: str, helo: str) -> str:
    """The SPF result; meaningless while C{answers.missing} is not empty."""
    sender = mailFrom or f"postmaster@{helo}"
    _current.lookup = answers.pyspf
    try:
        result, _ = spf.check2(i=ip, s=sender, h=helo, timeout=10)
    except Exception:
        result = "permerror"  # not DNS trouble (pyspf turns that into temperror)
    finally:
        _current.lookup = None
    return result


_SIGNED = re.compile(rb"(?im)^dkim-signature[ \t]*:")


@dataclass
class HeaderFacts:
    """What the checks need from the header, read once on a thread."""

    fromDomain: str = ""
    signatures: list[tuple[str, str]] = field(default_factory=list)  # (d=, s=)
    dkim: str = "none"  # permerror when the header cannot be verified at all


def headerFacts(message: bytes) -> HeaderFacts:
    """From: domain and DKIM-Signature d=/s= pairs; never raises for bad mail."""
    try:
        headers = dkim.rfc822_parse(message)[0]
    except Exception:
        # dkimpy refuses a header line without a colon (MessageFormatError):
        # a signature on such mail cannot verify, no signature is "none".
        facts = HeaderFacts(fromDomain=headerFromDomain(message))
        if b"\ndkim-signature:" in _headerBlock(message).lower():
            facts.dkim = "permerror"
        return facts
    # The From judged is the one readers see: the email package's (the API's),
    # which also ends a line at a bare CR, where dkimpy reads only CRLF, so
    # C{Subject: x<CR>From: ceo@bank.example} cannot hide a From from DMARC.
    facts = HeaderFacts(fromDomain=headerFromDomain(message))
    for name, value in headers:
        if name.lower() == b"dkim-signature":
            try:
                tags = dkim.util.parse_tag_value(value)
                d, s = tags[b"d"].decode("ascii"), tags[b"s"].decode("ascii")
            except Exception:
                facts.dkim = "permerror"
                continue
            facts.signatures.append((d.strip().lower(), s.strip().lower()))
    return facts


def _headerBlock(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return b"\n" + (message if end < 0 else message[:end])


def keyName(domain: str, selector: str) -> str:
    return f"{selector}._domainkey.{domain}"


def checkDKIM(message: bytes, keys: dict[str, Any]) -> tuple[str, list[str]]:
    """
    (pass|fail|temperror|permerror|none, the d= of every signature that
    verified), with the key records fetched beforehand: C{keys} maps
    C{selector._domainkey.domain} to the TXT record, None (no record) or
    C{"temperror"}. Never raises: damaged mail is stored with permerror or
    none, not refused.
    """

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        found = keys.get(name.decode("ascii", "replace").rstrip(".").lower())
        if found == "temperror":
            raise dkim.KeyFormatError("key lookup failed")
        return found

    try:
        verifier = dkim.DKIM(message)
    except Exception:  # dkimpy refuses a header it cannot split (RFC 8601 2.7.1)
        return ("permerror" if _SIGNED.search(message) else "none"), []
    count = len([h for h in verifier.headers if h[0].lower() == b"dkim-signature"])
    if not count:
        return "none", []
    passed = []
    for index in range(count):
        try:
            if verifier.verify(idx=index, dnsfunc=dnsfunc):
                passed.append(verifier.domain.decode().lower())
        except Exception:
            continue
    if passed:
        return "pass", passed
    if "temperror" in keys.values():
        return "temperror", []
    return "fail", []


@functools.lru_cache(maxsize=4096)
def organizational(domain: str) -> str:
    return _PSL.privatesuffix(domain.lower()) or domain.lower()


def _aligned(a: str, b: str, strict: bool) -> bool:
    return a == b if strict else organizational(a) == organizational(b)


def dmarcNames(domain: str) -> list[str]:
    """Where the DMARC record may be: the From: domain, then its org domain."""
    names = [f"_dmarc.{domain}"]
    if organizational(domain) != domain:
        names.append(f"_dmarc.{organizational(domain)}")
    return names


def dmarcRecord(answers: DNSAnswers, domain: str) -> dict[str, str] | None:
    for name in dmarcNames(domain):
        for text in answers.txt(name):
            decoded = text.decode("ascii", "replace")
            if decoded.replace(" ", "").lower().startswith("v=dmarc1"):
                tags = {}
                for part in decoded.split(";"):
                    key, _, value = part.strip().partition("=")
                    if key:
                        tags[key.strip().lower()] = value.strip().lower()
                tags["_subdomain"] = "1" if name != f"_dmarc.{domain}" else ""
                return tags
    return None


def checkDMARC(answers: DNSAnswers, results: AuthResults) -> None:
    """Sets C{results.dmarc}; the records must be in C{answers} already."""
    if not results.fromDomain:
        return
    try:
        record = dmarcRecord(answers, results.fromDomain)
    except (spf.TempError, NotYetResolved):
        results.dmarc = "temperror"
        return
    if record is None:
        return
    policy = record.get("p", "none")
    if record.get("_subdomain") and record.get("sp"):
        policy = record["sp"]
    spfAligned = results.spf == "pass" and _aligned(
        results.spfDomain, results.fromDomain, record.get("aspf") == "s"
    )
    dkimAligned = any(
        _aligned(d, results.fromDomain, record.get("adkim") == "s")
        for d in results.dkimDomains
    )
    results.dmarc = "pass" if spfAligned or dkimAligned else "fail"
    results.dmarcPolicy = policy


def headerFromDomain(message: bytes) -> str:
    try:
        headers = BytesHeaderParser().parsebytes(message)
        return _singleDomain([str(v) for v in headers.get_all("From", [])])
    except Exception:
        return ""  # an unreadable From: has no domain to align with


def _singleDomain(values: list[str]) -> str:
    """The one domain of the From: addresses (RFC 7489 6.6.1), else ""."""
    try:
        addresses = getaddresses(values)
    except Exception:
        return ""
    domains = {a.rpartition("@")[2].lower() for _, a in addresses if "@" in a}
    return domains.pop() if len(domains) == 1 else ""


def evaluate(
    message: bytes,
    answers: DNSAnswers,
    ip: str,
    mailFrom: str,
    helo: str,
    verify: bool = True,
) -> tuple[AuthResults, dict[str, Any] | None] | None:
    """
    The three checks from the answers already known: None when some were
    not (they are in C{answers.missing}: resolve them, run again). Else the
    results and, when signatures are left to verify (C{verify} false: this
    run is on the reactor), their keys for L{verifySignatures}.
    """
    end = message.find(b"\r\n\r\n")
    facts = headerFacts(message if end < 0 else message[: end + 4])
    results = AuthResults(
        spf=checkSPF(answers, ip, mailFrom, helo),
        spfDomain=spfDomain(mailFrom, helo),
        spfScope="mailfrom" if mailFrom else "helo",
        fromDomain=facts.fromDomain,
        dkim=facts.dkim,
    )
    keys = {}
    for domain, selector in facts.signatures:
        name = keyName(domain, selector)
        try:
            found = answers.txt(name)
        except NotYetResolved:
            continue
        except Exception:
            found = "temperror"
        keys[name] = found if isinstance(found, str) else (found or [None])[0]
    for name in dmarcNames(facts.fromDomain) if facts.fromDomain else ():
        try:
            answers.txt(name)  # asked now, all in parallel when not known
        except Exception:
            pass  # checkDMARC reads it again
    if answers.missing:
        return None
    if facts.signatures and not verify:
        return results, keys
    return verifySignatures(message, answers, results, keys), None


def verifySignatures(
    message: bytes, answers: DNSAnswers, results: AuthResults, keys: dict
) -> AuthResults:
    """DKIM (CPU: a thread's work for a large message), then DMARC."""
    if keys:
        results.dkim, results.dkimDomains = checkDKIM(message, keys)
    checkDMARC(answers, results)
    return results
