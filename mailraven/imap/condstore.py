"""CONDSTORE (RFC 7162 section 3.1) and ENABLE (RFC 5161).

The store keeps a MODSEQ per message and a HIGHESTMODSEQ per folder (the
API's changes bump them too); this adds the protocol: ENABLE CONDSTORE,
SELECT/EXAMINE (CONDSTORE), HIGHESTMODSEQ on SELECT and in STATUS, the
FETCH item MODSEQ and modifier CHANGEDSINCE, STORE's UNCHANGEDSINCE (with
C{[MODIFIED ...]}) and SEARCH MODSEQ. Once enabled (by any of these), every
FETCH response about flags carries MODSEQ.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.mail import imap4

from mailraven.imap.commands import safe

_MODSEQ_ITEM = re.compile(rb"(?<![\w.\[])MODSEQ(?![\w\]])", re.I)
_MODIFIER = re.compile(
    rb"^(.*\S)\s*\(\s*CHANGEDSINCE\s+(\d{1,19})\s*\)\s*$", re.I | re.S
)
_UNCHANGED = re.compile(rb"^\(\s*UNCHANGEDSINCE\s+(\d{1,19})\s*\)\s+(.*)$", re.I | re.S)


class ModseqItem:
    """The FETCH item MODSEQ, among twisted's parsed items."""

    type = "modseq"

    def __bytes__(self) -> bytes:
        return b"MODSEQ"


def parseFetchArguments(line: bytes) -> tuple[list, bool, int | None]:
    """(twisted's parsed items, MODSEQ asked, CHANGEDSINCE or None)."""
    changedSince = None
    match = _MODIFIER.match(line.strip())
    if match is not None and match.group(1).endswith((b")", b"]")):
        line, changedSince = match.group(1), int(match.group(2))
    wantsModseq = bool(_MODSEQ_ITEM.search(line))
    line = _MODSEQ_ITEM.sub(b"", line)
    stripped = line.strip()
    if stripped.startswith(b"(") and stripped.endswith(b")"):
        inner = stripped[1:-1].strip()
        stripped = b"(" + inner + b")" if inner else b""
    query: list = []
    if stripped:
        parser = imap4._FetchParser()
        parser.parseString(stripped)
        query = parser.result
    if not query and not wantsModseq and changedSince is None:
        raise imap4.IllegalClientResponse("Nothing to fetch")
    return query, wantsModseq, changedSince


def parseStoreMode(line: bytes) -> tuple[tuple[bytes, int | None], bytes]:
    """(STORE's mode atom and UNCHANGEDSINCE or None, the rest)."""
    unchangedSince = None
    match = _UNCHANGED.match(line)
    if match is not None:
        unchangedSince, line = int(match.group(1)), match.group(2)
    mode, _, rest = line.partition(b" ")
    if not mode:
        raise imap4.IllegalClientResponse("Missing STORE mode")
    return (mode, unchangedSince), rest


class CondstoreCommands:
    """For L{MailRavenIMAPServer}: ENABLE and the CONDSTORE parts of FETCH."""

    condstore = False

    def do_ENABLE(self, tag: bytes, line: bytes) -> None:
        names = line.split()
        if not names:
            self.sendBadResponse(tag, b"ENABLE needs a capability name")
            return
        enabled = [n.upper() for n in names if n.upper() == b"CONDSTORE"]
        if enabled:
            self.condstore = True
        self.sendUntaggedResponse(b" ".join([b"ENABLED", *enabled[:1]]))
        self.sendPositiveResponse(tag, b"ENABLE completed")

    auth_ENABLE = (do_ENABLE, safe(imap4.IMAP4Server.arg_line))  # RFC 5161 3.1

    def do_FETCH(self, tag: bytes, messages: Any, arguments: tuple, uid=0) -> None:
        query, wantsModseq, changedSince = arguments
        if wantsModseq or changedSince is not None:
            self.condstore = True
            query = [*query, ModseqItem()]
        chosen = self.mbox.fetch(messages, bool(uid))
        if changedSince is not None:
            chosen = [(seq, m) for seq, m in chosen if m.modseq > changedSince]
        if not query:
            self.sendPositiveResponse(tag, b"FETCH completed")
            return
        self._oldTimeout = self.setTimeout(None)
        self._IMAP4Server__cbFetch(iter(chosen), tag, query, uid)

    select_FETCH = (
        do_FETCH,
        safe(imap4.IMAP4Server.arg_seqset),
        safe(lambda self, line: (parseFetchArguments(line), b"")),
    )

    def spew_modseq(self, id: int, msg: Any, _w: Any = None, _f: Any = None) -> None:
        _w(b"MODSEQ (%d)" % msg.modseq)

    def modseqText(self, seq: int) -> bytes:
        """C{ MODSEQ (n)} for an unsolicited FETCH, once CONDSTORE is on."""
        if not self.condstore:
            return b""
        return b" MODSEQ (%d)" % self.mbox.rows[self.mbox.getUID(seq)].modseq
