"""The SQLite + gzip-file message store (L{IMessageStore})."""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailraven.envelope import Envelope
from mailraven.interfaces import IMessageStore
from mailraven.policy.scoring import SenderLists, SpamRejected
from mailraven.spool import Spool
from mailraven.store.db import Database
from mailraven.store.files import SYNCER, Syncer, readMessageFile, removeMessageFile
from mailraven.store.prepare import PreparedMessage, prepareMessage
from mailraven.store.rows import insertMessage, utcNow
from mailraven.store.senderlists import loadSenderLists

MAILBOXES = ("inbox", "archive", "junk", "trash", "sent", "drafts")
_ENTRY_COLUMNS = """
    e.id, e.message_id AS file_id, e.recipient, e.mailbox, e.read_state, e.starred,
    e.received_at, m.mail_from, m.header_from, m.subject, m.snippet, m.size,
    m.has_attachments, m.spam_score, m.message_id, m.path, m.attachments,
    m.auth_results
"""


@implementer(IMessageStore)
class SQLiteMessageStore:
    """
    Files are compressed and fsynced in C{filePool} (several at once: zlib and
    fsync release the GIL), rows are committed by the database's single writer.
    """

    log = Logger()

    def __init__(
        self,
        db: Database,
        dataDir: str,
        reactor: Any,
        filePool: Any,
        compressionLevel: int = 6,
        scorer: Any = None,
        workers: Any = None,
        syncer: Syncer = SYNCER,
    ) -> None:
        self._syncer = syncer
        self._scorer = scorer
        self._workers = workers  # StoreWorkers, or None: prepare on threads
        self.senderLists = SenderLists(lambda: db.readHere(loadSenderLists))
        self._db = db
        self._dataDir = dataDir
        self._reactor = reactor
        self._pool = filePool
        self._level = compressionLevel
        # Called after a commit that queued outbound mail (the queue's kick).
        self.onOutbound: Callable[[], None] | None = None

    def deliver(self, envelope: Envelope, spool: Spool) -> Deferred:
        committed: Deferred = Deferred()
        finished = spool.finished()
        finished.addCallback(lambda _: self._dispatch(envelope, spool, committed))
        finished.addErrback(committed.errback)
        if envelope.outbound and self.onOutbound is not None:
            committed.addCallback(self._queued)
        return committed

    def _queued(self, messageId: str) -> str:
        self.onOutbound()  # the outbound queue runs now instead of at its poll
        return messageId

    def _dispatch(self, envelope: Envelope, spool: Spool, committed: Deferred) -> None:
        if self._workers is None or not self._workers.available():
            self._pool.callInThread(self._prepareAndQueue, envelope, spool, committed)
            return
        size = spool.size
        path, tail = spool.handOver()  # the worker owns (and removes) the file
        prepared = self._workers.prepare(
            ("prepare", self.senderLists.generation, envelope, path, tail), size
        )
        prepared.addCallbacks(
            self._fromWorker,
            self._workerFailed,
            callbackArgs=(envelope, committed),
            errbackArgs=(committed,),
        )

    def _fromWorker(
        self, answer: tuple[str, float], envelope: Envelope, committed: Deferred
    ) -> None:
        """The worker committed the message's rows: C{answer} is (id, score)."""
        messageId, spamScore = answer
        if self._scorer is not None and envelope.outbound is None:
            self._scorer.observe(spamScore)
        committed.callback(messageId)

    def _workerFailed(self, failure: Failure, committed: Deferred) -> None:
        if self._scorer is not None and failure.check(SpamRejected):
            self._scorer.observe(failure.value.score)
        committed.errback(failure)

    def _queueRows(self, prepared: PreparedMessage, committed: Deferred) -> None:
        """Hand the rows to the writer (any thread); it fires C{committed}."""
        self._db.write(
            lambda conn: insertMessage(conn, prepared),
            prepared.stored.directory,
            lambda: removeMessageFile(self._dataDir, prepared.stored.relpath),
            result=committed,
        )

    def _prepareAndQueue(
        self, envelope: Envelope, spool: Spool, committed: Deferred
    ) -> None:
        """
        On a file thread: write the file, then hand its rows straight to the
        writer thread, which fires C{committed}: one trip through the reactor
        per message, not three.
        """
        try:
            prepared = self._prepare(envelope, spool)
        except BaseException:
            self._reactor.callFromThread(committed.errback, Failure())
            return
        self._queueRows(prepared, committed)

    def _prepare(self, envelope: Envelope, spool: Spool) -> PreparedMessage:
        # Whole in memory here, on a file thread: the metadata scan needs it.
        # Bounded by smtp.max_message_size times store.threads.
        try:
            raw = b"".join(spool.chunks())
        finally:
            spool.discard()
        return prepareMessage(
            self._dataDir,
            self._level,
            self._scorer,
            self.senderLists,
            envelope,
            raw,
            syncer=self._syncer,
        )

    def get(self, entryId: str, userId: int) -> Deferred:
        def work(conn):
            row = conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM mailbox_entries e JOIN messages m"
                " ON m.id = e.message_id WHERE e.id = ? AND e.user_id = ?",
                (entryId, userId),
            ).fetchone()
            if row is None:
                return None
            entry = _entry(row)
            entry["raw"] = readMessageFile(self._dataDir, row["path"])
            return entry

        return self._db.read(work)

    def list(self, userId: int, mailbox: str, limit: int, offset: int) -> Deferred:
        def work(conn):
            rows = conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM mailbox_entries e JOIN messages m"
                " ON m.id = e.message_id WHERE e.user_id = ? AND e.mailbox = ?"
                " ORDER BY e.received_at DESC, e.id DESC LIMIT ? OFFSET ?",
                (userId, mailbox, limit, offset),
            ).fetchall()
            return [_entry(row) for row in rows]

        return self._db.read(work)

    def updateFlags(self, entryId: str, userId: int, flags: dict) -> Deferred:
        unknown = set(flags) - {"read_state", "starred", "mailbox"}
        if unknown or flags.get("mailbox", "inbox") not in MAILBOXES:
            raise ValueError(f"bad flags: {flags!r}")

        def work(conn):
            assignments = ", ".join(f"{name} = ?" for name in flags)
            cursor = conn.execute(
                f"UPDATE mailbox_entries SET {assignments}, updated_at = ?"
                " WHERE id = ? AND user_id = ?",
                (*flags.values(), utcNow(), entryId, userId),
            )
            return cursor.rowcount == 1

        return self._db.write(work)

    def delete(self, entryId: str, userId: int) -> Deferred:
        return self.updateFlags(entryId, userId, {"mailbox": "trash"})


def _entry(row: Any) -> dict[str, Any]:
    entry = dict(row)
    entry["read_state"] = bool(entry["read_state"])
    entry["starred"] = bool(entry["starred"])
    entry["has_attachments"] = bool(entry["has_attachments"])
    entry["attachments"] = json.loads(entry["attachments"])
    del entry["path"]
    return entry
