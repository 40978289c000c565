"""SQL behind the mobile API. Every function takes a read (or write) connection
and runs on the database's threads, never on the reactor."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from mailraven.api.search import SearchQuery
from mailraven.store.messages import utcNow
from mailraven.store.searchindex import isMissingTable, searchTable

TOKEN_LIFETIME = timedelta(days=7)

_SUMMARY = """
    e.id, e.recipient, e.mailbox, e.read_state, e.starred, e.received_at,
    e.updated_at, m.mail_from, m.header_from, m.subject, m.snippet, m.size,
    m.has_attachments, m.spam_score, m.auth_results, e.tag
"""


_NOT_CHECKED = {"spf_result": "none", "dkim_result": "none", "dmarc_result": "none"}


def summary(row: sqlite3.Row) -> dict[str, Any]:
    """
    A MessageSummary of the API contract, from a row that starts with the
    columns of L{_SUMMARY} (unpacked by position: a list page builds a
    thousand of these, and lookups by name were most of its Python time).
    """
    (
        entryId,
        recipient,
        mailbox,
        readState,
        starred,
        receivedAt,
        updatedAt,
        mailFrom,
        headerFrom,
        subject,
        snippet,
        size,
        hasAttachments,
        spamScore,
        authResults,
        tag,
    ) = tuple(row)[:16]
    return {
        "id": entryId,
        "sender": headerFrom or mailFrom,
        "recipient": recipient,
        "tag": tag or "",
        "subject": subject or "",
        "snippet": snippet or "",
        "read_state": bool(readState),
        "starred": bool(starred),
        "received_at": _z(receivedAt),
        "updated_at": _z(updatedAt),
        **(_authResults(authResults) if authResults else _NOT_CHECKED),
        "mailbox": mailbox,
        "spam_score": spamScore,
        "has_attachments": bool(hasAttachments),
        "size": size,
    }


def _authResults(stored: str) -> dict[str, str]:
    """SPF/DKIM/DMARC of inbound mail; "none" for mail that was not checked."""
    found = json.loads(stored)
    return {
        f"{check}_result": found.get(check, "none")
        for check in ("spf", "dkim", "dmarc")
    }


def _z(stamp: str) -> str:
    return stamp.replace("+00:00", "Z")


# -- listing ------------------------------------------------------------------


def encodeCursor(receivedAt: str, entryId: str) -> str:
    raw = json.dumps([receivedAt, entryId]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decodeCursor(cursor: str) -> tuple[str, str]:
    """Raises ValueError for anything we did not hand out."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        receivedAt, entryId = json.loads(base64.urlsafe_b64decode(padded))
    except Exception:
        raise ValueError("bad cursor") from None
    if not (isinstance(receivedAt, str) and isinstance(entryId, str)):
        raise ValueError("bad cursor")
    return receivedAt, entryId


