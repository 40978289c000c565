"""RFC 9208 QUOTA for L{MailRavenIMAPServer}: the account's storage use and
limit (docs/quotas.md), as the API's C{GET /api/v1/account} reports them.

One quota root, C{""}, covers every folder: the limit is the account's.
Storage is counted in units of 1024 octets (RFC 9208 5.1). Limits are set by
the administrator, never over IMAP.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.mail import imap4

from mailraven.imap.commands import _astring, decodeName, encodeName, safe

ROOT = b'""'


class QuotaCommands:
    def _quotaLine(self, usage: tuple[int, int | None]) -> bytes | None:
        used, limit = usage
        if not limit:
            return None
        return b"QUOTA %s (STORAGE %d %d)" % (
            ROOT,
            (used + 1023) // 1024,
            limit // 1024,
        )

    def do_GETQUOTAROOT(self, tag: bytes, name: bytes) -> None:
        d = maybeDeferred(self.account.quotaUsage)

        def answer(usage: tuple[int, int | None]) -> None:
            line = self._quotaLine(usage)
            mailbox = encodeName(decodeName(name))
            if line is None:  # unlimited: no quota root applies
                self.sendUntaggedResponse(b"QUOTAROOT " + mailbox)
            else:
                self.sendUntaggedResponse(b"QUOTAROOT %s %s" % (mailbox, ROOT))
                self.sendUntaggedResponse(line)
            self.sendPositiveResponse(tag, b"GETQUOTAROOT completed")

        d.addCallback(answer)
        d.addErrback(self._quotaFailed, tag)

    def do_GETQUOTA(self, tag: bytes, root: bytes) -> None:
        if root != b"":
            self.sendNegativeResponse(tag, b'[NONEXISTENT] The only quota root is ""')
            return
        d = maybeDeferred(self.account.quotaUsage)

        def answer(usage: tuple[int, int | None]) -> None:
            line = self._quotaLine(usage)
            if line is None:
                self.sendNegativeResponse(tag, b"[NONEXISTENT] No limit is set")
                return
            self.sendUntaggedResponse(line)
            self.sendPositiveResponse(tag, b"GETQUOTA completed")

        d.addCallback(answer)
        d.addErrback(self._quotaFailed, tag)

    def do_SETQUOTA(self, tag: bytes, rest: bytes) -> None:
        self.sendNegativeResponse(
            tag, b"[NOPERM] Limits are set by the administrator (mailraven user quota)"
        )

    def _quotaFailed(self, failure: Any, tag: bytes) -> None:
        self.log.failure("quota lookup failed", failure)
        self.sendNegativeResponse(tag, b"[UNAVAILABLE] Try again later")

    auth_GETQUOTAROOT = select_GETQUOTAROOT = (do_GETQUOTAROOT, _astring)
    auth_GETQUOTA = select_GETQUOTA = (do_GETQUOTA, _astring)
    auth_SETQUOTA = select_SETQUOTA = (do_SETQUOTA, safe(imap4.IMAP4Server.arg_line))
