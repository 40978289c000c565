"""RFC 5321 paths, EHLO names and ESMTP parameters, parsed strictly.

twisted.mail's own regexes ignore ESMTP parameters and answer UTF-8 local parts
with 501; this parser handles both and keeps the relay-relevant parts
(source routes, quoted local parts, address literals) explicit. What it returns
goes into trace headers (Return-Path, Received): nothing that could end a
header line or start a new one gets through.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1, octets
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
MAX_PATH = 256  # RFC 5321 4.5.3.1.3
MAX_NUMBER = 20  # digits of an ESMTP number (SIZE): past 10**20 is no size

# UTF-8 in addresses (RFC 6531) but no C1 controls, no Unicode line or
# paragraph separator (str.splitlines() and some mail clients break lines
# there) and no bidi embedding or override (they reorder what a reader sees).
_UTF8 = r"\u00a0-\u2027\u202f-\U0010ffff"
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_DOT_ATOM_ASCII = re.compile(rf"[{_ATEXT}]+(\.[{_ATEXT}]+)*\Z")
_DOT_ATOM_UTF8 = re.compile(rf"[{_ATEXT}{_UTF8}]+(\.[{_ATEXT}{_UTF8}]+)*\Z")
_QUOTED = re.compile(rf'"([\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"\Z')
_LABEL_ASCII = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_LABEL_UTF8 = re.compile(
    rf"[A-Za-z0-9{_UTF8}]([A-Za-z0-9{_UTF8}-]*[A-Za-z0-9{_UTF8}])?\Z"
)
# EHLO/HELO names: RFC 5321's sub-domain, plus "_" (Windows host names carry
# it; it cannot end a header or a comment, so tolerating it costs nothing).
_HELO_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_DIGITS = re.compile(rf"[0-9]{{1,{MAX_NUMBER}}}\Z")
_ROUTE = re.compile(r"@[^,:]+(,@[^,:]+)*:")
_PARAM_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
# C1 controls and the Unicode line breaks pass the UTF-8 classes above; in a
# header line we write (Return-Path, Received) they would break it. Format
# characters (Unicode category Cf: bidi marks and isolates, zero-width
# space, soft hyphen, BOM, tag characters) are invisible: in an address they
# make one that reads like another; so do the other default-ignorable code
# points (variation selectors, the combining grapheme joiner, Hangul and
# Khmer fillers) and the Unicode spaces. ZWNJ and ZWJ (U+200C, U+200D)
# stay: words of several scripts need them (IDNA2008 allows them in context).
_UNSAFE_UTF8 = re.compile(
    r"[\x80-\xa0\xad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    r"\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200b\u200e\u200f"
    r"\u2028-\u202f\u205f-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0"
    r"\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    r"\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


class AddressError(ValueError):
    """Not a valid path; the message says why (it goes into the 501 reply)."""


@dataclass(frozen=True)
class Address:
    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}" if self.domain else self.local

    @property
    def isLiteral(self) -> bool:
        return self.domain.startswith("[")


NULL_PATH = Address("", "")


def splitPathAndParams(argument: str) -> tuple[str, list[str]]:
    """C{<path> KEY=VALUE ...} -> (path, params); the path must be in brackets."""
    argument = argument.strip()
    if not argument.startswith("<"):
        raise AddressError("path must be in angle brackets")
    end = _closingBracket(argument)
    return argument[1:end], argument[end + 1 :].split()


def _closingBracket(argument: str) -> int:
    inQuote = escaped = False
    for i, char in enumerate(argument):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            inQuote = not inQuote
        elif char == ">" and not inQuote:
            return i
    raise AddressError("missing closing angle bracket")


def parsePath(
    path: str,
    utf8: bool = False,
    allowNull: bool = False,
    allowPostmaster: bool = False,
) -> Address:
    """
    Parse the inside of C{<...>}. A source route (C{@a,@b:user@c}) is accepted
    and ignored, as RFC 5321 section 4.1.1.3 requires: the mailbox is what counts.
    C{allowPostmaster} (RCPT): the bare C{<Postmaster>} of RFC 5321 4.1.1.3 is
    an address without a domain.
    """
    if path == "":
        if allowNull:
            return NULL_PATH
        raise AddressError("an empty path is not allowed here")
    if len(path) > MAX_PATH:
        raise AddressError("path too long")
    route = _ROUTE.match(path)
    if route:
        path = path[route.end() :]
    if _UNSAFE_UTF8.search(path):
        raise AddressError("control or invisible character in address")
    local, at, domain = _splitMailbox(path)
    if not at:
        if allowPostmaster and local.lower() == "postmaster" and not route:
            return Address(local, "")
        raise AddressError("address must have a domain")
    return Address(_checkLocal(local, utf8), _checkDomain(domain, utf8))


def _splitMailbox(mailbox: str) -> tuple[str, str, str]:
    if mailbox.startswith('"'):
        end = _closingQuote(mailbox)
        if mailbox[end + 1 : end + 2] not in ("@", ""):
            raise AddressError("bad local part syntax")
        return mailbox[: end + 1], mailbox[end + 1 : end + 2], mailbox[end + 2 :]
    return mailbox.partition("@")


def _closingQuote(text: str) -> int:
    escaped = False
    for i, char in enumerate(text[1:], 1):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return i
    raise AddressError("unterminated quoted local part")


def _checkLocal(local: str, utf8: bool) -> str:
    if not local or len(local.encode()) > MAX_LOCAL:
        raise AddressError("bad local part length")
    atom = _DOT_ATOM_UTF8 if utf8 else _DOT_ATOM_ASCII
    if not (atom.match(local) or _QUOTED.match(local)):
        raise AddressError("bad local part syntax")
    if not utf8 and not local.isascii():
        raise AddressError("non-ASCII address without SMTPUTF8")
    return local


def _checkDomain(domain: str, utf8: bool) -> str:
    if domain.startswith("["):
        return addressLiteral(domain)
    return _checkName(domain, _LABEL_UTF8 if utf8 else _LABEL_ASCII).lower()


def _checkName(domain: str, label: re.Pattern[str]) -> str:
    """RFC 5321 Domain: labels of 1..63 characters, no empty one, no final dot."""
    if not domain or len(domain.encode()) > MAX_DOMAIN:
        raise AddressError("bad domain length")
    labels = domain.split(".")
    if not all(label.match(part) and len(part.encode()) <= 63 for part in labels):
        raise AddressError("bad domain syntax")
    return domain


def addressLiteral(literal: str) -> str:
    """
    C{[192.0.2.1]} or C{[IPv6:2001:db8::1]} (RFC 5321 4.1.3), as given. A
    General-address-literal needs a tag registered for it and none but
    C{IPv6} is, so any other tag is refused.
    """
    if not (literal.startswith("[") and literal.endswith("]")):
        raise AddressError("bad address literal")
    inner = literal[1:-1]
    if not inner.isascii() or "%" in inner:  # no IPv6 scope: it takes any text
        raise AddressError("bad address literal")
    try:
        if inner[:5].upper() == "IPV6:":
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        raise AddressError("bad address literal") from None
    return literal


def parseHeloName(argument: str) -> str:
    """
    The EHLO/HELO argument: a Domain or an address literal (RFC 5321 4.1.1.1),
    ASCII only, C{_} tolerated in labels. It goes into C{Received:} as it is.
    """
    if argument.startswith("["):
        return addressLiteral(argument)
    return _checkName(argument, _HELO_LABEL)


def parseNumber(value: str | None) -> int:
    """An ESMTP number (SIZE=): ASCII digits only, at most L{MAX_NUMBER}."""
    if value is None or not _DIGITS.match(value):
        raise AddressError("expected a number of ASCII digits")
    return int(value)


def parseParams(params: list[str]) -> dict[str, str | None]:
    """C{KEY=VALUE} / C{KEY} words -> {KEY (upper case): value or None}."""
    parsed: dict[str, str | None] = {}
    for word in params:
        key, eq, value = word.partition("=")
        if not _PARAM_KEY.match(key) or (eq and not value):
            raise AddressError(f"bad parameter {word!r}")
        parsed[key.upper()] = value if eq else None
    return parsed
