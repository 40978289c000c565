"""The folder commands, asking the account (L{mailraven.imap.mailbox}).

twisted.mail.imap4 called C{IAccount.create}/C{delete}/C{rename}/
C{subscribe}/C{isSubscribed} synchronously (a Deferred counted as success),
decoded names with a function that logged a traceback for every bad one,
and sent neither UIDNEXT nor PERMANENTFLAGS on SELECT. Here every account
call may return a Deferred, bad names get C{BAD}, and SELECT says what RFC
3501 6.3.1 asks.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.mail import imap4
from twisted.python.failure import Failure

from mailraven.imap.wildcards import FolderPattern


def safe(parser: Any) -> Any:
    """
    One of twisted's argument parsers, failing only with
    L{IllegalClientResponse} (answered BAD): they raised AttributeError on a
    missing argument and bare Exceptions on a malformed FETCH, which were
    logged as server errors.
    """

    def parse(self: Any, line: bytes | None) -> Any:
        if line is None:
            raise imap4.IllegalClientResponse("Missing argument")
        try:
            return parser(self, line)
        except (imap4.IllegalClientResponse, imap4.IllegalMailboxEncoding):
            raise
        except Exception as e:
            raise imap4.IllegalClientResponse(str(e)[:100]) from None

    return parse


_astring = safe(imap4.IMAP4Server.arg_astring)
_finalastring = safe(imap4.IMAP4Server.arg_finalastring)
_plist = safe(imap4.IMAP4Server.arg_plist)


def _optionalList(self: Any, line: bytes) -> tuple[list | None, bytes]:
    """SELECT's optional parameter list (RFC 4466), e.g. C{(CONDSTORE)}."""
    if not line or not line.strip():
        return None, b""
    return imap4.IMAP4Server.arg_plist(self, line.strip())


_optPlist = safe(_optionalList)

