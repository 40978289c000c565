"""Which of a folder's messages hold a word: IMAP SEARCH's text keys.

SUBJECT, FROM and TO are answered from the message rows (the decoded
header values kept at delivery), as RFC 3501 asks: a case-insensitive
substring, no message file read. TEXT and BODY are answered from the
account's search index (L{mailraven.store.searchindex}), which holds words,
not text: a word matches the messages holding a word that begins with it
(case and accents ignored), in the decoded body text and, for TEXT, in the
sender, recipients and subject too. Anything else (a substring inside a word,
punctuation, several words) is for the caller to match by reading messages.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata

from mailraven.store.searchindex import isMissingTable, searchTable

# IMAP key -> the messages column it reads
HEADER_FIELDS = {"subject": "subject", "from": "header_from", "to": "header_to"}
# IMAP key -> the index column it matches (None: every column)
INDEX_FIELDS = {"text": None, "body": "body"}
FIELDS = (*HEADER_FIELDS, *INDEX_FIELDS)
# unicode61's token characters: letters and digits (not "_")
_WORD = re.compile(r"[^\W_]+")


def isIndexWord(text: str) -> bool:
    """Whether the index answers C{text} exactly: one word, nothing else."""
    return bool(text) and _WORD.fullmatch(text) is not None


def foldWord(text: str) -> str:
    """A word as the index keeps it: lower case, accents removed."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def holdsWordPrefix(text: str, word: str) -> bool:
    """Whether a word of C{text} begins with C{word}, as the index matches."""
    want = foldWord(word)
    return any(foldWord(w).startswith(want) for w in _WORD.findall(text))


def folderSearch(
    conn: sqlite3.Connection, userId: int, mailbox: str, field: str, text: str
) -> set[int]:
    """UIDs in the folder whose C{field} (one of L{FIELDS}) holds C{text}."""
    if field in HEADER_FIELDS:
        return _headerSearch(conn, userId, mailbox, HEADER_FIELDS[field], text)
    if field not in INDEX_FIELDS or not isIndexWord(text):
        raise ValueError(f"the index cannot answer {field} {text!r}")
    return _indexSearch(conn, userId, mailbox, INDEX_FIELDS[field], text)


def _headerSearch(
    conn: sqlite3.Connection, userId: int, mailbox: str, column: str, text: str
) -> set[int]:
    needle = text.lower()
    rows = conn.execute(
        f"SELECT e.uid, m.{column} FROM mailbox_entries e"
        " JOIN messages m ON m.id = e.message_id"
        " WHERE e.user_id = ? AND e.mailbox = ?",
        (userId, mailbox),
    )
    return {uid for uid, value in rows if value and needle in value.lower()}


def _indexSearch(
    conn: sqlite3.Connection,
    userId: int,
    mailbox: str,
    column: str | None,
    word: str,
) -> set[int]:
    table = searchTable(userId)
    term = f'"{word}" *'
    match = f"{column} : {term}" if column else term
    # index -> search_docs (its primary key) -> the account's entries of
    # that message (entries_by_message): a cost per match, not per message.
    # CROSS JOIN and INDEXED BY keep that plan: left to itself the planner
    # walked the folder's entries (entries_by_uid) for each match (300 ms for
    # a rare word in 100,000 messages, minutes for a common one).
    try:
        rows = conn.execute(
            f"SELECT e.uid FROM {table}"
            f" CROSS JOIN search_docs d ON d.id = {table}.rowid"
            " CROSS JOIN mailbox_entries e INDEXED BY entries_by_message"
            " ON e.message_id = d.message_id"
            f" WHERE {table} MATCH ? AND e.user_id = ? AND e.mailbox = ?",
            (match, userId, mailbox),
        ).fetchall()
    except sqlite3.OperationalError as e:
        if not isMissingTable(e):
            raise
        return set()
    return {uid for (uid,) in rows}
