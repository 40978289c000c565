"""
Fuzz target: RFC 5321 paths and ESMTP parameters (mailraven/smtp/addresses.py).

The input, as UTF-8, is what follows C{MAIL FROM:} or C{RCPT TO:}; its first
byte picks the parser's flags. Invariants: only L{AddressError} is raised;
an accepted address prints back to itself (C{parsePath(str(a)) == a}), keeps
to the RFC 5321 length limits and holds no control character or line break; an accepted
domain is RFC 5321 syntax (one trailing dot tolerated) and parameters print
back to themselves.

    python tests/fuzz/fuzz_addresses.py -max_total_time=60 tests/fuzz/corpus/addresses
"""

from __future__ import annotations

import re

if __name__ == "__main__":
    from harness import instrumented
else:
    from tests.fuzz.harness import uninstrumented as instrumented

with instrumented():
    from mailraven.smtp.addresses import (
        MAX_DOMAIN,
        MAX_LOCAL,
        NULL_PATH,
        Address,
        AddressError,
        parseParams,
        parsePath,
        splitPathAndParams,
    )

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, breaks
# RFC 5321 4.1.2 Domain, ASCII (RFC 6531 widens the labels to UTF-8)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")
_CHAR_UTF8 = r"A-Za-z0-9\x80-\U0010ffff"
_LABEL_UTF8 = rf"[{_CHAR_UTF8}](?:[{_CHAR_UTF8}-]*[{_CHAR_UTF8}])?"
_DOMAIN_UTF8 = re.compile(rf"{_LABEL_UTF8}(?:\.{_LABEL_UTF8})*\.?\Z")


def checkAddress(address: Address, given: str, flags: dict) -> None:
    assert isinstance(address, Address)
    if address == NULL_PATH:
        assert given == "", given
        return
    assert not _CONTROL.search(str(address)), f"control character in {address}"
    assert len(address.local.encode()) <= MAX_LOCAL, address
    assert len(address.domain) <= MAX_DOMAIN, address
    again = parsePath(str(address), **flags)
    assert again == address, f"{given!r} -> {address} -> {again}"
    if address.domain and not address.isLiteral:
        domain = given.rpartition("@")[2]
        grammar = _DOMAIN_UTF8 if flags["utf8"] else _DOMAIN
        assert grammar.match(domain), f"domain {domain!r} of {given!r} accepted"


def checkParams(words: list[str]) -> None:
    try:
        params = parseParams(words)
    except AddressError:
        return
    assert all(isinstance(k, str) and k == k.upper() for k in params), params
    printed = [
        key if value is None else f"{key}={value}" for key, value in params.items()
    ]
    assert parseParams(printed) == params, (words, params)


def check(data: bytes) -> None:
    if not data:
        return
    try:
        text = data[1:].decode("utf-8")
    except UnicodeDecodeError:
        return  # the server answers 501 before any of this runs
    flags = {
        "utf8": bool(data[0] & 1),
        "allowNull": bool(data[0] & 2),
        "allowPostmaster": bool(data[0] & 4),
    }
    try:
        path, words = splitPathAndParams(text)
    except AddressError:
        path, words = text, text.split()
    assert isinstance(path, str) and all(isinstance(w, str) for w in words)
    try:
        address = parsePath(path, **flags)
    except AddressError:
        pass
    else:
        checkAddress(address, path, flags)
    checkParams(words)


if __name__ == "__main__":
    from harness import fuzz

    fuzz(check)
