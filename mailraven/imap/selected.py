"""Commands on the selected folder: FETCH's content, STORE, COPY, MOVE,
SEARCH, EXPUNGE (and UID EXPUNGE), NOOP and CHECK.

Changed from twisted.mail.imap4: FETCH reads a message's bytes only when
the request needs them and serves BODY[], BODY[HEADER], BODY[TEXT] and
partial fetches (C{<origin.length>}, which twisted answered with the whole
message) as slices of the stored bytes; a FETCH of content sets \\Seen
(RFC 3501 6.4.5); STORE and COPY refusals are C{NO}, not C{BAD}; NOOP and
CHECK report what other sessions and the mobile API changed.
"""

from __future__ import annotations

import re
from io import BytesIO
from typing import Any

from twisted.internet.defer import inlineCallbacks, succeed
from twisted.mail import imap4
from twisted.python.failure import Failure

from mailraven.imap.bodystructure import bodyStructure
from mailraven.imap.commands import decodeName, safe
from mailraven.imap.condstore import parseStoreMode
from mailraven.imap.literals import parseFlags
from mailraven.imap.mailbox import uidRanges
from mailraven.imap.message import selectHeaders, splitHeader
from mailraven.imap.search import SearchError, parseSearch

_seqset = safe(imap4.IMAP4Server.arg_seqset)
_atom = safe(imap4.IMAP4Server.arg_atom)
_line = safe(imap4.IMAP4Server.arg_line)
_finalastring = safe(imap4.IMAP4Server.arg_finalastring)
_flaglist = safe(imap4.IMAP4Server.arg_flaglist)
_storeMode = safe(lambda self, line: parseStoreMode(line))

_TRAILING_LITERAL = re.compile(rb"\{(\d{1,12})\}$")
MAX_CRITERIA = 64 * 1024  # a SEARCH line with its literals


def _searchCriteria(server: Any, line: bytes | None) -> Any:
    """
    SEARCH's criteria with their literals (a non-ASCII word comes as one,
    RFC 3501 6.4.4) read and put back inline, C{{n}CRLF} and the octets, as
    L{imap4.parseNestedParens} reads them.
    """
    if line is None:
        raise imap4.IllegalClientResponse("Missing search criteria")
    if len(line) > MAX_CRITERIA:
        raise imap4.IllegalClientResponse("Search criteria too long")
    literal = _TRAILING_LITERAL.search(line)
    if literal is None:
        return (line, b"")
    d = server._stringLiteral(int(literal.group(1)))
    return d.addCallback(
        lambda got: _searchCriteria(server, line + b"\r\n" + got[0] + got[1])
    )


CONTENT = {"envelope", "rfc822", "rfc822header", "rfc822text", "bodystructure"}
MARKS_SEEN = {"rfc822", "rfc822text"}


def needsContent(query: list) -> bool:
    return any(p.type in CONTENT or p.type == "body" for p in query)


def marksSeen(query: list) -> bool:
    return any(
        p.type in MARKS_SEEN or (p.type == "body" and not p.peek and _isSection(p))
        for p in query
    )


def _isSection(part: Any) -> bool:
    return bool(part.header or part.text or part.mime or part.empty or part.part)


