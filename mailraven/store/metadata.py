"""Best-effort metadata from a message's MIME structure.

Mail is stored whatever it looks like: a parse problem yields empty fields, never
a rejected or lost message.

Headers (of the message and of each part) are parsed by the stdlib's email
package (compat32: the default policy's header registry cost 15x more per
message, measured); multipart bodies are split on their boundaries with bytes
operations instead of the feed parser's per-line loop, which was the single
largest cost of storing a message with a base64 attachment (bench/).
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

SNIPPET_LENGTH = 200
TEXT_SOURCE = 256 * 1024  # body bytes of a text part decoded for search
MAX_DEPTH = 10
MAX_HEADER_BYTES = 256 * 1024  # a "header" longer than this is parsed in part
# characters kept of a field every listing shows (a subject folded over
# thousands of lines made each page of the list megabytes)
FIELD_LENGTH = 1000
_CONTROLS = dict.fromkeys([*range(32), 127], " ")
_TAGS = re.compile(r"<[^>]*>")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_ESCAPED = re.compile("[\udc80-\udcff]")
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_FIELD = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")  # email.feedparser's
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(set(range(256)) - set(_BASE64))
# RFC 2047 encoded word: printable ASCII but "?" and space
_ENCODED_WORD = re.compile(r"=\?[!->@-~]+\?[BbQq]\?[!->@-~]*\?=")
_headerParser = BytesHeaderParser(policy=compat32)


@dataclass
class Metadata:
    headerFrom: str = ""
    headerTo: str = ""
    subject: str = ""
    date: str = ""
    messageId: str = ""
    snippet: str = ""
    text: str = ""  # the body as text (plain, else html without tags), capped
    attachments: list[dict[str, Any]] = field(default_factory=list)
    # the parsed top-level header block, for spam scoring (not stored)
    headers: Any = field(default=None, repr=False, compare=False)


def extractMetadata(raw: bytes) -> Metadata:
    """Metadata of C{raw}; never raises."""
    try:
        headers, body = _parsePart(raw)
    except Exception:
        return Metadata()
    meta = Metadata(
        headers=headers,
        headerFrom=_header(headers, "From")[:FIELD_LENGTH],
        headerTo=_header(headers, "To"),  # whole: every recipient is searched
        subject=_header(headers, "Subject")[:FIELD_LENGTH],
        date=_header(headers, "Date")[:FIELD_LENGTH],
        messageId=_header(headers, "Message-ID")[:FIELD_LENGTH],
    )
    texts: dict[str, str] = {}
    try:
        _walk(headers, body, meta, texts, 0)
    except Exception:
        pass  # keep what was found before the damage
    text = texts.get("plain") or _TAGS.sub(" ", texts.get("html", ""))
    # The search index tokenizes on its own; only the snippet is normalised
    # (a regex over a whole 64 KB body cost 0.4 ms per message, measured; a
    # regex over the snippet's 1,000 characters still 90 us, split() 6 us).
    meta.text = text
    meta.snippet = _collapse(text[: SNIPPET_LENGTH * 5])[:SNIPPET_LENGTH]
    return meta


def _parsePart(raw: bytes) -> tuple[Message, bytes]:
    if raw.startswith((b"\r\n", b"\n")):
        return _headerParser.parsebytes(b""), raw.split(b"\n", 1)[1]
    end = _HEADER_END.search(raw, 0, MAX_HEADER_BYTES)
    stop = MAX_HEADER_BYTES if end is None else end.start()
    headers = _headerParser.parsebytes(raw[:stop])
    if headers.get_payload():
        # A line that is no header field (no colon, a space in the name: a
        # message without header, or a broken one) ended the header there,
        # as in the parsers of the API and of mail clients; the parser kept
        # that line and the rest as its payload.
        headers.set_payload(None)
        return headers, raw[_bodyStart(raw[:stop]) :]
    return headers, b"" if end is None else raw[end.end() :]


def _bodyStart(block: bytes) -> int:
    """Where the first line of C{block} that is no header field begins."""
    for line in _LINE.finditer(block):
        if not _FIELD.match(line.group()):
            return line.start()
    return len(block)


def _header(message: Message, name: str) -> str:
    lowered = name.lower()
    # the value as it came (compat32 makes 8-bit values a Header of
    # U+FFFD): headerText decodes its octets
    value = next((v for k, v in message.raw_items() if k.lower() == lowered), None)
    if value is None:
        return ""
    text = headerText(value)
    if "=?" in text:  # RFC 2047 encoded words; plain text is kept as it is
        if text.isascii():
            text = _decodeWords(text)
        else:  # decode_header would print the 8-bit text as \uXXXX escapes
            text = _ENCODED_WORD.sub(lambda word: _decodeWords(word[0]), text)
    return _collapse(text)


def headerText(value: str) -> str:
    """
    A header value as the parser gave it (8-bit octets as surrogate escapes)
    as text: UTF-8 where the octets are UTF-8 (RFC 6532), else Latin-1, so
    raw 8-bit headers of old clients read as they were meant and nothing
    unencodable (a lone surrogate: no JSON, no SQLite text) reaches the API.
    """
    if not _ESCAPED.search(value):
        return value
    octets = value.encode("utf-8", "surrogateescape")
    try:
        return octets.decode("utf-8")
    except UnicodeDecodeError:
        return octets.decode("latin-1")


def _rawHeader(message: Message, name: str) -> str | None:
    """The first C{name} field as parsed (8-bit octets as surrogates), or None."""
    name = name.lower()
    for key, value in message.raw_items():
        if key.lower() == name:
            return value
    return None


def _collapse(text: str) -> str:
    """
    Runs of whitespace and control characters (a NUL, an escape sequence:
    nothing a client should render) as one space, none at either end.
    """
    return " ".join(text.translate(_CONTROLS).split())


def _walk(
    part: Message, body: bytes, meta: Metadata, texts: dict[str, str], depth: int
) -> None:
    ctype = part.get_content_type()
    if ctype.startswith("multipart/") and depth < MAX_DEPTH:
        boundary = part.get_boundary()
        if boundary:
            for child in _splitMultipart(body, boundary):
                childHeaders, childBody = _parsePart(child)
                _walk(childHeaders, childBody, meta, texts, depth + 1)
            return
    filename = attachmentName(part)
    if part.get_content_disposition() == "attachment" or filename:
        meta.attachments.append(
            {
                "filename": _decodeWords(filename or ""),
                "content_type": ctype,
                "size": _decodedSize(part, body),
            }
        )
    elif ctype in ("text/plain", "text/html"):
        kind = ctype.split("/")[1]
        if kind not in texts:
            texts[kind] = _decodeText(part, body[:TEXT_SOURCE])


def _splitMultipart(body: bytes, boundary: str) -> list[bytes]:
    """The parts between C{--boundary} lines (RFC 2046 5.1.1), without preamble."""
    delimiter = b"\n--" + boundary.encode("ascii", "surrogateescape")
    pieces: list[bytes] = []
    for piece in (b"\n" + body).split(delimiter)[1:]:
        line = piece.split(b"\n", 1)[0]
        if line.startswith(b"--") or not line.strip(b" \t\r"):
            pieces.append(piece)
        elif pieces:
            # "--b" began a longer line ("--b2" of a nested part): no delimiter
            pieces[-1] += delimiter + piece
    parts = []
    for piece in pieces:
        if piece.startswith(b"--"):
            break  # close delimiter: the epilogue follows
        newline = piece.find(b"\n")
        if newline < 0:
            continue
        part = piece[newline + 1 :]
        parts.append(part[:-1] if part.endswith(b"\r") else part)
    return parts


def _encoding(part: Message) -> str:
    return str(part.get("Content-Transfer-Encoding", "")).strip().lower()


def _decodedSize(part: Message, body: bytes) -> int:
    if _encoding(part) == "base64":
        data = body.translate(None, b" \t\r\n")
        return max(0, len(data) * 3 // 4 - (len(data) - len(data.rstrip(b"="))))
    return len(body)


def _decodeText(part: Message, body: bytes) -> str:
    encoding = _encoding(part)
    if encoding == "base64":
        # what is not of the alphabet is skipped, as RFC 2045 6.8 asks
        data = body.translate(None, _NOT_BASE64)  # "=" too: padded again here
        data = data[: len(data) - (len(data) % 4 == 1)]
        try:
            body = base64.b64decode(data + b"=" * (-len(data) % 4))
        except binascii.Error:
            body = b""
    elif encoding == "quoted-printable":
        body = quopri.decodestring(body)
    charset = part.get_content_charset() or "utf-8"
    try:
        return body.decode(charset, "replace")
    except (LookupError, UnicodeError):  # unknown, or a codec that ignores "replace"
        return body.decode("utf-8", "replace")


def attachmentName(part: Message) -> str | None:
    """
    The part's file name (RFC 2183 filename, else Content-Type's name), with
    raw 8-bit octets read as L{headerText} does (the email package makes
    them U+FFFD).
    """
    fields = [
        (name, value)
        for name, value in part.raw_items()
        if name.lower() in ("content-disposition", "content-type")
    ]
    if any(_ESCAPED.search(value) for _, value in fields):
        part = Message()
        for name, value in fields:
            part[name] = headerText(value)
    return part.get_filename()


def _decodeWords(text: str) -> str:
    text = headerText(text)
    try:
        return str(make_header(decode_header(text)))
    except Exception:
        return text
