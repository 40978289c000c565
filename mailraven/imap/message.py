"""One message of a selected folder, as twisted.mail.imap4's FETCH sees it.

The bytes are the stored message exactly (what SMTP accepted, with the trace
headers we added): BODY[], BODY[HEADER] and BODY[TEXT] are slices of them,
so sizes and bytes match RFC822.SIZE. They are read only when a FETCH asks
for content (L{IMAPMessage.load}); FLAGS, UID, sizes and dates come from the
folder listing. Body sections (BODY[1.2], BODY[1.MIME]) are slices too
(L{mailraven.imap.sections}); ENVELOPE and BODYSTRUCTURE come from the
email package's parse.
"""

from __future__ import annotations

import email
import email.policy
from datetime import datetime
from email.utils import format_datetime
from io import BytesIO
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.mail.interfaces import IMessageIMAP, IMessageIMAPFile
from zope.interface import implementer

from mailraven.imap.sections import Entity, headerFields, parseEntity, selectHeaders

__all__ = ["IMAPMessage", "MessagePart", "headerFields", "selectHeaders", "splitHeader"]


def splitHeader(raw: bytes) -> int:
    """Where the body starts: after the first empty line (or the end)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(separator)
        if end >= 0:
            return end + len(separator)
    return len(raw)


class MessagePart:
    """A MIME part for twisted's BODYSTRUCTURE, ENVELOPE and BODY[n]."""

    def __init__(self, part: email.message.Message, raw: bytes | None = None):
        self._part = part
        self._raw = raw if raw is not None else part.as_bytes()

    @property
    def message(self) -> email.message.Message:
        """The email package's parse (BODYSTRUCTURE is built from it)."""
        return self._part

    def getHeaders(self, negate: bool, *names: Any) -> dict[str, str]:
        wanted = {n.decode() if isinstance(n, bytes) else n for n in names}
        wanted = {n.lower() for n in wanted}
        headers: dict[str, str] = {}
        for name, value in self._part.items():
            key = name.lower()
            if names and (key in wanted) == negate:
                continue
            if key not in headers:
                # twisted quotes these as ASCII strings
                headers[key] = str(value).encode("ascii", "replace").decode()
        return headers

    def getBodyFile(self) -> BytesIO:
        return BytesIO(self._raw[splitHeader(self._raw) :])

    def getSize(self) -> int:
        return len(self._raw)

    def isMultipart(self) -> bool:
        return self._part.is_multipart()

    def getSubPart(self, part: int) -> MessagePart:
        payload = self._part.get_payload()
        if not self._part.is_multipart() or not 0 <= part < len(payload):
            raise IndexError(part)
        return MessagePart(payload[part])


@implementer(IMessageIMAP, IMessageIMAPFile)
class IMAPMessage:
    """
    A row of the folder listing (C{uid}, C{flags}, C{size}, C{internalDate})
    and, once L{load} fired, the message bytes.
    """

    def __init__(
        self,
        uid: int,
        flags: list[str],
        size: int,
        internalDate: datetime,
        loader: Callable[[], Deferred],
        modseq: int = 0,
    ) -> None:
        self.uid = uid
        self.modseq = modseq
        self.flags = flags
        self.size = size
        self.internalDate = internalDate
        self._loader = loader
        self.raw: bytes | None = None
        self._parsed: MessagePart | None = None
        self._sections: Entity | None = None

    def load(self) -> Deferred:
        """Read the bytes (once); fires with this message."""
        if self.raw is not None:
            return succeed(self)

        def loaded(raw: bytes) -> IMAPMessage:
            self.raw = raw
            self.size = len(raw)
            return self

        return self._loader().addCallback(loaded)

    def adopt(self, parsed: Any) -> None:
        """Use a parse made elsewhere (L{mailraven.imap.parsing})."""
        self._parsed, self._sections = parsed.part, parsed.sections

    @property
    def parsed(self) -> bool:
        return self._parsed is not None and self._sections is not None

    @property
    def part(self) -> MessagePart:
        if self._parsed is None:
            assert self.raw is not None, "load() first"
            parsed = email.message_from_bytes(self.raw, policy=email.policy.compat32)
            self._parsed = MessagePart(parsed, self.raw)
        return self._parsed

    @property
    def sections(self) -> Entity:
        """The MIME tree as byte ranges of the stored bytes (FETCH BODY[...])."""
        if self._sections is None:
            assert self.raw is not None, "load() first"
            self._sections = parseEntity(self.raw)
        return self._sections

    # -- IMessage ---------------------------------------------------------

    def getUID(self) -> int:
        return self.uid

    def getFlags(self) -> list[str]:
        return list(self.flags)

    def getInternalDate(self) -> str:
        return format_datetime(self.internalDate)

    def getSize(self) -> int:
        return self.size

    def getHeaders(self, negate: bool, *names: Any) -> dict[str, str]:
        return self.part.getHeaders(negate, *names)

    def getBodyFile(self) -> BytesIO:
        assert self.raw is not None
        return BytesIO(self.raw[splitHeader(self.raw) :])

    def isMultipart(self) -> bool:
        return self.part.isMultipart()

    def getSubPart(self, part: int) -> MessagePart:
        return self.part.getSubPart(part)

    # -- IMessageFile: BODY[] and RFC822 stream the stored bytes --------------

    def open(self) -> BytesIO:
        assert self.raw is not None
        return BytesIO(self.raw)
