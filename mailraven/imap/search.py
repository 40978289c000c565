"""SEARCH (RFC 3501 6.4.4) over a session's view of its folder.

twisted.mail.imap4's own SEARCH failed on SUBJECT/FROM/HEADER (str/bytes),
never matched KEYWORD and walked the messages five per reactor turn. Here
the criteria are parsed once into predicates; flags, UIDs, sequence sets,
sizes and internal dates come from the folder listing. SUBJECT, FROM, TO,
and TEXT or BODY with one word, are asked of the folder store
(L{mailraven.store.foldersearch}: message rows and the search index, in its
read pool), once per key before the walk. Only the other text keys (CC, BCC,
HEADER, SENT*, TEXT/BODY with more than a word) read messages (each once),
matching case-insensitively in the raw header (RFC 2047 words decoded) or
text, without decoding Content-Transfer-Encoding.
"""

from __future__ import annotations

import bisect
from datetime import date, datetime
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from typing import Any, Callable

from twisted.internet.defer import inlineCallbacks
from twisted.mail import imap4

from mailraven.imap.mailbox import parseInternalDate
from mailraven.imap.message import selectHeaders, splitHeader
from mailraven.store.foldersearch import HEADER_FIELDS, isIndexWord

Predicate = Callable[[int, int, Any, Any], bool]
FLAG_KEYS = {
    "ANSWERED": "\\Answered",
    "DELETED": "\\Deleted",
    "DRAFT": "\\Draft",
    "FLAGGED": "\\Flagged",
    "SEEN": "\\Seen",
}
HEADER_KEYS = ("SUBJECT", "FROM", "TO", "CC", "BCC")
# NOT, OR and parentheses nest; parsing and matching recurse once per level,
# so a 4 KB line of "NOT NOT ..." would otherwise reach Python's recursion
# limit. Real clients nest a handful of levels.
MAX_DEPTH = 50


class SearchError(Exception):
    """A malformed search (the client gets BAD)."""


def _text(token: Any) -> str:
    if isinstance(token, tuple):  # a literal
        token = token[0]
    if not isinstance(token, bytes):
        raise SearchError("Expected a string")
    return token.decode("utf-8", "replace")


def _searchDate(token: Any) -> date:
    try:
        return datetime.strptime(_text(token), "%d-%b-%Y").date()
    except ValueError:
        raise SearchError("Malformed date") from None


def headerValue(raw: bytes, name: str) -> str:
    """The decoded values of header C{name} (all of them), one string."""
    block = selectHeaders(raw, [name], False)
    values = []
    text = block.decode("utf-8", "replace")
    for field in text.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n"):
        if ":" in field:
            value = field.split(":", 1)[1].strip()
            try:
                value = str(make_header(decode_header(value)))
            except Exception:
                pass
            values.append(value)
    return " ".join(values)