def listMessages(
    conn: sqlite3.Connection,
    userId: int,
    mailbox: str,
    limit: int,
    offset: int,
    cursor: tuple[str, str] | None,
    unreadOnly: bool,
) -> dict[str, Any]:
    """
    Newest first. With a cursor the page starts strictly after the cursor's
    message (keyset pagination), so mail arriving meanwhile shifts nothing.
    """
    where = ["e.user_id = ?", "e.mailbox = ?"]
    args: list[Any] = [userId, mailbox]
    if unreadOnly:
        where.append("e.read_state = 0")
    counts = conn.execute(
        "SELECT total, unread FROM mailbox_counts WHERE user_id = ? AND mailbox = ?",
        (userId, mailbox),
    ).fetchone()
    total = 0 if counts is None else counts[1 if unreadOnly else 0]
    if cursor is not None:
        where.append("(e.received_at, e.id) < (?, ?)")
        args += [cursor[0], cursor[1]]
        offset = 0
    # The page's ids come from the index alone (skipping `offset` entries costs
    # no table or message lookups); only the page itself is joined.
    rows = conn.execute(
        f"SELECT {_SUMMARY} FROM (SELECT e.id AS pick FROM mailbox_entries e"
        f" WHERE {' AND '.join(where)} ORDER BY e.received_at DESC, e.id DESC"
        " LIMIT ? OFFSET ?) JOIN mailbox_entries e ON e.id = pick"
        " JOIN messages m ON m.id = e.message_id"
        " ORDER BY e.received_at DESC, e.id DESC",
        [*args, limit + 1, offset],
    ).fetchall()
    hasMore = len(rows) > limit
    rows = rows[:limit]
    nextCursor = None
    if hasMore:
        nextCursor = encodeCursor(rows[-1]["received_at"], rows[-1]["id"])
    return {
        "messages": [summary(r) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
        "has_more": hasMore,
        "next_cursor": nextCursor,
    }


def changedSince(
    conn: sqlite3.Connection, userId: int, since: str, limit: int
) -> list[dict[str, Any]]:
    """
    Every entry that arrived or changed (read state, star, mailbox: a delete is
    a move to trash) after C{since}, oldest change first.
    """
    rows = conn.execute(
        f"SELECT {_SUMMARY} FROM mailbox_entries e JOIN messages m"
        " ON m.id = e.message_id WHERE e.user_id = ? AND e.updated_at > ?"
        " ORDER BY e.updated_at, e.id LIMIT ?",
        (userId, since, limit),
    ).fetchall()
    return [summary(r) for r in rows]


def expungedSince(
    conn: sqlite3.Connection, userId: int, since: str, limit: int
) -> list[dict[str, Any]]:
    """Entries gone (expunged over IMAP, or with a deleted folder) after
    C{since}, oldest first."""
    rows = conn.execute(
        "SELECT id, mailbox, expunged_at FROM expunged_entries"
        " WHERE user_id = ? AND expunged_at > ? ORDER BY expunged_at, id LIMIT ?",
        (userId, since, limit),
    ).fetchall()
    return [{"id": r[0], "mailbox": r[1], "expunged_at": _z(r[2])} for r in rows]


def _changedAt(conn: sqlite3.Connection, userId: int, stamp: str) -> list[dict]:
    rows = conn.execute(
        f"SELECT {_SUMMARY} FROM mailbox_entries e JOIN messages m"
        " ON m.id = e.message_id WHERE e.user_id = ? AND e.updated_at = ?"
        " ORDER BY e.id",
        (userId, stamp),
    ).fetchall()
    return [summary(r) for r in rows]


def _expungedAt(conn: sqlite3.Connection, userId: int, stamp: str) -> list[dict]:
    rows = conn.execute(
        "SELECT id, mailbox, expunged_at FROM expunged_entries"
        " WHERE user_id = ? AND expunged_at = ? ORDER BY id",
        (userId, stamp),
    ).fetchall()
    return [{"id": r[0], "mailbox": r[1], "expunged_at": _z(r[2])} for r in rows]


def firstChanges(
    messages: list[dict], expunged: list[dict], limit: int
) -> tuple[list[dict], list[dict], str | None]:
    """The oldest C{limit} changes of both kinds (each list oldest first),
    and the time of the last one: the next page starts after it."""
    merged = sorted(
        [(m["updated_at"], 0, m) for m in messages]
        + [(e["expunged_at"], 1, e) for e in expunged],
        key=lambda item: (item[0], item[1]),
    )[:limit]
    last = merged[-1][0] if merged else None
    return (
        [item for _, kind, item in merged if kind == 0],
        [item for _, kind, item in merged if kind == 1],
        last,
    )


def deltaBatch(
    conn: sqlite3.Connection, userId: int, since: str, sinceText: str, limit: int
) -> dict[str, Any]:
    """The delta sync page after C{since} (GET /messages/since and each
    event of GET /events). The cursor is a time and the next page starts
    strictly after it, so a page never splits the entries sharing its last
    time (a batch move gives many one time): that group is completed, even
    past C{limit}."""
    messages = changedSince(conn, userId, since, limit)
    expunged = expungedSince(conn, userId, since, limit)
    cut = len(messages) + len(expunged) >= limit
    messages, expunged, last = firstChanges(messages, expunged, limit)
    if last is not None and cut:
        stamp = last.replace("Z", "+00:00")
        have = {m["id"] for m in messages}
        messages += [m for m in _changedAt(conn, userId, stamp) if m["id"] not in have]
        gone = {e["id"] for e in expunged}
        expunged += [e for e in _expungedAt(conn, userId, stamp) if e["id"] not in gone]
    return {
        "messages": messages,
        "expunged": expunged,
        "count": len(messages) + len(expunged),
        "since": sinceText,
        "next_since": last or sinceText,
    }


def latestChange(conn: sqlite3.Connection, userId: int) -> str:
    """The time of the account's newest change: a cursor meaning "now"."""
    row = conn.execute(
        "SELECT MAX(t) FROM (SELECT MAX(updated_at) AS t FROM mailbox_entries"
        " WHERE user_id = ? UNION ALL SELECT MAX(expunged_at) FROM"
        " expunged_entries WHERE user_id = ?)",
        (userId, userId),
    ).fetchone()
    return _z(row[0] or "1970-01-01T00:00:00.000000+00:00")


def entryFor(conn: sqlite3.Connection, userId: int, entryId: str) -> dict | None:
    row = conn.execute(
        f"SELECT {_SUMMARY}, m.path, m.message_id AS header_message_id"
        " FROM mailbox_entries e JOIN messages m ON m.id = e.message_id"
        " WHERE e.id = ? AND e.user_id = ?",
        (entryId, userId),
    ).fetchone()
    if row is None:
        return None
    result = summary(row)
    result["path"] = row["path"]
    result["message_id"] = row["header_message_id"] or ""
    return result


# -- search -------------------------------------------------------------------

# weights: sender, recipients, subject, body
_WEIGHTS = "4.0, 2.0, 3.0, 1.0"
SEARCH_WINDOW = 2000  # newest matches ranked by BM25
TOTAL_CAP = 1000  # total_matches is exact up to this many


def search(
    conn: sqlite3.Connection,
    userId: int,
    query: SearchQuery,
    limit: int,
    offset: int,
    window: int | None = None,
    order: str = "date",
    cap: int = TOTAL_CAP,
) -> dict[str, Any]:
    """
    Matches in the account's own index table (L{mailraven.store.searchindex})
    over sender, recipients, subject, body: newest first (C{order="date"},
    what a mail client shows), or by BM25 (C{"relevance"}), whose statistics
    are the account's alone. C{total_matches} is exact up to C{cap}; past it
    the count stops there and C{total_matches_exact} is false, as a search
    engine's totals do, so a common word costs no full count.
    """
    if query.nothing:
        return _found([], 0, True)
    if not query.match:
        return _listByDates(conn, userId, query, limit, offset, cap)
    try:
        if order == "relevance":
            return _searchRanked(conn, userId, query, limit, offset, window, cap)
        return _searchNewest(conn, userId, query, limit, offset, cap)
    except sqlite3.OperationalError as e:
        if not isMissingTable(e):
            raise
        return _found([], 0, True)  # nothing indexed


def _found(results: list[dict[str, Any]], total: int, exact: bool) -> dict[str, Any]:
    return {
        "results": results,
        "count": len(results),
        "total_matches": total,
        "total_matches_exact": exact,
    }


def _matching(table: str, query: SearchQuery) -> tuple[str, tuple[str, ...]]:
    """The FROM/WHERE of a search and its arguments."""
    # Dates: each document's arrival is in search_docs (schema 10), one
    # primary-key lookup per match; no join with the mailbox entries.
    source, dated, dates = table, "", ()
    if query.before or query.after:
        source += f" JOIN search_docs t ON t.id = {table}.rowid"
        dated = " AND t.received_at >= ? AND t.received_at < ?"
        dates = (query.after or "", query.before or "~")  # "~" sorts last
    return f"FROM {source} WHERE {table} MATCH ?{dated}", (query.match, *dates)


def _countUpTo(
    conn: sqlite3.Connection, matching: str, args: tuple[Any, ...], cap: int
) -> tuple[int, bool]:
    """(matches, exact): counting stops after C{cap} + 1."""
    (total,) = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 {matching} LIMIT ?)", (*args, cap + 1)
    ).fetchone()
    return (cap, False) if total > cap else (total, True)


