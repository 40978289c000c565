"""Authentication-Results fields that claim to be ours, removed on arrival.

RFC 8601 5: a receiver removes every C{Authentication-Results} field whose
authserv-id is its own before it adds its own; otherwise a sender writes
C{dkim=pass} under our name and a reader that trusts our authserv-id (a mail
client, a filter) believes it. Fields of other authserv-ids stay. Runs in the
store workers (no Twisted here).
"""

from __future__ import annotations

import re

_NAME = b"authentication-results"
# a field of that name; RFC 5322 4.5 (obsolete syntax) allows blanks before ":"
_FIELD = re.compile(rb"(?i)authentication-results[ \t]*:")
# lines as every mail parser splits them: CRLF, bare CR, bare LF
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
# octets of a value searched for its authserv-id, which comes first: bounds
# the work a field of nested comments can cost
ID_WINDOW = 1024


def headerEnd(raw: bytes) -> int:
    """
    An offset at or after the end of the header section of C{raw} (its first
    empty line, whatever its line ends), found without a Python loop: every
    empty line holds one of LF LF, CR CR, LF CR.
    """
    limit = len(raw)
    for pair in (b"\n\r", b"\n\n", b"\r\r"):
        found = raw.find(pair, 0, limit)
        if found >= 0:
            limit = found + 1
    return limit


def authservId(value: bytes) -> str:
    """
    The authserv-id of an Authentication-Results value (RFC 8601 2.2: the
    first token, before any version and the ";"), lower-cased; comments and
    folding around it are skipped.
    """
    text = value[:ID_WINDOW].decode("latin-1")
    previous = None
    while previous != text:  # nested comments, innermost first
        previous, text = text, _COMMENT.sub(" ", text)
    text = text.strip(" \t\r\n")
    if text.startswith('"'):
        return text[1:].partition('"')[0].lower()
    return re.split(r"[\s;]", text, maxsplit=1)[0].lower()


def withoutForgedResults(raw: bytes, ours: str) -> bytes:
    """
    C{raw} without the Authentication-Results fields (continuation lines
    included) whose authserv-id is C{ours}, case-insensitively; C{raw}
    itself when there are none (the common case costs two finds).
    """
    end = headerEnd(raw)
    if not ours or _NAME not in raw[:end].lower():
        return raw
    ours = ours.lower()
    kept, removing, position = [], False, 0
    for line in _LINE.finditer(raw, 0, end):
        text = line.group()
        if text in (b"\r\n", b"\r", b"\n"):
            break  # the empty line: the body follows
        if not text.startswith((b" ", b"\t")):
            removing = False
            field = _FIELD.match(text)
            if field is not None:
                removing = (
                    authservId(_unfolded(raw, line.end(), end, text)[field.end() :])
                    == ours
                )
        if removing:
            before = raw[position : line.start()]
            kept.append(_endedWithCRLF(before) if text.endswith(b"\r\n") else before)
            position = line.end()
    kept.append(raw[position:])
    return b"".join(kept)


def _endedWithCRLF(lines: bytes) -> bytes:
    """
    C{lines} (whole lines) with a bare CR or LF at its end made CRLF, when
    the field removed after them ended with CRLF: to a reader that ends lines
    only at CRLF (dkimpy, some clients) the bare end and the removed field
    were one line, and without the CRLF the line after the field (the next
    field, or the empty line before the body) would join that line too.
    """
    if lines.endswith(b"\r\n") or not lines:
        return lines
    return lines[:-1] + b"\r\n"


def _unfolded(raw: bytes, start: int, end: int, first: bytes) -> bytes:
    """
    The field that begins with line C{first}, its continuation lines joined
    (as far as they can hold the authserv-id).
    """
    parts, size = [first], len(first)
    for line in _LINE.finditer(raw, start, end):
        text = line.group()
        if size > ID_WINDOW or not text.startswith((b" ", b"\t")):
            break
        parts.append(text)
        size += len(text)
    return b"".join(parts)
