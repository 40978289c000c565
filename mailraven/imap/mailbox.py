"""An account and its selected folder for IMAP, over the store's interfaces.

L{IMAPAccount} answers the folder commands from L{IFolderStore}; APPEND
stores through L{IMessageStore.deliver}, the path SMTP uses (file fsynced,
row committed before C{OK}). L{SelectedFolder} is a session's view of a
folder: the UIDs it has told the client about, in order, so sequence numbers
stay what the client was told (RFC 3501 2.3.1.2) until the session reports
a change (EXPUNGE, EXISTS) at NOOP or CHECK or after its own commands. No SQL
here: the stores do that.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.mail import imap4

from mailraven.changes import FOLDER_CHANGES
from mailraven.envelope import Envelope, Recipient
from mailraven.imap.message import IMAPMessage
from mailraven.store.quotas import effectiveLimit

DELIMITER = "/"
MODES = {1: "add", -1: "remove", 0: "replace"}


@dataclass(frozen=True)
class FolderInfo:
    """A folder as LIST shows it."""

    name: str
    attributes: list[str]
    subscribed: bool


def mailboxError(failure: Any) -> Any:
    """The store's refusals as the IMAP layer's (answered NO, not BAD)."""
    from mailraven.store.folders import FolderError, FolderExists, NoSuchFolder

    if failure.check(NoSuchFolder):
        raise imap4.NoSuchMailbox(str(failure.value))
    if failure.check(FolderExists):
        raise imap4.MailboxCollision(str(failure.value))
    if failure.check(FolderError):
        raise imap4.MailboxException(str(failure.value))
    return failure


def uidRanges(uids: Iterable[int]) -> list[tuple[int, int]]:
    """Ascending UIDs as the fewest (low, high) ranges: the store's UID set."""
    ranges: list[tuple[int, int]] = []
    for uid in sorted(uids):
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], uid)
        else:
            ranges.append((uid, uid))
    return ranges


def flagsOf(row: Any) -> list[str]:
    return sorted(row.flags) + sorted(row.keywords)


def parseInternalDate(text: str) -> datetime:
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


