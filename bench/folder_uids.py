#!/usr/bin/env python3
"""The CPU cost of a message's rows on the delivery hot path: N messages
written through L{mailraven.store.rows.insertMessage} in transactions of 20
(a group commit), median of rounds.

Only the rows: no files, no fsync (synchronous = OFF): what the SQL itself
costs the writer thread or a store worker per message. Compare two checkouts
by running it with each on PYTHONPATH, alternately (what IMAP UIDs cost,
schema 16, was measured so: docs/performance.md).

Usage: PYTHONPATH=<checkout> python3 bench/folder_uids.py [--messages 5000]
       [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime

from mailraven.envelope import Envelope, Recipient
from mailraven.store.files import StoredFile, newMessageId
from mailraven.store.metadata import Metadata
from mailraven.store.prepare import PreparedMessage
from mailraven.store.rows import insertMessage
from mailraven.store.sqlite import openDatabase
from mailraven.store.users import addUser

BATCH = 20


def _prepared(userId: int) -> PreparedMessage:
    messageId = newMessageId()
    envelope = Envelope(
        mailFrom="sender@example.org",
        recipients=[Recipient("u@example.test", userId)],
        receivedAt=datetime.now(UTC),
    )
    stored = StoredFile(f"messages/{messageId}.eml.gz", 1024, 600, "0" * 64, None)
    metadata = Metadata(
        headerFrom="sender@example.org",
        headerTo="u@example.test",
        subject="a subject of some words",
        snippet="the first words of the body",
        text="the first words of the body and a few more of them " * 4,
    )
    return PreparedMessage(messageId, envelope, stored, metadata)


def _run(messages: int) -> float:
    """Microseconds per message for the rows of C{messages} messages."""
    directory = tempfile.mkdtemp(prefix="folder-uids-")
    conn = openDatabase(os.path.join(directory, "mailraven.db"))
    conn.execute("PRAGMA synchronous = OFF")
    userId = addUser(conn, "u@example.test", "x")
    prepared = [_prepared(userId) for _ in range(messages)]
    started = time.perf_counter()
    for first in range(0, messages, BATCH):
        conn.execute("BEGIN IMMEDIATE")
        for message in prepared[first : first + BATCH]:
            insertMessage(conn, message)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times = [_run(args.messages) for _ in range(args.rounds)]
    print(
        f"{statistics.median(times):.1f} us/message"
        f" (rounds: {', '.join(f'{t:.1f}' for t in times)})"
    )


if __name__ == "__main__":
    main()