SYSTEM_FLAGS = (b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Seen", b"\\Draft")
STATUS_ITEMS = (
    b"MESSAGES",
    b"RECENT",
    b"UIDNEXT",
    b"UIDVALIDITY",
    b"UNSEEN",
    b"HIGHESTMODSEQ",
)


def decodeName(raw: bytes | str) -> str:
    """A mailbox name from the wire (modified UTF-7, RFC 3501 5.1.3)."""
    if isinstance(raw, str):
        return raw
    try:
        name = raw.decode("imap4-utf-7")
    except Exception:
        raise imap4.IllegalMailboxEncoding(raw) from None
    if name.upper() == "INBOX":
        return "INBOX"  # case-insensitive, RFC 3501 5.1
    return name


def encodeName(name: str) -> bytes:
    """A mailbox name for a response: modified UTF-7, quoted if need be."""
    return imap4._prepareMailboxName(name)


def folderMatcher(reference: str, pattern: str) -> FolderPattern:
    """The match for LIST's reference and pattern (RFC 3501 6.3.8)."""
    if reference and not reference.endswith("/") and pattern:
        reference += "/"
    return FolderPattern(reference + pattern)


class FolderCommands:
    """LIST, LSUB, STATUS, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, SELECT,
    EXAMINE, CLOSE and UNSELECT for L{MailRavenIMAPServer}."""

    # -- folder commands answering OK or NO ------------------------------------

    def _folderCall(self, tag: bytes, done: bytes, method: str, *raw: bytes) -> None:
        names = [decodeName(name) for name in raw]
        d = maybeDeferred(getattr(self.account, method), *names)
        d.addCallbacks(
            lambda _: self.sendPositiveResponse(tag, done),
            self._folderFailed,
            errbackArgs=(tag,),
        )

    def _folderFailed(self, failure: Failure, tag: bytes) -> None:
        if failure.check(imap4.MailboxException):
            words = str(failure.value).encode("ascii", "replace")[:200]
            self.sendNegativeResponse(tag, words)
            return
        self.log.failure("imap folder command failed", failure)
        self.sendNegativeResponse(tag, b"[SERVERBUG] Internal server error")

    def do_CREATE(self, tag: bytes, name: bytes) -> None:
        self._folderCall(tag, b"CREATE completed", "create", name)

    def do_DELETE(self, tag: bytes, name: bytes) -> None:
        self._folderCall(tag, b"DELETE completed", "delete", name)

    def do_RENAME(self, tag: bytes, old: bytes, new: bytes) -> None:
        self._folderCall(tag, b"RENAME completed", "rename", old, new)

    def do_SUBSCRIBE(self, tag: bytes, name: bytes) -> None:
        self._folderCall(tag, b"SUBSCRIBE completed", "subscribe", name)

    def do_UNSUBSCRIBE(self, tag: bytes, name: bytes) -> None:
        self._folderCall(tag, b"UNSUBSCRIBE completed", "unsubscribe", name)

    auth_CREATE = select_CREATE = (do_CREATE, _finalastring)
    auth_DELETE = select_DELETE = (do_DELETE, _finalastring)
    auth_RENAME = select_RENAME = (do_RENAME, _astring, _finalastring)
    auth_SUBSCRIBE = select_SUBSCRIBE = (do_SUBSCRIBE, _finalastring)
    auth_UNSUBSCRIBE = select_UNSUBSCRIBE = (do_UNSUBSCRIBE, _finalastring)

    # -- LIST and LSUB ----------------------------------------------------------

    def _listWork(
        self, tag: bytes, reference: bytes, pattern: bytes, subscribed: int, cmd: bytes
    ) -> None:
        ref, pat = decodeName(reference), decodeName(pattern)
        if not pat and cmd == b"LIST":
            # RFC 3501 6.3.8: the hierarchy delimiter and root
            self.sendUntaggedResponse(b'LIST (\\Noselect) "/" ""')
            self.sendPositiveResponse(tag, b"LIST completed")
            return
        d = maybeDeferred(self.account.listFolders)
        d.addCallback(self._listed, tag, folderMatcher(ref, pat), subscribed, cmd)
        d.addErrback(self._folderFailed, tag)

    def _listed(
        self, folders: list, tag: bytes, matcher: Any, subscribed: int, cmd: bytes
    ) -> None:
        for folder in folders:
            if subscribed and not folder.subscribed:
                continue
            if not matcher.fullmatch(folder.name):
                continue
            attributes = b" ".join(a.encode("ascii") for a in folder.attributes)
            self.sendUntaggedResponse(
                b'%s (%s) "/" %s' % (cmd, attributes, encodeName(folder.name))
            )
        self.sendPositiveResponse(tag, cmd + b" completed")

    auth_LIST = select_LIST = (_listWork, _astring, _astring, 0, b"LIST")
    auth_LSUB = select_LSUB = (_listWork, _astring, _astring, 1, b"LSUB")

    # -- STATUS -----------------------------------------------------------------

    def do_STATUS(self, tag: bytes, name: bytes, items: list) -> None:
        wanted = [item.upper() for item in items if isinstance(item, bytes)]
        if not wanted or any(item not in STATUS_ITEMS for item in wanted):
            self.sendBadResponse(tag, b"Unknown STATUS item")
            return
        folder = decodeName(name)
        d = maybeDeferred(self.account.status, folder)
        d.addCallback(self._statusReady, tag, folder, wanted)
        d.addErrback(self._folderFailed, tag)

    def _statusReady(
        self, status: dict | None, tag: bytes, folder: str, wanted: list[bytes]
    ) -> None:
        if status is None:
            self.sendNegativeResponse(tag, b"No such mailbox")
            return
        values = b" ".join(b"%s %d" % (item, status[item.decode()]) for item in wanted)
        self.sendUntaggedResponse(b"STATUS %s (%s)" % (encodeName(folder), values))
        self.sendPositiveResponse(tag, b"STATUS completed")

    auth_STATUS = select_STATUS = (do_STATUS, _astring, _plist)

    # -- SELECT, EXAMINE, CLOSE, UNSELECT --------------------------------------

    def _selectWork(
        self, tag: bytes, name: bytes, params: list | None, rw: int, cmd: bytes
    ) -> None:
        if params is not None:
            if [p.upper() if isinstance(p, bytes) else p for p in params] != [
                b"CONDSTORE"
            ]:
                self.sendBadResponse(tag, b"Unknown SELECT parameter")
                return
            self.condstore = True  # RFC 7162 3.1.8
        self._leaveFolder()
        d = maybeDeferred(self.account.select, decodeName(name), bool(rw))
        d.addCallback(self._selected, tag, cmd)
        d.addErrback(self._folderFailed, tag)

    def _selected(self, mbox: Any, tag: bytes, cmd: bytes) -> None:
        if mbox is None:
            self.sendNegativeResponse(tag, b"No such mailbox")
            return
        flags = b" ".join(SYSTEM_FLAGS + tuple(k.encode() for k in mbox.keywords))
        self.sendUntaggedResponse(b"FLAGS (%s)" % flags)
        self.sendUntaggedResponse(b"%d EXISTS" % mbox.getMessageCount())
        self.sendUntaggedResponse(b"0 RECENT")
        unseen = mbox.firstUnseen()
        if unseen is not None:
            self.sendPositiveResponse(None, b"[UNSEEN %d] First unseen" % unseen)
        permanent = b"(" + flags + b" \\*)" if mbox.isWriteable() else b"()"
        self.sendPositiveResponse(None, b"[PERMANENTFLAGS %s] Limited" % permanent)
        self.sendPositiveResponse(
            None, b"[UIDVALIDITY %d] UIDs valid" % mbox.uidValidity
        )
        self.sendPositiveResponse(
            None, b"[UIDNEXT %d] Predicted next UID" % mbox.uidNext
        )
        self.sendPositiveResponse(
            None, b"[HIGHESTMODSEQ %d] Highest" % mbox.highestModseq
        )
        mode = b"READ-WRITE" if mbox.isWriteable() else b"READ-ONLY"
        self.mbox = mbox
        self.state = "select"
        self.sendPositiveResponse(tag, b"[%s] %s completed" % (mode, cmd))

    auth_SELECT = select_SELECT = (_selectWork, _astring, _optPlist, 1, b"SELECT")
    auth_EXAMINE = select_EXAMINE = (_selectWork, _astring, _optPlist, 0, b"EXAMINE")

    def _leaveFolder(self) -> None:
        self.mbox = None
        if self.state == "select":
            self.state = "auth"

    def do_CLOSE(self, tag: bytes) -> None:
        """Expunge silently (RFC 3501 6.4.2), then leave the folder."""
        mbox = self.mbox
        self._leaveFolder()
        if not mbox.isWriteable():
            self.sendPositiveResponse(tag, b"CLOSE completed")
            return
        d = maybeDeferred(mbox.expunge)
        d.addCallbacks(
            lambda _: self.sendPositiveResponse(tag, b"CLOSE completed"),
            self._folderFailed,
            errbackArgs=(tag,),
        )

    def do_UNSELECT(self, tag: bytes) -> None:
        """RFC 3691: leave the folder without expunging."""
        self._leaveFolder()
        self.sendPositiveResponse(tag, b"UNSELECT completed")

    select_CLOSE = (do_CLOSE,)
    select_UNSELECT = (do_UNSELECT,)
