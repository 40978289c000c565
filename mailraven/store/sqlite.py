"""SQLite connections and the group-commit transaction, without Twisted.

Shared by the server's writer thread (L{mailraven.store.db}) and the store
worker processes (L{mailraven.store.worker}), which commit the rows of the
messages they prepared themselves. Every writer, in any process, takes the
same advisory lock around its transaction: a writer that finds SQLite's lock
taken would otherwise sleep in SQLite's busy handler (1, 2, 5, 10 ms ...),
while a waiter on C{flock} is woken the moment the lock is free.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from mailraven.store.files import SYNCER, Syncer
from mailraven.store.schema import migrate


def connect(path: str, readOnly: bool = False) -> sqlite3.Connection:
    """A connection with the settings every MailRaven connection must use."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    if readOnly:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on stable storage before we answer 250.
        conn.execute("PRAGMA synchronous = FULL")
    return conn


def openDatabase(path: str) -> sqlite3.Connection:
    """Open (creating and migrating if needed) the database for synchronous use."""
    # Password and token hashes live here: a new database is the server's
    # alone whatever the umask (SQLite gives its -wal and -shm the same mode).
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = connect(path)
    migrate(conn)
    return conn


@contextmanager
def writeLock(dbPath: str) -> Iterator[None]:
    """The writers' lock (see the module docstring); blocks without the GIL."""
    fd = os.open(dbPath + "-writelock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def commitBatch(
    conn: sqlite3.Connection,
    dbPath: str,
    works: list[Callable[[sqlite3.Connection], Any]],
    directories: set[str],
    capture: Callable[[], Any],
    syncer: Syncer = SYNCER,
    beforeCommit: Callable[[], None] | None = None,
) -> tuple[list[Any], float, Any]:
    """
    Run every C{work(conn)} in one transaction, each in its own savepoint (one
    that raises is rolled back alone), after fsyncing C{directories} (the
    entries of the files the rows name). Returns each work's result, or
    C{capture()} called in its except clause; the seconds it took; and, when
    the transaction itself failed (every result is then that failure), the
    captured failure, else None.

    C{beforeCommit}, if given, runs after the works and before COMMIT (a
    lone message's file sync, whose writeback ran during the works); if it
    raises, the whole transaction is rolled back.
    """
    started = time.monotonic()
    results: list[Any] = []
    batchFailure = None
    try:
        for directory in directories:
            syncer.directory(directory)
        with writeLock(dbPath):
            conn.execute("BEGIN IMMEDIATE")
            for work in works:
                results.append(_isolated(conn, work, capture))
            if beforeCommit is not None:
                beforeCommit()  # the files and their entries before the rows
            syncer.commit(conn)
    except Exception:
        batchFailure = capture()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        results = [batchFailure] * len(works)
    return results, time.monotonic() - started, batchFailure


def _isolated(conn: sqlite3.Connection, work: Callable, capture: Callable) -> Any:
    conn.execute("SAVEPOINT item")
    try:
        result = work(conn)
    except Exception:
        conn.execute("ROLLBACK TO item")
        conn.execute("RELEASE item")
        return capture()
    conn.execute("RELEASE item")
    return result