def _searchNewest(
    conn: sqlite3.Connection,
    userId: int,
    query: SearchQuery,
    limit: int,
    offset: int,
    cap: int,
) -> dict[str, Any]:
    """Newest first: FTS5 walks its doclists backwards and stops at the page."""
    table = searchTable(userId)
    matching, args = _matching(table, query)
    total, exact = _countUpTo(conn, matching, args, cap)
    docs = conn.execute(
        f"SELECT d.message_id FROM (SELECT {table}.rowid AS doc {matching}"
        f" ORDER BY {table}.rowid DESC LIMIT ? OFFSET ?)"
        " JOIN search_docs d ON d.id = doc ORDER BY doc DESC",
        (*args, limit, offset),
    ).fetchall()
    order = {messageId: n for n, (messageId,) in enumerate(docs)}
    rows = _summariesOf(conn, userId, order)
    rows.sort(key=lambda row: order[row["file_id"]])
    return _found([summary(row) for row in rows], max(total, offset + len(rows)), exact)


def _summariesOf(
    conn: sqlite3.Connection, userId: int, messageIds: dict[str, Any]
) -> list[sqlite3.Row]:
    if not messageIds:
        return []
    marks = ",".join("?" * len(messageIds))
    return conn.execute(
        f"SELECT {_SUMMARY}, e.message_id AS file_id FROM mailbox_entries e"
        f" JOIN messages m ON m.id = e.message_id"
        # unary + keeps the planner on entries_by_message: the user's own
        # index would walk every entry they have (measured: 30 ms at 100k)
        f" WHERE +e.user_id = ? AND e.message_id IN ({marks})",
        (userId, *messageIds),
    ).fetchall()


