"""Delivery status notifications (RFC 3464) for the sender of a message:
a permanent failure, or a delay past C{queue.delay_notice_after}.

Written by hand rather than with the email package: every line of the
C{message/delivery-status} part is a field a bounce parser reads, so it must
go out exactly as written (7bit, unfolded by any encoder, no quoted-printable).
"""

from __future__ import annotations

import quopri
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, make_msgid

from mailraven.outbound.state import DeliveryReply

HEADERS_LIMIT = 16384  # bytes of the original's header block quoted back
FIELD_WIDTH = 76


@dataclass(frozen=True)
class RecipientReport:
    """One recipient of a DSN: what happened (C{action} "failed" or
    "delayed"), the last reply, and a note for people ("gave up after...")."""

    address: str
    action: str
    reply: DeliveryReply
    note: str = ""


def humanAge(seconds: float) -> str:
    """A duration as people say it: "5 days", "4 hours", "12 minutes"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size or (unit == "minute" and seconds >= size):
            count = round(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    count = max(0, round(seconds))
    return f"{count} second{'s' if count != 1 else ''}"


def buildDSN(
    hostname: str,
    sender: str,
    original: bytes,
    recipients: list[RecipientReport],
    arrivedAt: datetime,
    attemptedAt: datetime,
    retryUntil: datetime | None = None,
) -> bytes:
    """
    A C{multipart/report} (RFC 6522): a text for people, the
    C{message/delivery-status} fields, and the original's headers
    (C{text/rfc822-headers}). C{retryUntil}: when delayed recipients will be
    given up on.
    """
    delayed = all(r.action == "delayed" for r in recipients)
    boundary = f"=_mailraven_{secrets.token_hex(12)}"
    subject = (
        "Delivery delayed: still trying" if delayed else "Undelivered Mail Returned"
    )
    head = [
        "Return-Path: <>",
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {format_datetime(attemptedAt)}",
        f"Message-ID: {make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a delivery status notification (RFC 3464) in MIME format.",
        "",
    ]
    parts = [
        _textPart(hostname, recipients, delayed),
        _statusPart(hostname, recipients, arrivedAt, attemptedAt, retryUntil),
        _headersPart(original),
    ]
    out = "\r\n".join(head).encode()
    for part in parts:
        out += f"\r\n--{boundary}\r\n".encode() + part
    return out + f"\r\n--{boundary}--\r\n".encode()


def _textPart(hostname: str, recipients: list[RecipientReport], delayed: bool) -> bytes:
    lines = [f"This is the mail system at {hostname}.", ""]
    if delayed:
        lines += [
            "Your message could not be delivered yet to the recipients below.",
            "Delivery is still being tried; no action is needed.",
        ]
    else:
        lines.append("Your message could not be delivered to the recipients below.")
    lines.append("")
    for report in recipients:
        reply = report.reply
        said = f"host {reply.remoteMTA} said: " if reply.remoteMTA else ""
        note = f" ({report.note})" if report.note else ""
        lines.append(f"<{report.address}>: {said}{reply}{note}")
    text = "\n".join(lines) + "\n"
    if text.isascii():
        body = text.encode().replace(b"\n", b"\r\n")
        return b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body
    body = quopri.encodestring(text.encode())
    return (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + body.replace(b"\n", b"\r\n")
    )


def _statusPart(
    hostname: str,
    recipients: list[RecipientReport],
    arrivedAt: datetime,
    attemptedAt: datetime,
    retryUntil: datetime | None,
) -> bytes:
    """RFC 3464 section 2: per-message fields, then a block per recipient."""
    blocks = [
        [
            f"Reporting-MTA: dns; {hostname}",
            f"Arrival-Date: {format_datetime(arrivedAt)}",
        ]
    ]
    for report in recipients:
        reply = report.reply
        block = [
            f"Final-Recipient: {_addressField(report.address)}",
            f"Action: {report.action}",
            f"Status: {reply.status}",
        ]
        if reply.remoteMTA:
            block.append(f"Remote-MTA: dns; {_ascii(reply.remoteMTA)}")
            block.append(_folded(f"Diagnostic-Code: smtp; {_ascii(str(reply))}"))
        else:
            # Our own verdict (DNS, no connection, policy): not an SMTP reply
            block.append(
                _folded(f"Diagnostic-Code: x-mailraven; {_ascii(reply.detail)}")
            )
        block.append(f"Last-Attempt-Date: {format_datetime(attemptedAt)}")
        if report.action == "delayed" and retryUntil is not None:
            block.append(f"Will-Retry-Until: {format_datetime(retryUntil)}")
        blocks.append(block)
    body = "\r\n\r\n".join("\r\n".join(block) for block in blocks) + "\r\n"
    return b"Content-Type: message/delivery-status\r\n\r\n" + body.encode("ascii")


def _headersPart(original: bytes) -> bytes:
    end = original.find(b"\r\n\r\n")
    head = original[: end + 2 if end >= 0 else HEADERS_LIMIT][:HEADERS_LIMIT]
    if not head.endswith(b"\r\n"):
        head = head[: head.rfind(b"\r\n") + 2]
    encoding = b"7bit" if head.isascii() else b"8bit"
    return (
        b"Content-Type: text/rfc822-headers\r\n"
        b"Content-Transfer-Encoding: " + encoding + b"\r\n\r\n" + head
    )


def _addressField(address: str) -> str:
    """C{rfc822; a@b}, or for a non-ASCII address RFC 6533's C{utf-8} type
    with the characters as C{\\x{HEX}} (the part stays 7bit)."""
    if address.isascii():
        return f"rfc822; {_ascii(address)}"
    encoded = "".join(
        c if 0x21 <= ord(c) <= 0x7E and c not in "\\+=" else f"\\x{{{ord(c):X}}}"
        for c in address
    )
    return f"utf-8; {encoded}"


def _ascii(text: str) -> str:
    """Printable ASCII only: a remote server's words go into a header field."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _folded(field: str) -> str:
    """Fold a long field at spaces (RFC 5322 2.2.3), never inside a word."""
    lines, line = [], ""
    for word in field.split():
        if line and len(line) + 1 + len(word) > FIELD_WIDTH:
            lines.append(line)
            line = " " + word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n".join(lines)
