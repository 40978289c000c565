"""ENVELOPE (RFC 3501 7.4.2) from the raw header values.

twisted's getEnvelope reads the email package's decoded text, which our
L{MessagePart.getHeaders} has to squeeze into ASCII ("?" for every other
character), and its address parser drops group syntax. Here the fields are
the header values as sent, unfolded: RFC 2047 encoded words stay encoded
(the client decodes them), raw UTF-8 (RFC 6532) stays UTF-8 and goes out as
a literal, since a quoted string is 7-bit only (RFC 3501 4.3). Groups are
the RFC 3501 markers: C{(NIL NIL "name" NIL)} ... C{(NIL NIL NIL NIL)}.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_SPACE = re.compile(rb"[ \t\r\n]+")


class Literal:
    """A string twisted's collapseNestedLists must send as a literal."""

    def __init__(self, value: bytes) -> None:
        self.value = value

    def read(self) -> bytes:
        return self.value


def imapString(value: bytes | None) -> Any:
    """C{value} for collapseNestedLists: None (NIL), bytes (quoted) or a
    L{Literal} when a quoted string cannot carry it (8-bit, CR, LF, NUL)."""
    if value is None:
        return None
    if re.search(rb"[\x00\r\n\x80-\xff]", value) or len(value) > 1000:
        return Literal(value)
    return value


def envelope(headers: Iterable[tuple[str, Any]]) -> list[Any]:
    """The ENVELOPE list of a header given as (name, value) pairs (the
    email package's compat32 items: 8-bit bytes as surrogate escapes)."""
    fields: dict[str, bytes] = {}
    for name, value in headers:
        fields.setdefault(name.lower(), _raw(value))
    from_ = fields.get("from")
    addresses = {}
    for key in ("from", "sender", "reply-to", "to", "cc", "bcc"):
        value = fields.get(key)
        parsed = addressList(value) if value is not None else None
        if parsed is None and key in ("sender", "reply-to"):
            parsed = addressList(from_) if from_ is not None else None
        addresses[key] = parsed
    return [
        imapString(fields.get("date")),
        imapString(fields.get("subject")),
        addresses["from"],
        addresses["sender"],
        addresses["reply-to"],
        addresses["to"],
        addresses["cc"],
        addresses["bcc"],
        imapString(fields.get("in-reply-to")),
        imapString(fields.get("message-id")),
    ]


def _raw(value: Any) -> bytes:
    """A header value's bytes as sent, unfolded (RFC 5322 2.2.3), trimmed."""
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
    else:  # an email.header.Header the parser made of undecodable bytes
        raw = str(value).encode("utf-8", "surrogateescape")
    return _FOLD.sub(b"", raw).strip(b" \t\r\n")


def addressList(value: bytes) -> list[list[Any]] | None:
    """RFC 3501 address structures of an address-list header; None (NIL)
    when it names no address and no group."""
    found: list[list[Any]] = []
    for kind, text in _topLevel(value):
        if kind == "group":
            found.append([None, None, imapString(_phrase(text)), None])
        elif kind == "end":
            found.append([None, None, None, None])
        else:
            address = _mailbox(text)
            if address is not None:
                found.append(address)
    return found or None


def _topLevel(value: bytes) -> list[tuple[str, bytes]]:
    """(kind, text) pieces: "mailbox" at each top-level comma, "group"
    (its name) at a top-level colon, "end" at a semicolon."""
    pieces: list[tuple[str, bytes]] = []
    current = bytearray()
    depth, quoted, angle, escaped, inGroup = 0, False, False, False, False
    for byte in value:
        char = bytes([byte])
        if escaped:
            escaped = False
        elif char == b"\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = char != b'"'
        elif char == b'"' and not depth:
            quoted = True
        elif char == b"(":
            depth += 1
        elif char == b")" and depth:
            depth -= 1
        elif depth:
            pass
        elif char == b"<":
            angle = True
        elif char == b">":
            angle = False
        elif not angle and char == b":" and not inGroup:
            pieces.append(("group", bytes(current)))
            current.clear()
            inGroup = True
            continue
        elif not angle and char == b";" and inGroup:
            pieces.append(("mailbox", bytes(current)))
            pieces.append(("end", b""))
            current.clear()
            inGroup = False
            continue
        elif not angle and char == b",":
            pieces.append(("mailbox", bytes(current)))
            current.clear()
            continue
        current += char
    pieces.append(("mailbox", bytes(current)))
    if inGroup:  # an unterminated group ends with the header
        pieces.append(("end", b""))
    return pieces


def _mailbox(text: bytes) -> list[Any] | None:
    """(name adl mailbox host) of one mailbox, or None when empty."""
    text = _withoutComments(text).strip()
    if not text:
        return None
    name: bytes | None = None
    route: bytes | None = None
    start, end = text.rfind(b"<"), text.rfind(b">")
    if 0 <= start < end:
        name = _phrase(text[:start]) or None
        spec = text[start + 1 : end].strip()
        if spec.startswith(b"@") and b":" in spec:  # obsolete route
            route, spec = spec.split(b":", 1)
    else:
        spec = text
    spec = _SPACE.sub(b"", spec)
    local, at, host = spec.rpartition(b"@")
    if not at:
        local, host = spec, b""
    if not (local or host or name):  # "<>": no address at all
        return None
    return [
        imapString(name),
        imapString(route),
        imapString(local or None),
        imapString(host or None),
    ]


def _withoutComments(text: bytes) -> bytes:
    """C{text} with its (comments) removed, quoted strings kept."""
    out = bytearray()
    depth, quoted, escaped = 0, False, False
    for byte in text:
        char = bytes([byte])
        if escaped:
            escaped = False
            if not depth:
                out += char
            continue
        if char == b"\\" and (quoted or depth):
            escaped = True
            if not depth:
                out += char
            continue
        if quoted:
            quoted = char != b'"'
        elif char == b'"' and not depth:
            quoted = True
        elif char == b"(":
            depth += 1
            continue
        elif char == b")" and depth:
            depth -= 1
            continue
        if not depth:
            out += char
    return bytes(out)


def _phrase(text: bytes) -> bytes:
    """A display name: quotes and their backslashes gone, spaces collapsed."""
    out = bytearray()
    quoted, escaped = False, False
    for byte in _withoutComments(text).strip():
        char = bytes([byte])
        if escaped:
            out += char
            escaped = False
        elif char == b"\\" and quoted:
            escaped = True
        elif char == b'"':
            quoted = not quoted
        else:
            out += char
    return _SPACE.sub(b" ", bytes(out)).strip()
