"""Delivery status notifications (RFC 3464) for the sender of a message:
a permanent failure, or a delay past C{queue.delay_notice_after}."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid


def _headersOf(raw: bytes, limit: int = 16384) -> str:
    end = raw.find(b"\r\n\r\n")
    head = raw[: end if end >= 0 else limit][:limit]
    return head.decode("utf-8", "replace")


def buildDSN(
    hostname: str,
    sender: str,
    original: bytes,
    recipients: list[tuple[str, str, str]],
    delayed: bool,
) -> bytes:
    """
    C{recipients}: (address, action "failed"/"delayed", last reply). The
    report carries the original's headers (RFC 3462 text/rfc822-headers).
    """
    message = EmailMessage()
    message["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    message["To"] = sender
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=hostname)
    message["Auto-Submitted"] = "auto-replied"
    message["Subject"] = (
        "Delivery delayed: still trying" if delayed else "Undelivered Mail Returned"
    )
    lines = [
        "This is the mail system at " + hostname + ".",
        "",
        (
            "Your message could not be delivered yet to the recipients below; "
            "delivery is still being tried. No action is needed."
            if delayed
            else "Your message could not be delivered to the recipients below."
        ),
        "",
    ]
    lines += [f"<{address}>: {reply}" for address, _, reply in recipients]
    message.set_content("\n".join(lines) + "\n")

    fields = [f"Reporting-MTA: dns; {hostname}", ""]
    for address, action, reply in recipients:
        words = reply.split(" ")
        code = words[0] if words[0].isdigit() else ""
        status = "4.0.0" if action == "delayed" or code[:1] == "4" else "5.0.0"
        enhanced = words[1] if len(words) > 1 else ""
        if enhanced.count(".") == 2 and enhanced[0] in "245":
            status = enhanced
        fields += [
            f"Final-Recipient: rfc822; {address}",
            f"Action: {action}",
            f"Status: {status}",
        ]
        if code:
            fields.append(f"Diagnostic-Code: smtp; {reply}")
        fields.append("")
    report = EmailMessage()
    report.set_content("\n".join(fields), subtype="delivery-status")
    del report["Content-Transfer-Encoding"]
    message.make_mixed()
    message.attach(report)
    headers = EmailMessage()
    headers.set_content(_headersOf(original), subtype="rfc822-headers")
    message.attach(headers)
    message.replace_header(
        "Content-Type", 'multipart/report; report-type="delivery-status"'
    )
    return message.as_bytes().replace(b"\n", b"\r\n")