class IMAPAccount:
    """One logged-in account: C{userId}, C{email}."""

    def __init__(
        self,
        folders: Any,
        messages: Any,
        userId: int,
        email: str,
        discard: Any = None,
        quotas: Any = None,
        defaultQuota: int = 0,
        changes: Any = None,
        reserve: Callable[[int, int], Deferred] | None = None,
    ) -> None:
        self._changes = changes
        self._reserve = reserve
        self._discard = discard or (lambda spool: spool.discard())
        self._quotas = quotas
        self._defaultQuota = defaultQuota
        self.folders = folders
        self.messages = messages
        self.userId = userId
        self.email = email

    def _call(self, method: str, *args: Any) -> Deferred:
        d = getattr(self.folders, method)(self.userId, *args)
        kind = FOLDER_CHANGES.get(method)
        if self._changes is not None and kind is not None:
            d.addCallback(self._publish, kind)
        return d.addErrback(mailboxError)

    def _publish(self, result: Any, kind: str) -> Any:
        """Other sessions (in IDLE) and the API's event streams look at what
        changed."""
        self._changes.publish(self.userId, kind)
        return result

    # -- LIST, STATUS, CREATE, DELETE, RENAME, SUBSCRIBE ---------------------

    def listFolders(self) -> Deferred:
        return self._call("folders").addCallback(self._described)

    def _described(self, folders: list) -> list[FolderInfo]:
        names = {f.name for f in folders}
        infos = []
        for folder in folders:
            children = any(n.startswith(folder.name + DELIMITER) for n in names)
            attributes = ["\\HasChildren" if children else "\\HasNoChildren"]
            if folder.specialUse:
                attributes.append(folder.specialUse)
            infos.append(FolderInfo(folder.name, attributes, folder.subscribed))
        return infos

    def status(self, name: str) -> Deferred:
        def described(folder: Any) -> dict | None:
            if folder is None:
                return None
            return {
                "MESSAGES": folder.total,
                "RECENT": 0,
                "UIDNEXT": folder.uidnext,
                "UIDVALIDITY": folder.uidvalidity,
                "UNSEEN": folder.unseen,
                "HIGHESTMODSEQ": folder.highestModseq,
            }

        return self._call("folder", name).addCallback(described)

    def folderState(self, name: str) -> Deferred:
        """(HIGHESTMODSEQ, UIDNEXT) of the folder, or None: what IDLE polls."""
        d = self._call("folder", name)
        return d.addCallback(
            lambda f: None if f is None else (f.highestModseq, f.uidnext)
        )

    def create(self, name: str) -> Deferred:
        return self._call("create", name)

    def delete(self, name: str) -> Deferred:
        return self._call("delete", name)

    def rename(self, old: str, new: str) -> Deferred:
        return self._call("rename", old, new)

    def subscribe(self, name: str) -> Deferred:
        return self._call("subscribe", name, True)

    def unsubscribe(self, name: str) -> Deferred:
        return self._call("subscribe", name, False)

    # -- SELECT and APPEND -----------------------------------------------------

    @inlineCallbacks
    def select(self, name: str, writeable: bool):
        folder = yield self._call("folder", name)
        if folder is None:
            return None
        rows = yield self._call("messages", folder.name)
        return SelectedFolder(self, folder, rows, writeable)

    @inlineCallbacks
    def append(self, name: str, spool: Any, flags: list[str], date: Any):
        """Store C{spool} in the folder; the APPENDUID response code."""
        from mailraven.store.folders import FolderError, splitFlags

        try:
            folder = yield self._call("folder", name)
            if folder is None:
                raise imap4.NoSuchMailbox(name)
            try:
                system, keywords = splitFlags(flags)
            except FolderError as e:  # \Recent, \Foo: answered as STORE is
                raise imap4.MailboxException(str(e)) from None
            if keywords:
                # flags on no message: the store's keyword limits are met
                # before the message is stored, not after
                yield self._call("setFlags", folder.name, [], list(keywords), "add")
            yield self.checkQuota()
            yield self._reserveRoom(spool.size)
        except Exception:
            self._discard(spool)
            raise
        envelope = Envelope(
            mailFrom="",
            recipients=[
                Recipient(self.email, self.userId, folder.mailbox, "\\Seen" in system)
            ],
            receivedAt=date.astimezone(UTC) if date is not None else datetime.now(UTC),
            mailbox=folder.mailbox,
            seen="\\Seen" in system,
            # not scored, not queued: the owner's own copy (as "sent" is)
            outbound=[],
            authenticatedAs=self.email,
        )
        messageId = yield self.messages.deliver(envelope, spool)
        uid = yield self._appendedUid(folder, messageId)
        if uid is None:  # expunged already by another session
            return None
        extra = [f for f in flags if f.lower() != "\\seen"]
        if extra:
            yield self._call("setFlags", folder.name, [(uid, uid)], extra, "add")
        return b"[APPENDUID %d %d]" % (folder.uidvalidity, uid)

    @inlineCallbacks
    def _appendedUid(self, folder: Any, messageId: str):
        """
        The UID our entry got: the store's deliver names the message, not
        the entry, so it is the one new row since UIDNEXT, or (when mail
        arrived in the same moment) the new row whose entry holds
        C{messageId}.
        """
        rows = yield self._call("messages", folder.name, [(folder.uidnext, None)])
        rows = [r for r in rows if r.uid >= folder.uidnext]
        if len(rows) == 1:
            return rows[0].uid
        for row in rows:
            entry = yield self.messages.get(row.entryId, self.userId)
            if entry is not None and entry.get("file_id") == messageId:
                return row.uid
        return None

    @inlineCallbacks
    def _reserveRoom(self, size: int):
        """
        Counted with SMTP's final dot (RecipientResolver.reserve): stored
        usage alone lets twenty parallel APPENDs all pass the same check.
        """
        if self._reserve is None:
            return
        room = yield self._reserve(self.userId, size)
        if not room:
            raise imap4.MailboxException("[OVERQUOTA] Mailbox is full")

    @inlineCallbacks
    def quotaUsage(self):
        """(bytes used, limit or None) of the account (RFC 9208 GETQUOTA)."""
        if self._quotas is None:
            return (0, None)
        usage = yield self._quotas.quota(self.email)
        if usage is None:
            return (0, None)
        used, own = usage
        return used, effectiveLimit(own, self._defaultQuota)

    @inlineCallbacks
    def checkQuota(self):
        """RFC 9208: an account at or past its limit takes no more (as RCPT)."""
        if self._quotas is None:
            return
        usage = yield self._quotas.quota(self.email)
        if usage is None:
            return
        used, own = usage
        limit = self._defaultQuota if own is None else own
        if limit and used >= limit:
            raise imap4.MailboxException("[OVERQUOTA] Mailbox is full")


