"""What happens to one message before its rows are written: metadata, spam
verdict, the durable gzip file.

One function, run either in a store worker process (the default, see
L{mailraven.store.workers}) or on a file thread of the server process (the
fallback): both paths give the writer the same L{PreparedMessage}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailraven.envelope import Envelope
from mailraven.store.authresults import withoutForgedResults
from mailraven.store.files import (
    SYNCER,
    SpareFiles,
    StoredFile,
    Syncer,
    newMessageId,
    writeMessageFile,
)
from mailraven.store.metadata import Metadata, extractMetadata


@dataclass(frozen=True)
class PreparedMessage:
    """A message whose file is durable, waiting for its rows."""

    messageId: str
    envelope: Envelope
    stored: StoredFile
    metadata: Metadata
    mailboxes: dict[int, str] | None = None  # per recipient, from spam scoring
    spamScore: float = 0.0


def prepareMessage(
    dataDir: str,
    level: int,
    scorer: Any,
    senderLists: Any,
    envelope: Envelope,
    raw: bytes,
    sync: bool = True,
    syncer: Syncer = SYNCER,
    spares: SpareFiles | None = None,
) -> PreparedMessage:
    """
    Score C{raw} (may raise L{SpamRejected}: nothing is written then), add our
    headers (first removing Authentication-Results that claim to be ours),
    write the file (not yet durable unless C{sync}: see
    L{mailraven.store.files.syncFiles}), into one of C{spares} if one is left.
    Blocking: never on the reactor thread.
    """
    metadata = extractMetadata(raw)
    mailboxes, spamScore = None, 0.0
    if scorer is not None and envelope.outbound is None:
        verdict = scorer.judge(envelope, metadata.headers, senderLists)
        raw = afterReturnPath(raw, verdict.headers(scorer.junkScore))
        mailboxes, spamScore = verdict.mailboxes, verdict.score
    raw = withoutForgedResults(raw, envelope.authservId)  # RFC 8601 5
    if envelope.auth is not None:
        raw = afterReturnPath(raw, envelope.auth.header())
    spare = spares.take() if spares is not None else None
    messageId = spare or newMessageId()
    stored = writeMessageFile(
        dataDir, messageId, raw, level, sync, syncer, spare is not None
    )
    return PreparedMessage(messageId, envelope, stored, metadata, mailboxes, spamScore)


def afterReturnPath(raw: bytes, headers: bytes) -> bytes:
    """Return-Path stays the first line (RFC 5321 4.4); ours come right after."""
    if raw.startswith(b"Return-Path:"):
        end = raw.find(b"\n") + 1
        return raw[:end] + headers + raw[end:]
    return headers + raw
