"""FETCH body sections (RFC 3501 6.4.5) as byte ranges of the stored message.

The email package re-serialises what it parsed (line endings, folding,
boundaries), so BODY[1.2] read from its parse differs from the bytes that
were sent. Here the MIME tree is located by scanning the stored bytes for
the header/body split and the boundary lines (RFC 2046 5.1.1: the line
break before a boundary line belongs to the boundary), and every section is
a slice of the original bytes. Only the header values that steer the
split (Content-Type and its boundary) go through the email package.

Damaged mail gets an answer all the same: a multipart without its boundary
is one opaque part, a missing closing boundary ends at the end of the data,
a part number that does not exist is C{None} (NIL on the wire).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

MAX_DEPTH = 64  # nesting beyond this is treated as opaque data


@dataclass
class Entity:
    """One MIME entity: C{raw[start:bodyStart]} is its header (with the empty
    line), C{raw[bodyStart:end]} its body. A multipart has C{children}; a
    message/rfc822 has C{encapsulated}, the message in its body."""

    raw: bytes
    start: int
    bodyStart: int
    end: int
    children: list[Entity] = field(default_factory=list)
    encapsulated: Entity | None = None

    @property
    def header(self) -> bytes:
        return self.raw[self.start : self.bodyStart]

    @property
    def body(self) -> bytes:
        return self.raw[self.bodyStart : self.end]


def headerEnd(raw: bytes, start: int, end: int) -> int:
    """Where the body of the entity at C{start} begins: after the first
    empty line, or C{end} when there is none. A part starting with an empty
    line has an empty header (RFC 2046 5.1.1)."""
    if raw.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if raw.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    found = [
        i + len(sep)
        for sep in (b"\r\n\r\n", b"\n\n")
        if 0 <= (i := raw.find(sep, start, end))
    ]
    return min(found) if found else end


def parseEntity(raw: bytes, start: int = 0, end: int | None = None, depth: int = 0):
    """The MIME tree of C{raw[start:end]} (the whole message by default)."""
    end = len(raw) if end is None else end
    bodyStart = headerEnd(raw, start, end)
    entity = Entity(raw, start, bodyStart, end)
    if depth >= MAX_DEPTH:
        return entity
    kind, boundary = _contentType(raw[start:bodyStart])
    if kind.startswith("multipart/") and boundary:
        for first, last in _partRanges(raw, bodyStart, end, boundary):
            entity.children.append(parseEntity(raw, first, last, depth + 1))
    elif kind == "message/rfc822":
        entity.encapsulated = parseEntity(raw, bodyStart, end, depth + 1)
    return entity


def topLevel(raw: bytes) -> Entity:
    """The message's header and body only: enough for BODY[], BODY[HEADER],
    BODY[TEXT] without scanning the parts."""
    return parseEntity(raw, depth=MAX_DEPTH)


def _contentType(header: bytes) -> tuple[str, str | None]:
    """(lower-cased type/subtype, boundary or None) of a MIME header."""
    parsed = BytesHeaderParser(policy=compat32).parsebytes(header)
    if parsed.get("content-type") is None:
        return "text/plain", None
    boundary = parsed.get_param("boundary")
    if isinstance(boundary, tuple):  # RFC 2231
        boundary = boundary[2]
    return parsed.get_content_type(), boundary or None


def _partRanges(raw: bytes, start: int, end: int, boundary: str):
    """(start, end) of each body part between the boundary lines."""
    marker = re.escape(boundary.encode("utf-8", "replace"))
    delimiter = re.compile(rb"^--" + marker + rb"(--)?[ \t]*\r?$", re.MULTILINE)
    ranges: list[tuple[int, int]] = []
    partStart: int | None = None
    for match in delimiter.finditer(raw, start, end):
        if partStart is not None:
            ranges.append(
                (partStart, max(partStart, _lineBreakBefore(raw, match.start())))
            )
        if match.group(1):  # the close delimiter
            return ranges
        partStart = min(end, match.end() + 1)  # past the line's LF
    if partStart is not None:  # no close delimiter: the last part runs to the end
        ranges.append((partStart, end))
    return ranges


def _lineBreakBefore(raw: bytes, position: int) -> int:
    """Where the line break ending at C{position} starts (CRLF or LF)."""
    if raw[position - 2 : position] == b"\r\n":
        return position - 2
    return position - 1 if raw[position - 1 : position] == b"\n" else position


def findPart(root: Entity, numbers: tuple[int, ...]) -> Entity | None:
    """The entity a section's part numbers (zero-based, as twisted parses
    them) name, or None. A non-multipart has one part, itself; past a
    message/rfc822 part, numbers count the parts of the message inside."""
    entity = root
    for depth, number in enumerate(numbers):
        if depth > 0 and entity.encapsulated is not None:
            entity = entity.encapsulated
        if entity.children:
            if not 0 <= number < len(entity.children):
                return None
            entity = entity.children[number]
        elif number != 0:
            return None
    return entity


def sectionBytes(root: Entity, section: Any) -> bytes | None:
    """The bytes of twisted's parsed BODY[...] C{section}, before any
    partial range; None when the part does not exist."""
    entity = findPart(root, tuple(section.part))
    if entity is None:
        return None
    if section.mime:
        return entity.header
    if section.part and not (section.header or section.text):
        return entity.body  # BODY[n]: the part's content, MIME header aside
    message = entity.encapsulated if section.part and entity.encapsulated else entity
    if section.header:
        if section.header.fields:
            return selectHeaders(
                message.header, section.header.fields, section.header.negate
            )
        return message.header
    if section.text:
        return message.body
    return root.raw


def headerFields(block: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-cased name, raw lines with their continuations) of a header."""
    fields: list[tuple[bytes, bytes]] = []
    for line in block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + line)
        else:
            fields.append((line.split(b":", 1)[0].strip().lower(), line))
    return fields


def selectHeaders(raw: bytes, names: Any, negate: bool) -> bytes:
    """BODY[HEADER.FIELDS (...)] (or .NOT) of the entity C{raw} starts
    with: the raw lines and an empty line."""
    wanted = {n.lower() if isinstance(n, bytes) else n.lower().encode() for n in names}
    header = raw[: headerEnd(raw, 0, len(raw))]
    kept = [text for name, text in headerFields(header) if (name in wanted) != negate]
    return b"".join(kept) + b"\r\n"