class Search:
    """Parsed criteria; L{run} gives (sequence number, UID) of the matches."""

    def __init__(self, mbox: Any) -> None:
        self.mbox = mbox
        self.needsContent = False
        self.usesModseq = False
        self._depth = 0
        # (field, text) asked of the folder store, and the UIDs each found
        self._lookups: list[tuple[str, str]] = []
        self._found: list[set[int]] = []
        # lookups every match is in (keys ANDed at the top): the walk
        # visits only their UIDs
        self._required: list[int] = []

    def parse(self, tokens: list) -> Predicate:
        top = self._depth == 0
        predicates = []
        while tokens:
            predicates.append(self._one(tokens))
            lookup = getattr(predicates[-1], "lookup", None)
            if top and lookup is not None:
                self._required.append(lookup)
        if len(predicates) == 1:
            return predicates[0]
        return lambda *a: all(p(*a) for p in predicates)

    def _one(self, tokens: list) -> Predicate:
        if not tokens:
            raise SearchError("Missing search key")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise SearchError(f"Search criteria nested deeper than {MAX_DEPTH}")
            return self._key(tokens)
        finally:
            self._depth -= 1

    def _key(self, tokens: list) -> Predicate:
        token = tokens.pop(0)
        if isinstance(token, list):
            return self.parse(list(token))
        if isinstance(token, tuple) or not isinstance(token, bytes):
            raise SearchError("Unexpected string")
        key = token.decode("ascii", "replace").upper()
        if key[:1].isdigit() or key[:1] == "*":
            return self._sequences(token, uid=False)
        if key == "ALL" or key == "OLD":
            return lambda *a: True
        if key == "RECENT":
            return lambda *a: False
        if key == "NEW":
            return lambda seq, uid, row, msg: "\\Seen" not in row.flags
        if key in FLAG_KEYS:
            flag = FLAG_KEYS[key]
            return lambda seq, uid, row, msg: flag in row.flags
        if key[2:] in FLAG_KEYS and key.startswith("UN"):
            flag = FLAG_KEYS[key[2:]]
            return lambda seq, uid, row, msg: flag not in row.flags
        if key in ("KEYWORD", "UNKEYWORD"):
            word = self._arg(tokens)
            want = key == "KEYWORD"
            return lambda seq, uid, row, msg: (word in row.keywords) == want
        if key in ("LARGER", "SMALLER"):
            size = self._number(tokens)
            if key == "LARGER":
                return lambda seq, uid, row, msg: row.size > size
            return lambda seq, uid, row, msg: row.size < size
        if key in ("BEFORE", "ON", "SINCE"):
            return self._dated(key, _searchDate(self._pop(tokens)), self._arrived)
        if key in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            self.needsContent = True
            return self._dated(key[4:], _searchDate(self._pop(tokens)), self._sent)
        if key in HEADER_KEYS:
            return self._header(key, self._arg(tokens))
        if key == "HEADER":
            name = self._arg(tokens)
            return self._header(name, self._arg(tokens))
        if key in ("BODY", "TEXT"):
            return self._content(key, self._arg(tokens))
        if key == "UID":
            return self._sequences(self._pop(tokens), uid=True)
        if key == "MODSEQ":
            return self._modseq(tokens)
        if key == "NOT":
            inner = self._one(tokens)
            return lambda *a: not inner(*a)
        if key == "OR":
            left, right = self._one(tokens), self._one(tokens)
            return lambda *a: left(*a) or right(*a)
        raise SearchError(f"Unknown search key {key[:40]}")

    def _modseq(self, tokens: list) -> Predicate:
        """RFC 7162 3.1.5: MODSEQ [entry-name entry-type] n."""
        if len(tokens) >= 3 and not _text(tokens[0]).isdigit():
            del tokens[:2]  # per-flag MODSEQs are not kept: the message's
        least = self._number(tokens)
        self.usesModseq = True
        return lambda seq, uid, row, msg: row.modseq >= least

    def _pop(self, tokens: list) -> Any:
        if not tokens:
            raise SearchError("Missing search argument")
        return tokens.pop(0)

    def _arg(self, tokens: list) -> str:
        return _text(self._pop(tokens))

    def _number(self, tokens: list) -> int:
        text = self._arg(tokens)
        if not text.isdigit():
            raise SearchError("Expected a number")
        return int(text)

    def _sequences(self, token: Any, uid: bool) -> Predicate:
        try:
            numbers = imap4.parseIdList(token if isinstance(token, bytes) else b"")
        except Exception:
            raise SearchError("Malformed message set") from None
        chosen = {pair for pair in self.mbox.resolve(numbers, uid)}
        return lambda seq, u, row, msg: (seq, u) in chosen

    @staticmethod
    def _arrived(row: Any, msg: Any) -> date | None:
        return parseInternalDate(row.internalDate).date()

    @staticmethod
    def _sent(row: Any, msg: Any) -> date | None:
        value = headerValue(msg.raw, "date")
        try:
            return parsedate_to_datetime(value).date()
        except (TypeError, ValueError, IndexError):
            return None

    @staticmethod
    def _dated(key: str, day: date, of: Callable) -> Predicate:
        def match(seq: int, uid: int, row: Any, msg: Any) -> bool:
            when = of(row, msg)
            if when is None:
                return False
            if key == "BEFORE":
                return when < day
            if key == "ON":
                return when == day
            return when >= day

        return match

    def _stored(self, field: str, text: str) -> Predicate:
        """A key the folder store answers: a set lookup per message."""
        index = len(self._lookups)
        self._lookups.append((field, text))

        def found(seq: int, uid: int, row: Any, msg: Any) -> bool:
            return uid in self._found[index]

        found.lookup = index  # type: ignore[attr-defined]
        return found

    def _header(self, name: str, text: str) -> Predicate:
        if name.lower() in HEADER_FIELDS:
            return self._stored(name.lower(), text)
        self.needsContent = True
        needle, field = text.lower(), name.lower()
        return lambda seq, uid, row, msg: needle in headerValue(msg.raw, field).lower()

    def _content(self, key: str, text: str) -> Predicate:
        if isIndexWord(text):
            return self._stored(key.lower(), text)
        self.needsContent = True
        needle = text.lower().encode("utf-8")

        def match(seq: int, uid: int, row: Any, msg: Any) -> bool:
            raw = msg.raw if key == "TEXT" else msg.raw[splitHeader(msg.raw) :]
            return needle in raw.lower()

        return match

    @inlineCallbacks
    def run(self, predicate: Predicate):
        self._found = []
        for field, text in self._lookups:
            found = yield self.mbox.account._call("search", self.mbox.name, field, text)
            self._found.append(found)
        matches = []
        for seq, uid in self._candidates():
            row = self.mbox.rows.get(uid)
            if row is None:
                continue
            msg = None
            if self.needsContent:
                msg = self.mbox.message(seq, uid)
                yield msg.load()
            if predicate(seq, uid, row, msg):
                matches.append((seq, uid))
        return matches

    def _candidates(self) -> list[tuple[int, int]]:
        """(sequence number, UID) of the messages the walk looks at."""
        uids = list(self.mbox.uids)
        if not self._required:
            return list(enumerate(uids, 1))
        chosen = set.intersection(*(self._found[i] for i in self._required))
        pairs = []
        for uid in sorted(chosen):
            at = bisect.bisect_left(uids, uid)
            if at < len(uids) and uids[at] == uid:  # in the session's view
                pairs.append((at + 1, uid))
        return pairs


class ParsedSearch:
    def __init__(self, search: Search, predicate: Predicate) -> None:
        self._search, self._predicate = search, predicate
        self.usesModseq = search.usesModseq

    def run(self):
        return self._search.run(self._predicate)


def parseSearch(line: bytes, mbox: Any) -> ParsedSearch:
    """Parse C{[CHARSET name] criteria...} against the session's view."""
    try:
        tokens = imap4.parseNestedParens(line)
    except Exception:
        raise SearchError("Malformed search criteria") from None
    if tokens and isinstance(tokens[0], bytes) and tokens[0].upper() == b"CHARSET":
        if len(tokens) < 2 or _text(tokens[1]).upper() not in ("US-ASCII", "UTF-8"):
            raise SearchError("[BADCHARSET (US-ASCII UTF-8)] Unsupported charset")
        tokens = tokens[2:]
    if not tokens:
        raise SearchError("Missing search criteria")
    search = Search(mbox)
    return ParsedSearch(search, search.parse(tokens))
