"""The 90 % quota warning: one message into the account's inbox, from
postmaster@ its domain, sent again only after usage fell below 90 %."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from mailraven.envelope import Envelope, Recipient
from mailraven.interfaces import IMessageStore, IQuotaStore
from mailraven.spool import memorySpool

CHECK_INTERVAL = 10.0  # seconds between looks at the usage counters


def warningMessage(hostname: str, address: str, used: int, limit: int) -> bytes:
    """The warning's bytes (only our own text and the account's address)."""
    message = EmailMessage()
    message["From"] = f"postmaster@{address.rpartition('@')[2]}"
    message["To"] = address
    full = used >= limit
    message["Subject"] = f"Your mailbox is {'full' if full else 'almost full'}"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=hostname)
    message.set_content(
        f"Your mailbox uses {used} of its {limit} bytes"
        f" ({100 * used // limit} %).\n\n"
        + (
            "Mail sent to you is now held back by the sending servers until you"
            " delete some"
            if full
            else "When it is full, mail sent to you is held back by the sending"
            " servers until you delete some"
        )
        + " (emptying the trash is not needed: mail in the trash does not"
        " count).\n"
    )
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


class QuotaWarningService(TimerService):
    """Every C{interval} seconds, warns each account that reached 90 %."""

    log = Logger()

    def __init__(
        self,
        quotas: IQuotaStore,
        store: IMessageStore,
        defaultQuota: int,
        hostname: str,
        clock: Any,
        interval: float = CHECK_INTERVAL,
    ) -> None:
        super().__init__(interval, self.check)
        self.clock = clock
        self._quotas = quotas
        self._store = store
        self._default = defaultQuota
        self._hostname = hostname

    @inlineCallbacks
    def check(self):
        """Deliver the warnings now due; a failure is logged, not raised (the
        next run of the timer must still happen)."""
        try:
            due = yield self._quotas.claimWarnings(self._default)
            for userId, address, used, limit in due:
                raw = warningMessage(self._hostname, address, used, limit)
                envelope = Envelope(
                    mailFrom="", recipients=[Recipient(address, userId)]
                )
                yield self._store.deliver(envelope, memorySpool(raw))
                self.log.info(
                    "event=quota_warning account={account} used={used} limit={limit}",
                    account=address,
                    used=used,
                    limit=limit,
                )
        except Exception:
            self.log.failure("quota warning check failed")