class SelectedFolder:
    """A session's view of the folder it selected (or examined)."""

    def __init__(
        self, account: IMAPAccount, folder: Any, rows: list, writeable: bool
    ) -> None:
        self.account = account
        self.name = folder.name
        self.uidValidity = folder.uidvalidity
        self.uidNext = folder.uidnext
        self.highestModseq = folder.highestModseq
        self.writeable = writeable
        self.uids: list[int] = [r.uid for r in rows]
        self.rows: dict[int, Any] = {r.uid: r for r in rows}
        if self.uids:
            self.uidNext = max(self.uidNext, self.uids[-1] + 1)

    @property
    def keywords(self) -> list[str]:
        return sorted({k for row in self.rows.values() for k in row.keywords})

    # -- what SELECT reports ----------------------------------------------------

    def getMessageCount(self) -> int:
        return len(self.uids)

    def firstUnseen(self) -> int | None:
        for seq, uid in enumerate(self.uids, 1):
            if "\\Seen" not in self.rows[uid].flags:
                return seq
        return None

    def isWriteable(self) -> bool:
        return self.writeable

    def getUID(self, seq: int) -> int:
        return self.uids[seq - 1]

    def getUIDValidity(self) -> int:
        return self.uidValidity

    # -- message sets ------------------------------------------------------------

    def resolve(self, messages: Any, uid: bool) -> list[tuple[int, int]]:
        """(sequence number, UID) of the messages C{messages} names, in order."""
        if not self.uids:
            return []
        messages.last = self.uids[-1] if uid else len(self.uids)
        found: set[int] = set()
        for low, high in messages.ranges:
            low, high = min(low, high), max(low, high)
            if uid:
                start = bisect.bisect_left(self.uids, low)
                end = bisect.bisect_right(self.uids, high)
                found.update(range(start + 1, end + 1))
            else:
                found.update(range(max(low, 1), min(high, len(self.uids)) + 1))
        return [(seq, self.uids[seq - 1]) for seq in sorted(found)]

    def message(self, seq: int, uid: int) -> IMAPMessage:
        row = self.rows[uid]
        account = self.account
        return IMAPMessage(
            uid,
            flagsOf(row),
            row.size,
            parseInternalDate(row.internalDate),
            lambda: account.messages.get(row.entryId, account.userId).addCallback(
                _rawOf
            ),
            row.modseq,
        )

    # -- the IMailbox calls of twisted's FETCH, STORE and EXPUNGE ---------------

    def fetch(self, messages: Any, uid: bool) -> list[tuple[int, IMAPMessage]]:
        return [(seq, self.message(seq, u)) for seq, u in self.resolve(messages, uid)]

    @inlineCallbacks
    def store(
        self,
        messages: Any,
        flags: list[str],
        mode: int,
        uid: bool,
        unchangedSince: int | None = None,
    ):
        """
        Change the flags; ({sequence number: flags} of the messages changed,
        [(sequence number, UID)] of those left alone because their MODSEQ is
        above C{unchangedSince}).
        """
        if not self.writeable:
            raise imap4.ReadOnlyMailbox("The folder is read-only (EXAMINE)")
        chosen = self.resolve(messages, uid)
        if not chosen:
            return {}, []
        uids = uidRanges(u for _, u in chosen)
        change = yield self.account._call(
            "setFlags", self.name, uids, flags, MODES[mode], unchangedSince
        )
        rows = yield self.account._call("messages", self.name, uids)
        for row in rows:
            if row.uid in self.rows:
                self.rows[row.uid] = row
                self.highestModseq = max(self.highestModseq, row.modseq)
        left = set(change.modified)
        return (
            {seq: flagsOf(self.rows[u]) for seq, u in chosen if u not in left},
            [(seq, u) for seq, u in chosen if u in left],
        )

    @inlineCallbacks
    def expunge(self, uids: list[tuple[int, int]] | None = None):
        """Remove what is flagged \\Deleted; the sequence numbers to report,
        highest first (each report leaves the lower numbers as they were)."""
        if not self.writeable:
            raise imap4.ReadOnlyMailbox("The folder is read-only (EXAMINE)")
        gone = yield self.account._call("expunge", self.name, uids)
        return self.forget(gone)

    def forget(self, gone: Iterable[int]) -> list[int]:
        """Drop the UIDs C{gone}; their sequence numbers, highest first."""
        seqs = []
        for uid in sorted(set(gone) & self.rows.keys(), reverse=True):
            index = bisect.bisect_left(self.uids, uid)
            seqs.append(index + 1)
            del self.uids[index]
            del self.rows[uid]
        return seqs

    @inlineCallbacks
    def refresh(self):
        """
        What changed in the store since the session looked: (sequence numbers
        expunged, highest first; the new message count or None; {sequence
        number: flags} of the messages whose flags changed).
        """
        rows = yield self.account._call("messages", self.name)
        current = {r.uid: r for r in rows}
        expunged = self.forget([u for u in self.uids if u not in current])
        changed = {}
        for row in rows:
            self.highestModseq = max(self.highestModseq, row.modseq)
        for seq, uid in enumerate(self.uids, 1):
            if current[uid].modseq != self.rows[uid].modseq:
                self.rows[uid] = current[uid]
                changed[seq] = flagsOf(current[uid])
        known = self.uids[-1] if self.uids else 0
        new = [r for r in rows if r.uid > known]
        for row in new:
            self.uids.append(row.uid)
            self.rows[row.uid] = row
            self.uidNext = max(self.uidNext, row.uid + 1)
        return expunged, (len(self.uids) if new else None), changed


def _rawOf(entry: Any) -> bytes:
    if entry is None:
        raise imap4.MailboxException("The message is gone")
    return entry["raw"]
