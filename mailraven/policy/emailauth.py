"""SPF, DKIM and DMARC for inbound mail, on kept libraries.

pyspf evaluates SPF, dkimpy verifies DKIM signatures, publicsuffixlist gives
the organizational domain for DMARC alignment; DMARC's own policy record is
simple enough to read here (RFC 7489 6.3). Their DNS goes through our
twisted.names resolver (C{dns.nameservers}): the checks run on a file thread
and each query is a blocking call into the reactor, so the reactor thread
never waits. The outcome becomes one C{Authentication-Results} header (RFC
8601), the C{spf_result}/C{dkim_result}/C{dmarc_result} fields of the API,
and inputs to spam scoring; a DMARC C{p=reject} failure is refused.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any, Callable

import dkim
import spf
from publicsuffixlist import PublicSuffixList
from twisted.internet.threads import blockingCallFromThread
from twisted.names import dns, error

_PSL = PublicSuffixList()
_current = threading.local()


def _pyspfLookup(name: str, qtype: str, tcpfallback: bool = True, timeout: int = 30):
    return _current.lookup(name, qtype)


# pyspf resolves through this module function; ours dispatches to the resolver
# of the check running on this thread (one server can have its own DNS).
spf.DNSLookup = _pyspfLookup

QTYPES = {"A": dns.A, "AAAA": dns.AAAA, "MX": dns.MX, "TXT": dns.TXT, "PTR": dns.PTR}


class BlockingDNS:
    """twisted.names queries usable from a thread (not the reactor's)."""

    def __init__(self, resolver: Callable[[], Any], reactor: Any) -> None:
        self._resolver = resolver  # made on first use (see outbound.mx)
        self._reactor = reactor

    def _query(self, name: str, qtype: int) -> list:
        query = dns.Query(name, qtype, dns.IN)
        try:
            answers, _, _ = blockingCallFromThread(
                self._reactor, self._resolver().query, query
            )
        except error.DNSNameError:
            return []
        except Exception as e:
            raise spf.TempError(f"DNS {name}: {e.__class__.__name__}") from None
        return answers

    def pyspf(self, name: str, qtype: str) -> list:
        """Answers in pyspf's format: [((name, qtype), value)]."""
        kind = QTYPES.get(qtype)
        if kind is None:
            return []
        found = []
        for answer in self._query(name, kind):
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
            for answer in self._query(name, dns.TXT)
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

    def header(self) -> bytes:
        """One Authentication-Results header (RFC 8601)."""
        parts = [f"spf={self.spf} smtp.mailfrom={self.spfDomain or 'unknown'}"]
        if self.dkimDomains:
            parts += [f"dkim={self.dkim} header.d={d}" for d in self.dkimDomains]
        else:
            parts.append(f"dkim={self.dkim}")
        parts.append(f"dmarc={self.dmarc} header.from={self.fromDomain or 'unknown'}")
        return (
            f"Authentication-Results: {self.authservId};\r\n\t"
            + ";\r\n\t".join(parts)
            + "\r\n"
        ).encode()

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


def checkSPF(lookup: BlockingDNS, ip: str, mailFrom: str, helo: str) -> tuple[str, str]:
    """(result, the domain checked): MAIL FROM's domain, else the HELO name."""
    domain = mailFrom.rpartition("@")[2] if mailFrom else helo
    sender = mailFrom or f"postmaster@{helo}"
    _current.lookup = lookup.pyspf
    try:
        result, _ = spf.check2(i=ip, s=sender, h=helo, timeout=10)
    except Exception:
        result = "temperror"
    finally:
        _current.lookup = None
    return result, domain.lower()


_SIGNED = re.compile(rb"(?im)^dkim-signature[ \t]*:")


def checkDKIM(message: bytes, lookup: BlockingDNS) -> tuple[str, list[str]]:
    """
    (pass|fail|permerror|none, the d= of every signature that verified).
    Never raises: damaged mail is stored with permerror or none, not refused.
    """

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        found = lookup.txt(name.decode("ascii", "replace").rstrip("."))
        return found[0] if found else None

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
    return ("pass" if passed else "fail"), passed


def organizational(domain: str) -> str:
    return _PSL.privatesuffix(domain.lower()) or domain.lower()


def _aligned(a: str, b: str, strict: bool) -> bool:
    return a == b if strict else organizational(a) == organizational(b)


def dmarcRecord(lookup: BlockingDNS, domain: str) -> dict[str, str] | None:
    for name in (domain, organizational(domain)):
        for text in lookup.txt(f"_dmarc.{name}"):
            decoded = text.decode("ascii", "replace")
            if decoded.replace(" ", "").lower().startswith("v=dmarc1"):
                tags = {}
                for part in decoded.split(";"):
                    key, _, value = part.strip().partition("=")
                    if key:
                        tags[key.strip().lower()] = value.strip().lower()
                tags["_subdomain"] = "1" if name != domain else ""
                return tags
    return None


def checkDMARC(lookup: BlockingDNS, results: AuthResults) -> None:
    if not results.fromDomain:
        return
    record = dmarcRecord(lookup, results.fromDomain)
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
    headers = BytesHeaderParser().parsebytes(message)
    addresses = getaddresses([str(v) for v in headers.get_all("From", [])])
    domains = {a.rpartition("@")[2].lower() for _, a in addresses if "@" in a}
    return domains.pop() if len(domains) == 1 else ""


def authenticate(
    lookup: BlockingDNS, message: bytes, ip: str, mailFrom: str, helo: str
) -> AuthResults:
    """All three checks for one message (blocking: run it on a thread)."""
    results = AuthResults(fromDomain=headerFromDomain(message))
    results.spf, results.spfDomain = checkSPF(lookup, ip, mailFrom, helo)
    results.dkim, results.dkimDomains = checkDKIM(message, lookup)
    checkDMARC(lookup, results)
    return results


Checker = Callable[[bytes, str, str, str], AuthResults]