def _searchRanked(
    conn: sqlite3.Connection,
    userId: int,
    query: SearchQuery,
    limit: int,
    offset: int,
    window: int | None,
    cap: int,
) -> dict[str, Any]:
    """
    BM25 needs every candidate's column sizes: rank the newest C{window}
    matches (rowids grow with arrival). Relevance is relative to the best
    match of the whole result (1.0): pages compare, and tiny corpora, where
    BM25's IDF collapses towards 0, still rank sensibly.
    """
    table = searchTable(userId)
    matching, args = _matching(table, query)
    total, exact = _countUpTo(conn, matching, args, cap)
    window = SEARCH_WINDOW if window is None else window
    edge = conn.execute(
        f"SELECT {table}.rowid {matching} ORDER BY {table}.rowid DESC LIMIT 1 OFFSET ?",
        (*args, window - 1),
    ).fetchone()
    first = edge[0] if edge else 0
    ranked = f"SELECT d.message_id, r FROM (SELECT {table}.rowid AS doc,"
    ranked += f" bm25({table}, {_WEIGHTS}) AS r {matching} AND {table}.rowid >= ?"
    ranked += " ORDER BY r LIMIT ? OFFSET ?) JOIN search_docs d ON d.id = doc"
    ranked += " ORDER BY r"
    page = conn.execute(ranked, (*args, first, limit, offset)).fetchall()
    if not page:
        return _found([], total, exact)
    if offset == 0:
        best = page[0][1]
    else:
        best = conn.execute(ranked, (*args, first, 1, 0)).fetchone()[1]
    scores = {messageId: score for messageId, score in page}
    rows = _summariesOf(conn, userId, scores)
    rows.sort(key=lambda row: scores[row["file_id"]])
    results = _withRelevance(rows, [scores[row["file_id"]] for row in rows], best)
    return _found(results, max(total, offset + len(results)), exact)


def _listByDates(
    conn: sqlite3.Connection,
    userId: int,
    query: SearchQuery,
    limit: int,
    offset: int,
    cap: int,
) -> dict[str, Any]:
    """Dates alone: the account's entries in the time range, newest first."""
    where, args = ["e.user_id = ?"], [userId]
    if query.before:
        where.append("e.received_at < ?")
        args.append(query.before)
    if query.after:
        where.append("e.received_at >= ?")
        args.append(query.after)
    clause = " AND ".join(where)
    total, exact = _countUpTo(
        conn, f"FROM mailbox_entries e WHERE {clause}", tuple(args), cap
    )
    rows = conn.execute(
        f"SELECT {_SUMMARY} FROM mailbox_entries e"
        f" JOIN messages m ON m.id = e.message_id WHERE {clause}"
        " ORDER BY e.received_at DESC LIMIT ? OFFSET ?",
        [*args, limit, offset],
    ).fetchall()
    return _found([summary(row) for row in rows], max(total, offset + len(rows)), exact)


def _withRelevance(
    rows: list[sqlite3.Row], scores: list[float], best: float
) -> list[dict[str, Any]]:
    results = []
    for row, score in zip(rows, scores, strict=True):
        result = summary(row)
        result["relevance"] = round(min(1.0, score / best), 4) if best < 0 else 1.0
        results.append(result)
    return results


def sentToday(conn: sqlite3.Connection, userId: int) -> int:
    """Messages the account queued in the last 24 hours (the daily limit)."""
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="microseconds")
    return conn.execute(
        "SELECT count(*) FROM outbound_queue WHERE user_id = ? AND created_at > ?",
        (userId, since),
    ).fetchone()[0]


# -- tokens -------------------------------------------------------------------


def tokenHash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def storeToken(conn: sqlite3.Connection, userId: int, token: str) -> str:
    now = datetime.now(UTC)
    expires = (now + TOKEN_LIFETIME).isoformat(timespec="seconds")
    conn.execute(
        "INSERT INTO tokens (hash, user_id, created_at, expires_at) VALUES (?,?,?,?)",
        (tokenHash(token), userId, now.isoformat(timespec="seconds"), expires),
    )
    conn.execute("DELETE FROM tokens WHERE expires_at < ?", (utcNow(),))
    return expires


def tokenRecord(
    conn: sqlite3.Connection, token: str
) -> tuple[tuple[int, str, bool], float] | None:
    """The user of a valid token and when the token expires (Unix time)."""
    row = conn.execute(
        "SELECT u.id, u.email, u.is_admin, t.expires_at FROM tokens t JOIN users u"
        " ON u.id = t.user_id WHERE t.hash = ? AND t.expires_at > ?",
        (tokenHash(token), utcNow()),
    ).fetchone()
    if row is None:
        return None
    expires = datetime.fromisoformat(row[3]).timestamp()
    return (row[0], row[1], bool(row[2])), expires


def revokeToken(conn: sqlite3.Connection, token: str) -> bool:
    return (
        conn.execute("DELETE FROM tokens WHERE hash = ?", (tokenHash(token),)).rowcount
        == 1
    )
