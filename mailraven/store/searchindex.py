"""The search index: one contentless FTS5 table per account (schema 11).

Why one table each: FTS5's bm25() takes its statistics (how many documents
there are, how many hold a term, their average length) from the whole table.
With every account in one table (schemas 9 and 10 gave each account a range
of rowids), another account's mail moved this account's scores, and with them
the order and relevance of its results: by searching two words and comparing,
a user could learn whether anyone else's mail held a word. And a removed
account's documents stayed in its range, to be counted in C{total_matches} by
the next account given the same id. Now a search reads its account's table
and nothing else, and removing the account drops the table.

A document's rowid is the message's C{search_docs} id (growing with arrival),
shared by the tables of every account that received the message. The index
holds tokens and positions, not the text, which stays in the message file.
"""

from __future__ import annotations

import sqlite3

COLUMNS = ("sender", "recipients", "subject", "body")
# unicode61 with diacritics folded: "Büdget" finds "budget"
TABLE_OPTIONS = "content = '', tokenize = 'unicode61 remove_diacritics 2'"


def searchTable(userId: int) -> str:
    """The index table of account C{userId} (an integer: safe in SQL text)."""
    return f"search_u{int(userId)}"


def createSearchTable(conn: sqlite3.Connection, userId: int) -> None:
    conn.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {searchTable(userId)}"
        f" USING fts5({', '.join(COLUMNS)}, {TABLE_OPTIONS})"
    )


def dropSearchTable(conn: sqlite3.Connection, userId: int) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {searchTable(userId)}")


def indexDocument(
    conn: sqlite3.Connection, userId: int, docId: int, values: tuple[str, ...]
) -> None:
    """
    Add document C{docId} (C{values}: one text per column of L{COLUMNS}) to
    the account's table, creating the table if the account has none yet (an
    account added before its table was made at creation).
    """
    sql = (
        f"INSERT INTO {searchTable(userId)} (rowid, {', '.join(COLUMNS)})"
        " VALUES (?, ?, ?, ?, ?)"
    )
    try:
        conn.execute(sql, (docId, *values))
    except sqlite3.OperationalError as e:
        if not isMissingTable(e):
            raise
        createSearchTable(conn, userId)
        conn.execute(sql, (docId, *values))


def isMissingTable(error: sqlite3.OperationalError) -> bool:
    return str(error).startswith("no such table")
