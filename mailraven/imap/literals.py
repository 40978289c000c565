"""Literals: APPEND's arguments and its message literal, which goes to a
L{Spool}, and LITERAL+ (RFC 7888) non-synchronizing literals.

twisted.mail.imap4 read an APPEND literal of any announced size into memory
or a temp file before anything looked at it; here the size is checked
against the limit before the client is told to send (RFC 3501 7.5), and
the bytes go to a spool (memory budget, then a temp file on a pool thread),
the way SMTP's DATA does.

A non-synchronizing literal C{{n+}} is sent without waiting for the
continuation. The server turns it into C{{n}} before twisted's parsers see
it (and sends no continuation); a command refused before its literal was
read (too large, bad syntax, unknown command) still has those octets on
the way, so they are read and thrown away (L{DiscardLiteral}) rather than
taken for commands.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.mail.imap4 import IllegalClientResponse

_FLAG = re.compile(rb'\\?[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_LITERAL = re.compile(rb"\{(\d{1,12})\}")
_LITERAL_AT_END = re.compile(rb"\{(\d{1,12})\}\Z")
_NON_SYNCHRONIZING = re.compile(rb"\{(\d{1,12})\+\}\Z")
_DATE_FORMAT = "%d-%b-%Y %H:%M:%S %z"


def parseFlags(text: bytes) -> list[str]:
    """The flags of a parenthesised list's inside (system flags and keywords)."""
    flags = []
    for flag in text.split():
        if not _FLAG.fullmatch(flag):
            raise IllegalClientResponse("Malformed flag")
        flags.append(flag.decode("ascii"))
    return flags


def parseDateTime(text: bytes) -> datetime:
    """RFC 3501 date-time (without its quotes), e.g. C{ 7-Feb-1994 21:52:25 -0800}."""
    try:
        return datetime.strptime(text.decode("ascii").strip(), _DATE_FORMAT)
    except (UnicodeDecodeError, ValueError):
        raise IllegalClientResponse("Malformed date-time") from None


def parseAppendArguments(rest: bytes) -> tuple[list[str], datetime | None, int]:
    """(flags, internal date or None, literal size) from C{[flags] [date] {n}}."""
    rest = rest.strip()
    flags: list[str] = []
    if rest.startswith(b"("):
        end = rest.find(b")")
        if end < 0:
            raise IllegalClientResponse("Mismatched parenthesis")
        flags = parseFlags(rest[1:end])
        rest = rest[end + 1 :].lstrip()
    date = None
    if rest.startswith(b'"'):
        end = rest.find(b'"', 1)
        if end < 0:
            raise IllegalClientResponse("Malformed date-time")
        date = parseDateTime(rest[1:end])
        rest = rest[end + 1 :].lstrip()
    match = _LITERAL.fullmatch(rest)
    if match is None:
        raise IllegalClientResponse("Expected the message as a literal {size}")
    size = int(match.group(1))
    if size == 0:
        raise IllegalClientResponse("Empty message")
    return flags, date, size


class AppendLiteral:
    """
    Receives C{size} octets into C{spool}; the protocol then hands over the
    rest of the command line, and C{received} fires with (spool, rest).
    """

    def __init__(self, size: int, spool: Any, received: Deferred) -> None:
        self.remaining = size
        self.spool = spool
        self._received = received

    def write(self, data: bytes) -> bytes | None:
        """Take what belongs to the literal; the bytes after it once complete."""
        take = data[: self.remaining]
        if take:
            self.spool.write(take)
            self.remaining -= len(take)
        if self.remaining:
            return None
        return data[len(take) :]

    def callback(self, line: bytes) -> None:
        self._received.callback((self.spool, line))


def nonSynchronizing(line: bytes) -> tuple[bytes, int | None]:
    """
    C{line} with a trailing C{{n+}} written as C{{n}}, and n (None when the
    line does not end in a non-synchronizing literal).
    """
    match = _NON_SYNCHRONIZING.search(line)
    if match is None:
        return line, None
    size = int(match.group(1))
    return line[: match.start()] + b"{%d}" % size, size


def lineWithLiterals(
    proto: Any, line: bytes, before: bytes = b""
) -> tuple[bytes, bytes] | Deferred:
    """
    The rest of a command line and the lines it continues on after its
    literals (SEARCH's strings), as one: each literal is read (within the
    string literal limit) and spliced back in as C{{n}} CRLF octets, the form
    twisted's parseNestedParens reads. The whole stays within the command
    line limit. Only the line's own text can announce a literal (C{before}
    holds what was read already, literal octets included).
    """
    whole = before + line
    if len(whole) > proto.MAX_LENGTH:
        raise IllegalClientResponse("Command line too long")
    match = _LITERAL_AT_END.search(line)
    if match is None:
        return whole, b""
    d = proto._stringLiteral(int(match.group(1)))
    d.addCallback(_splice, proto, whole)
    return d


def _splice(
    result: tuple[bytes, bytes], proto: Any, before: bytes
) -> tuple[bytes, bytes] | Deferred:
    literal, rest = result
    return lineWithLiterals(proto, rest, before + b"\r\n" + literal)


class DiscardLiteral:
    """The octets of a literal whose command was refused: counted, not kept."""

    def __init__(self, size: int) -> None:
        self.remaining = size

    def write(self, data: bytes) -> bytes | None:
        """Drop what belongs to the literal; the bytes after it once complete."""
        take = min(len(data), self.remaining)
        self.remaining -= take
        if self.remaining:
            return None
        return data[take:]

    def callback(self, line: bytes) -> None:
        """The rest of the refused command's line: the protocol drops it."""
