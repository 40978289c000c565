"""Best-effort metadata from a message's MIME structure.

Mail is stored whatever it looks like: a parse problem yields empty fields, never
a rejected or lost message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import policy
from email.feedparser import BytesFeedParser
from email.message import EmailMessage
from typing import Any

SNIPPET_LENGTH = 200
_SPACES = re.compile(r"\s+")
_TAGS = re.compile(r"<[^>]*>")


@dataclass
class Metadata:
    headerFrom: str = ""
    headerTo: str = ""
    subject: str = ""
    date: str = ""
    messageId: str = ""
    snippet: str = ""
    attachments: list[dict[str, Any]] = field(default_factory=list)


class MetadataParser:
    """Fed the raw bytes chunk by chunk (the same pass that writes the file)."""

    def __init__(self) -> None:
        self._parser = BytesFeedParser(policy=policy.default)

    def feed(self, chunk: bytes) -> None:
        self._parser.feed(chunk)

    def result(self) -> Metadata:
        try:
            message = self._parser.close()
        except Exception:
            return Metadata()
        return extract(message)


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
        return "" if value is None else _SPACES.sub(" ", str(value)).strip()
    except Exception:  # an undecodable header is left out, the mail is kept
        return ""


def extract(message: EmailMessage) -> Metadata:
    meta = Metadata(
        headerFrom=_header(message, "From"),
        headerTo=_header(message, "To"),
        subject=_header(message, "Subject"),
        date=_header(message, "Date"),
        messageId=_header(message, "Message-ID"),
    )
    try:
        meta.snippet = _snippet(message)
    except Exception:
        meta.snippet = ""
    try:
        meta.attachments = _attachments(message)
    except Exception:
        meta.attachments = []
    return meta


def _snippet(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    text = body.get_content()
    if not isinstance(text, str):
        return ""
    if body.get_content_subtype() == "html":
        text = _TAGS.sub(" ", text)
    return _SPACES.sub(" ", text).strip()[:SNIPPET_LENGTH]


def _attachments(message: EmailMessage) -> list[dict[str, Any]]:
    found = []
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() != "attachment" and not part.get_filename():
            continue
        payload = part.get_payload(decode=True)
        found.append(
            {
                "filename": part.get_filename() or "",
                "content_type": part.get_content_type(),
                "size": len(payload) if isinstance(payload, bytes) else 0,
            }
        )
    return found
