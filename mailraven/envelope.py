"""What the SMTP dialogue established about one message."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Recipient:
    """A local recipient that RCPT TO accepted: the address as given, the user.
    C{mailbox}/C{seen} set: this copy's own place (a local recipient of mail an
    account sends, beside the sender's copy in "sent"), else the envelope's."""

    address: str
    userId: int
    mailbox: str | None = None
    seen: bool | None = None
    # The subaddress of a plus-address (alice+news@ -> "news"), else "".
    tag: str = ""


@dataclass
class Envelope:
    mailFrom: str
    helo: str = ""
    peerIP: str = ""
    recipients: list[Recipient] = field(default_factory=list)
    body8bit: bool = False
    smtputf8: bool = False
    tls: bool = False
    receivedAt: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Where the recipients' copies go, and whether they start read (the
    # sender's own copy in "sent").
    mailbox: str = "inbox"
    seen: bool = False
    # Set for mail a user sends: the addresses the outbound queue delivers to;
    # queued in the same transaction that stores the message.
    outbound: list[str] | None = None
    dnsblScore: float = 0.0
    # The account that sent it through submission (AUTH), else None.
    authenticatedAs: str | None = None
    # SPF/DKIM/DMARC outcome (policy.emailauth.AuthResults) for MX mail.
    auth: Any = None
    # Our hostname for mail from an SMTP peer: Authentication-Results fields
    # under it are forged and removed on arrival, whether or not we add ours.
    authservId: str = ""
