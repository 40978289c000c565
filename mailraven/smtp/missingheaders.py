"""The Date: and Message-ID: a submission server adds when the client left
them out (RFC 6409 8.2, 8.3), found while the message streams past."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*\Z")  # RFC 5322 3.6.8


class MissingHeaders:
    """
    Fed the message in whole lines; where the header section ends (the first
    empty line, or a line that is not a field), the missing fields are
    inserted. They are in the stored message, so DKIM signs them.
    """

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname
        self._seen: set[bytes] = set()
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """C{chunk}, with the missing fields inserted if the header ends in it."""
        if self.done:
            return chunk
        pos = 0
        while pos < len(chunk):
            end = chunk.find(b"\n", pos)
            end = len(chunk) if end < 0 else end + 1
            line = chunk[pos:end]
            if line[:1] not in (b" ", b"\t"):  # not a continuation line
                name, colon, _ = line.partition(b":")
                if not colon or not _FIELD_NAME.match(name):
                    return chunk[:pos] + self.fields() + chunk[pos:]
                self._seen.add(name.rstrip(b" \t").lower())
            pos = end
        return chunk

    def fields(self) -> bytes:
        """The fields still missing (once: afterwards C{done})."""
        self.done = True
        added = b""
        if b"date" not in self._seen:
            added += f"Date: {format_datetime(datetime.now(UTC))}\r\n".encode()
        if b"message-id" not in self._seen:
            added += f"Message-ID: {make_msgid(domain=self._hostname)}\r\n".encode()
        return added
