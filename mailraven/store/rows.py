"""The rows of one received message (Twisted-free: the server's writer thread
and the store worker processes both write them)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from mailraven.store.files import newMessageId
from mailraven.store.prepare import PreparedMessage
from mailraven.store.searchindex import indexDocument


def utcNow() -> str:
    """The timestamp format of every *_at column: sorts as text."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def enterFolder(conn: Any, userId: int, mailbox: str) -> tuple[int, int]:
    """
    The (UID, MODSEQ) of an entry about to enter the folder: taken from its
    UIDNEXT and HIGHESTMODSEQ in one statement (the delivery hot path: a
    trigger doing the same cost a third more per entry, bench/folder_uids.py).
    UIDNEXT only grows, so a UID is never handed out twice. A folder the
    account does not have (or no such account) is an IntegrityError, as the
    entry's foreign keys would be.
    """
    row = conn.execute(
        "UPDATE folders SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
        " WHERE user_id = ? AND mailbox = ? RETURNING uidnext - 1, highestmodseq",
        (userId, mailbox),
    ).fetchone()
    if row is None:
        raise sqlite3.IntegrityError(f"account {userId} has no folder {mailbox!r}")
    return row[0], row[1]


def insertMessage(conn: Any, prepared: PreparedMessage) -> str:
    envelope, meta, stored = prepared.envelope, prepared.metadata, prepared.stored
    receivedAt = envelope.receivedAt.isoformat(timespec="microseconds")
    conn.execute(
        "INSERT INTO messages (id, path, size, stored_size, sha256, received_at,"
        " mail_from, rcpt_to, helo, peer_ip, header_from, header_to, subject, date,"
        " message_id, snippet, attachments, has_attachments, auth_results,"
        " spam_score) VALUES (" + ", ".join("?" * 20) + ")",
        (
            prepared.messageId,
            stored.relpath,
            stored.size,
            stored.storedSize,
            stored.sha256,
            receivedAt,
            envelope.mailFrom,
            json.dumps([r.address for r in envelope.recipients]),
            envelope.helo,
            envelope.peerIP,
            meta.headerFrom,
            meta.headerTo,
            meta.subject,
            meta.date,
            meta.messageId,
            meta.snippet,
            json.dumps(meta.attachments),
            bool(meta.attachments),
            json.dumps(envelope.auth.asDict()) if envelope.auth is not None else None,
            prepared.spamScore,
        ),
    )
    for r in envelope.recipients:
        mailbox = r.mailbox or (prepared.mailboxes or {}).get(
            r.userId, envelope.mailbox
        )
        uid, modseq = enterFolder(conn, r.userId, mailbox)
        conn.execute(
            "INSERT INTO mailbox_entries (id, message_id, user_id, recipient, mailbox,"
            " read_state, received_at, updated_at, tag, uid, modseq, size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                newMessageId(),
                prepared.messageId,
                r.userId,
                r.address,
                mailbox,
                envelope.seen if r.seen is None else r.seen,
                receivedAt,
                receivedAt,
                r.tag or None,
                uid,
                modseq,
                stored.size,
            ),
        )
    docId = conn.execute(
        "INSERT INTO search_docs (message_id, received_at) VALUES (?, ?)",
        (prepared.messageId, receivedAt),
    ).lastrowid
    # one index document per account, in the account's own table
    # (searchindex): its search neither reads nor counts anyone else's mail
    owners = dict.fromkeys(r.userId for r in envelope.recipients)
    sender = f"{meta.headerFrom} {envelope.mailFrom}"
    recipients = " ".join([meta.headerTo] + [r.address for r in envelope.recipients])
    texts = (sender, recipients, meta.subject, meta.text)
    for userId in owners:
        indexDocument(conn, userId, docId, texts)
    if envelope.outbound:
        queueId = newMessageId()
        conn.execute(
            "INSERT INTO outbound_queue (id, user_id, message_id, mail_from, rcpt_to,"
            " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                queueId,
                envelope.recipients[0].userId,
                prepared.messageId,
                envelope.mailFrom,
                json.dumps(envelope.outbound),
                receivedAt,
                receivedAt,
            ),
        )
        conn.executemany(
            "INSERT OR IGNORE INTO outbound_recipients (queue_id, rcpt, updated_at)"
            " VALUES (?, ?, ?)",
            [(queueId, rcpt, receivedAt) for rcpt in envelope.outbound],
        )
    return prepared.messageId
