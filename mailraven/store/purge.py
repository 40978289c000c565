"""Messages nobody has any more go: their row, index documents and file.

A message is stored once and referred to by one mailbox entry per copy
(each recipient, each IMAP COPY) and by queued outbound deliveries. When
entries are removed (EXPUNGE, a deleted folder), each account loses its
index document of a message it has no entry of any more, and a message no
entry and no delivery refers to loses its row. Its file is removed after
the transaction commits (L{removeFiles}): a crash between the two leaves a
file no row refers to, which the start-up check moves to lost+found, never
a row pointing at a missing file.

The index is contentless (L{mailraven.store.searchindex}): FTS5 removes a
document only when told its tokens, which are read back from the index
itself through fts5vocab (the tokens of a column in position order,
tokenized again, are the same tokens at the same positions). That reads the
account's whole index once per purge: cheap for the few hundred thousand
token instances of a typical account, a known cost for very large ones.
"""

from __future__ import annotations

import sqlite3
from itertools import groupby
from typing import Iterable

from mailraven.store.files import removeMessageFile
from mailraven.store.searchindex import COLUMNS, isMissingTable, searchTable

Removed = Iterable[tuple[int, str]]  # (user id, message id) of removed entries


def purgeUnreferenced(conn: sqlite3.Connection, removed: Removed) -> list[str]:
    """After entries were deleted in this transaction: drop what no entry
    needs any more; the file paths to remove once it has committed."""
    removed = set(removed)
    byUser: dict[int, set[str]] = {}
    for userId, messageId in removed:
        if not _hasEntry(conn, messageId, userId):
            byUser.setdefault(userId, set()).add(messageId)
    for userId, messageIds in byUser.items():
        _dropDocuments(conn, userId, _documentsOf(conn, messageIds))
    paths = []
    for messageId in sorted({messageId for _, messageId in removed}):
        path = _dropMessage(conn, messageId)
        if path is not None:
            paths.append(path)
    return paths


def removeFiles(dataDir: str, paths: list[str]) -> None:
    """Remove purged messages' files (blocking: run it in a file pool)."""
    for path in paths:
        removeMessageFile(dataDir, path)


def _hasEntry(conn: sqlite3.Connection, messageId: str, userId: int) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM mailbox_entries WHERE message_id = ? AND user_id = ?",
            (messageId, userId),
        ).fetchone()
        is not None
    )


def _documentsOf(conn: sqlite3.Connection, messageIds: set[str]) -> list[int]:
    marks = ",".join("?" * len(messageIds))
    rows = conn.execute(
        f"SELECT id FROM search_docs WHERE message_id IN ({marks})",
        tuple(messageIds),
    )
    return [docId for (docId,) in rows]


def _dropDocuments(conn: sqlite3.Connection, userId: int, docIds: list[int]) -> None:
    """Remove documents C{docIds} from the account's index table."""
    if not docIds:
        return
    table = searchTable(userId)
    try:
        conn.execute(
            f"CREATE VIRTUAL TABLE temp.purge_terms USING fts5vocab(main, {table},"
            " instance)"
        )
    except sqlite3.OperationalError as e:
        if isMissingTable(e):
            return
        raise
    try:
        marks = ",".join("?" * len(docIds))
        instances = conn.execute(
            "SELECT doc, col, term FROM temp.purge_terms"
            f' WHERE doc IN ({marks}) ORDER BY doc, col, "offset"',
            tuple(docIds),
        ).fetchall()
    finally:
        conn.execute("DROP TABLE temp.purge_terms")
    delete = (
        f"INSERT INTO {table} ({table}, rowid, {', '.join(COLUMNS)})"
        " VALUES ('delete', ?, ?, ?, ?, ?)"
    )
    for doc, terms in groupby(instances, key=lambda row: row[0]):
        columns: dict[str, list[str]] = {}
        for _, column, term in terms:
            columns.setdefault(column, []).append(term)
        conn.execute(delete, (doc, *(" ".join(columns.get(c, ())) for c in COLUMNS)))


def _dropMessage(conn: sqlite3.Connection, messageId: str) -> str | None:
    """Delete the message row if nothing refers to it; its file's path."""
    for table in ("mailbox_entries", "outbound_queue"):
        if conn.execute(
            f"SELECT 1 FROM {table} WHERE message_id = ? LIMIT 1", (messageId,)
        ).fetchone():
            return None
    row = conn.execute("SELECT path FROM messages WHERE id = ?", (messageId,))
    found = row.fetchone()
    if found is None:
        return None
    conn.execute("DELETE FROM search_docs WHERE message_id = ?", (messageId,))
    conn.execute("DELETE FROM messages WHERE id = ?", (messageId,))
    return found[0]
