"""BODY and BODYSTRUCTURE (RFC 3501 7.4.2) from the email package's parse.

twisted.mail.imap4's own builder answers NIL for the type of mail without a
Content-Type (RFC 2045 5.2 makes that text/plain; charset=us-ascii), gives
the size of the whole message with its header as the body's, leaves the
quotes on parameter values and NIL for an absent transfer encoding (7BIT by
RFC 2045 6.1). Mail clients build their message views from this answer.
"""

from __future__ import annotations

import email.message
import email.utils
from typing import Any

from twisted.mail.imap4 import DontQuoteMe, collapseNestedLists

from mailraven.imap.envelope import envelope

Structure = list[Any]


def bodyStructure(part: email.message.Message, extended: bool) -> Structure:
    """The parenthesised list of C{part}, as nested Python lists for
    twisted's C{collapseNestedLists}: strings quoted, None as NIL."""
    main, sub = _type(part)
    if part.is_multipart() and main == "multipart":
        return _multipart(part, extended)
    body = _bodyBytes(part)
    fields: Structure = [
        main.upper(),
        sub.upper(),
        _params(part) or _defaultParams(main, sub),
        _ascii(part.get("content-id")),
        _ascii(part.get("content-description")),
        _ascii(part.get("content-transfer-encoding", "7BIT")).upper(),
        len(body),
    ]
    if (main, sub) == ("message", "rfc822"):
        inner = _innerMessage(part)
        fields += [
            envelope(inner.raw_items()),
            bodyStructure(inner, extended),
            _lines(body),
        ]
    elif main == "text":
        fields.append(_lines(body))
    if extended:
        fields += [None, _disposition(part), _ascii(part.get("content-language")), None]
    return fields


def _multipart(part: email.message.Message, extended: bool) -> Structure:
    """The parts' lists side by side with no space between (RFC 3501's
    body-type-mpart), then the subtype."""
    children = [bodyStructure(child, extended) for child in part.get_payload()]
    if not children:  # a multipart without parts: an empty text part stands in
        children = [
            ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 0, 0]
        ]
    joined = b"".join(b"(" + collapseNestedLists(child) + b")" for child in children)
    structure: Structure = [DontQuoteMe(joined)]
    structure.append(_ascii(part.get_content_subtype()).upper())
    if extended:
        structure += [_params(part), _disposition(part), None, None]
    return structure


def _type(part: email.message.Message) -> tuple[str, str]:
    """The declared type; text/plain when absent or malformed (RFC 2045
    5.2), also for a multipart the parser found no parts in (no boundary)."""
    value = part.get("content-type")
    if value is None or "/" not in str(value).split(";", 1)[0]:
        return "text", "plain"
    if part.get_content_maintype() == "multipart" and not part.is_multipart():
        return "text", "plain"
    return _ascii(part.get_content_maintype()), _ascii(part.get_content_subtype())


def _params(part: email.message.Message) -> Structure | None:
    """Content-Type parameters but the type itself, values unquoted."""
    params = part.get_params(unquote=True) or []
    flat: Structure = []
    for name, value in params[1:]:
        if isinstance(value, tuple):  # RFC 2231
            value = email.utils.collapse_rfc2231_value(value)
        flat += [_ascii(name).upper(), _ascii(value)]
    return flat or None


def _defaultParams(main: str, sub: str) -> Structure | None:
    return ["CHARSET", "US-ASCII"] if main == "text" else None


def _disposition(part: email.message.Message) -> Structure | None:
    value = part.get("content-disposition")
    if value is None:
        return None
    params = part.get_params(header="content-disposition", unquote=True) or []
    flat: Structure = []
    for name, item in params[1:]:
        if isinstance(item, tuple):
            item = email.utils.collapse_rfc2231_value(item)
        flat += [_ascii(name).upper(), _ascii(item)]
    kind = _ascii(str(value).split(";", 1)[0].strip()).upper()
    return [kind, flat or None]


def _bodyBytes(part: email.message.Message) -> bytes:
    """The part's body as it was sent (in its transfer encoding). The raw
    payload is read as the email package's own generator reads it: its
    get_payload() decodes 8-bit text by the declared charset."""
    payload = part._payload  # noqa: SLF001
    if isinstance(payload, list):  # message/rfc822: the inner message's bytes
        return b"".join(m.as_bytes() for m in payload)
    if isinstance(payload, bytes):
        return payload
    return str(payload).encode("ascii", "surrogateescape")


def _innerMessage(part: email.message.Message) -> email.message.Message:
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        return payload[0]
    return email.message_from_bytes(_bodyBytes(part))


def _lines(body: bytes) -> int:
    if not body:
        return 0
    return body.count(b"\n") + (0 if body.endswith(b"\n") else 1)


def _ascii(value: Any) -> Any:
    """Header text as twisted can write it (ASCII), or None."""
    if value is None:
        return None
    text = str(value)
    return text.encode("ascii", "replace").decode("ascii")
