"""The rows of one received message (Twisted-free: the server's writer thread
and the store worker processes both write them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mailraven.store.files import newMessageId
from mailraven.store.prepare import PreparedMessage
from mailraven.store.searchindex import indexDocument


def utcNow() -> str:
    """The timestamp format of every *_at column: sorts as text."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


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
    conn.executemany(
        "INSERT INTO mailbox_entries (id, message_id, user_id, recipient, mailbox,"
        " read_state, received_at, updated_at, tag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                newMessageId(),
                prepared.messageId,
                r.userId,
                r.address,
                r.mailbox or (prepared.mailboxes or {}).get(r.userId, envelope.mailbox),
                envelope.seen if r.seen is None else r.seen,
                receivedAt,
                receivedAt,
                r.tag or None,
            )
            for r in envelope.recipients
        ],
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