class MessageCommands:
    """For L{MailRavenIMAPServer}: the selected state's commands."""

    # -- FETCH -------------------------------------------------------------

    def spewMessage(self, id: int, msg: Any, query: list, uid: int) -> Any:
        if not needsContent(query):
            return super().spewMessage(id, msg, query, uid)
        d = msg.load()
        if marksSeen(query) and self.mbox.isWriteable() and "\\Seen" not in msg.flags:
            d.addCallback(lambda _: self._markSeen(msg))
        d.addCallback(
            lambda _: super(MessageCommands, self).spewMessage(id, msg, query, uid)
        )
        d.addErrback(self._gone)
        return d

    def _gone(self, failure: Failure) -> None:
        """Expunged by another session since this one looked: no FETCH
        response for it (RFC 2180 4.1.3), the others still come."""
        failure.trap(imap4.MailboxException)

    @inlineCallbacks
    def _markSeen(self, msg: Any):
        changed, _ = yield self.mbox.store(
            imap4.MessageSet(msg.uid, msg.uid), ["\\Seen"], 1, True
        )
        for value in changed.values():
            msg.flags = value
            msg.modseq = self.mbox.rows[msg.uid].modseq

    def spew_bodystructure(
        self, id: int, msg: Any, _w: Any = None, _f: Any = None
    ) -> None:
        structure = bodyStructure(msg.part.message, extended=True)
        _w(b"BODYSTRUCTURE " + imap4.collapseNestedLists([structure]))

    def spew_body(self, part: Any, id: int, msg: Any, _w: Any = None, _f: Any = None):
        if not _isSection(part):  # BODY: the structure without extensions
            structure = bodyStructure(msg.part.message, extended=False)
            _w(b"BODY " + imap4.collapseNestedLists([structure]))
            return None
        if part.part or part.mime:
            return super().spew_body(part, id, msg, _w, _f)
        raw = msg.raw
        if part.header:
            header = part.header
            if header.fields:
                data = selectHeaders(raw, header.fields, header.negate)
            else:
                data = raw[: splitHeader(raw)]
        elif part.text:
            data = raw[splitHeader(raw) :]
        else:
            data = raw
        begin = part.partialBegin
        part.partialBegin = None
        label = part.getBytes()
        part.partialBegin = begin
        if begin is not None:
            data = data[begin : begin + part.partialLength]
            label += b"<%d>" % begin
        _w(label + b" ")
        _f()
        return imap4.FileProducer(BytesIO(data)).beginProducing(self.transport)

    # -- STORE ----------------------------------------------------------------

    def do_STORE(self, tag: bytes, messages: Any, mode: tuple, flags: list, uid=0):
        mode, unchangedSince = mode
        mode = mode.upper()
        if mode.lstrip(b"+-") not in (b"FLAGS", b"FLAGS.SILENT"):
            self.sendBadResponse(tag, b"Expected FLAGS, +FLAGS or -FLAGS")
            return
        silent = mode.endswith(b".SILENT")
        sign = 1 if mode.startswith(b"+") else -1 if mode.startswith(b"-") else 0
        try:
            names = parseFlags(b" ".join(flags))
        except imap4.IllegalClientResponse as e:
            self.sendBadResponse(tag, str(e).encode())
            return
        if unchangedSince is not None:
            self.condstore = True
        d = self.mbox.store(messages, names, sign, bool(uid), unchangedSince)
        d.addCallback(self._stored, tag, silent, uid)
        d.addErrback(self._selectedFailed, tag)

    def _stored(self, result: tuple, tag: bytes, silent: bool, uid: int) -> None:
        changed, left = result
        for seq, flags in sorted(changed.items()):
            if silent and not self.condstore:
                break
            # RFC 7162 3.1.3: with CONDSTORE, .SILENT still reports the MODSEQ
            items = b"" if silent else b"FLAGS (%s)" % " ".join(flags).encode()
            if uid:
                items += b" UID %d" % self.mbox.getUID(seq)
            items = (items + self.modseqText(seq)).strip()
            self.sendUntaggedResponse(b"%d FETCH (%s)" % (seq, items))
        code = b""
        if left:
            numbers = b",".join(b"%d" % (u if uid else seq) for seq, u in left)
            code = b"[MODIFIED %s] " % numbers
        self.sendPositiveResponse(tag, code + b"STORE completed")

    def _selectedFailed(self, failure: Failure, tag: bytes) -> None:
        if failure.check(imap4.NoSuchMailbox):
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
        elif failure.check(imap4.MailboxException):
            words = str(failure.value).encode("ascii", "replace")[:200]
            self.sendNegativeResponse(tag, words)
        else:
            self.log.failure(
                "imap command failed peer={peer}", failure, peer=self.peerIP
            )
            self.sendNegativeResponse(tag, b"[SERVERBUG] Internal server error")

    select_STORE = (do_STORE, _seqset, _storeMode, _flaglist)

    # -- COPY, MOVE ---------------------------------------------------------------

    def do_COPY(self, tag: bytes, messages: Any, mailbox: bytes, uid=0) -> None:
        self._transfer(tag, messages, mailbox, uid, "copy")

    def do_MOVE(self, tag: bytes, messages: Any, mailbox: bytes, uid=0) -> None:
        if not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"The folder is read-only (EXAMINE)")
            return
        self._transfer(tag, messages, mailbox, uid, "move")

    def _transfer(self, tag, messages, mailbox, uid, method: str) -> None:
        destination = decodeName(mailbox)
        chosen = self.mbox.resolve(messages, bool(uid))
        if not chosen:
            # nothing to transfer, but a missing target is still TRYCREATE
            d = self.account.status(destination)
            d.addCallback(self._nothingTransferred, tag, method)
            d.addErrback(self._selectedFailed, tag)
            return
        uids = uidRanges(u for _, u in chosen)
        # a copy adds usage (each entry counts); a move within the account
        # does not, so only COPY meets the quota (RFC 9208 OVERQUOTA)
        d = self.account.checkQuota() if method == "copy" else succeed(None)
        d.addCallback(
            lambda _: self.account._call(method, self.mbox.name, uids, destination)
        )
        d.addCallback(self._transferred, tag, destination, method)
        d.addErrback(self._selectedFailed, tag)

    def _nothingTransferred(self, status: Any, tag: bytes, method: str) -> None:
        if status is None:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
        else:
            self.sendPositiveResponse(tag, method.upper().encode() + b" completed")

    @inlineCallbacks
    def _transferred(self, pairs: list, tag: bytes, destination: str, method: str):
        status = yield self.account.status(destination)
        code = b""
        if pairs and status is not None:
            old = _uidSet(p[0] for p in pairs)
            new = _uidSet(p[1] for p in pairs)
            code = b"[COPYUID %d %s %s] " % (status["UIDVALIDITY"], old, new)
        if method == "move":
            # RFC 6851: the COPYUID comes untagged, then the EXPUNGEs
            if code:
                self.sendPositiveResponse(None, code.strip())
                code = b""
            for seq in self.mbox.forget(p[0] for p in pairs):
                self.sendUntaggedResponse(b"%d EXPUNGE" % seq)
        done = code + method.upper().encode() + b" completed"
        yield self.reportChangesIn(destination, tag, done)

    select_COPY = (do_COPY, _seqset, _finalastring)
    select_MOVE = (do_MOVE, _seqset, _finalastring)

    # -- EXPUNGE, UID EXPUNGE --------------------------------------------------------

    def do_EXPUNGE(self, tag: bytes, uid=0) -> None:
        self._expunge(tag, None)

    def do_UIDEXPUNGE(self, tag: bytes, messages: Any) -> None:
        chosen = self.mbox.resolve(messages, True)
        if not chosen:
            self.sendPositiveResponse(tag, b"EXPUNGE completed")
            return
        self._expunge(tag, uidRanges(u for _, u in chosen))

    def _expunge(self, tag: bytes, uids: Any) -> None:
        d = self.mbox.expunge(uids)
        d.addCallback(self._expunged, tag)
        d.addErrback(self._selectedFailed, tag)

    def _expunged(self, seqs: list[int], tag: bytes) -> None:
        for seq in seqs:
            self.sendUntaggedResponse(b"%d EXPUNGE" % seq)
        self.sendPositiveResponse(tag, b"EXPUNGE completed")

    select_EXPUNGE = (do_EXPUNGE,)

    def do_UID(self, tag: bytes, command: bytes, line: bytes) -> None:
        command = command.upper()
        if command == b"EXPUNGE":
            messages, rest = self.arg_seqset(line)
            if rest:
                raise imap4.IllegalClientResponse("Too many arguments")
            self.do_UIDEXPUNGE(tag, messages)
            return
        if command not in (b"COPY", b"FETCH", b"STORE", b"SEARCH", b"MOVE"):
            raise imap4.IllegalClientResponse("Unknown UID command")
        self.dispatchCommand(tag, command, line, uid=1)

    select_UID = (do_UID, _atom, _line)

    # -- SEARCH ------------------------------------------------------------------

    def do_SEARCH(self, tag: bytes, line: bytes, uid=0) -> None:
        try:
            search = parseSearch(line, self.mbox)
        except SearchError as e:
            self.sendBadResponse(tag, str(e).encode("ascii", "replace"))
            return
        if search.usesModseq:
            self.condstore = True
        d = search.run()
        d.addCallback(self._found, tag, uid, search.usesModseq)
        d.addErrback(self._selectedFailed, tag)

    def _found(
        self, matches: list[tuple[int, int]], tag: bytes, uid: int, modseq: bool
    ) -> None:
        numbers = b" ".join(b"%d" % (u if uid else seq) for seq, u in matches)
        if modseq and matches:
            # RFC 7162 3.1.5: the highest MODSEQ of the messages found
            highest = max(self.mbox.rows[u].modseq for _, u in matches)
            numbers += b" (MODSEQ %d)" % highest
        self.sendUntaggedResponse(b"SEARCH" + (b" " + numbers if numbers else b""))
        self.sendPositiveResponse(tag, b"SEARCH completed")

    select_SEARCH = (do_SEARCH, _searchCriteria)

    # -- NOOP, CHECK: what changed elsewhere --------------------------------------

    def do_NOOP(self, tag: bytes) -> None:
        self._report(tag, b"NOOP completed")

    def do_CHECK(self, tag: bytes) -> None:
        self._report(tag, b"CHECK completed")

    def _report(self, tag: bytes, done: bytes) -> None:
        if self.mbox is None:
            self.sendPositiveResponse(tag, done)
            return
        d = self.mbox.refresh()
        d.addCallback(self._reported, tag, done)
        d.addErrback(self._selectedFailed, tag)

    def reportChangesIn(self, name: str, tag: bytes, done: bytes) -> Any:
        """
        Answer C{done}; first, when C{name} is the selected folder (an APPEND
        or COPY into it), what changed there (RFC 3501 6.3.11: the new message
        shows as EXISTS).
        """
        if self.mbox is None or self.mbox.name != name:
            self.sendPositiveResponse(tag, done)
            return None
        d = self.mbox.refresh()
        d.addCallback(self._reported, tag, done)
        return d

    def _reported(self, changes: tuple, tag: bytes, done: bytes) -> None:
        self.sendChanges(changes)
        self.sendPositiveResponse(tag, done)

    def sendChanges(self, changes: tuple) -> None:
        """The untagged EXPUNGE, EXISTS and FETCH of a L{SelectedFolder.refresh}."""
        expunged, exists, flags = changes
        for seq in expunged:
            self.sendUntaggedResponse(b"%d EXPUNGE" % seq)
        if exists is not None:
            self.sendUntaggedResponse(b"%d EXISTS" % exists)
        for seq, value in sorted(flags.items()):
            joined = " ".join(value).encode()
            uid = self.mbox.getUID(seq)
            more = self.modseqText(seq)
            self.sendUntaggedResponse(
                b"%d FETCH (FLAGS (%s) UID %d%s)" % (seq, joined, uid, more)
            )

    auth_NOOP = select_NOOP = (do_NOOP,)
    select_CHECK = (do_CHECK,)


def _uidSet(uids: Any) -> bytes:
    """UIDs in the given order as an IMAP set (COPYUID keeps the order)."""
    return b",".join(b"%d" % u for u in uids)
