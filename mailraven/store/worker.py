"""A store worker process: stores received messages for the server process,
which keeps the SMTP sessions. Per message: metadata, spam verdict, the
durable gzip file; then the rows of every message that arrived together,
committed in one transaction (the worker's group commit) before any of them
is answered, so the server says 250 only for committed mail.

Why a process: in one process the reactor, the file threads and the writer
take turns on one GIL, and the machine stayed a quarter idle while mail
waited (docs/performance.md). A worker has its own interpreter.

Started by L{mailraven.store.workers.StoreWorkers} as ``python -m
mailraven.store.worker``. It speaks length-prefixed pickles on stdin and
stdout (both ends are our own code) and exits at the end of its input. It
ignores SIGINT and SIGTERM: the server decides when it stops, after the
messages in flight; when the server dies the kernel kills the worker too
(L{dieWithTheServer}).
It imports nothing of Twisted, so it starts in a fraction of a second.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import pickle
import select
import signal
import sqlite3
import struct
import sys
import traceback
from typing import Any

from mailraven.policy.scoring import SenderLists, SpamRejected
from mailraven.store.files import (
    SpareFiles,
    Syncer,
    removeMessageFile,
    startWriteback,
    syncFiles,
)
from mailraven.store.prepare import PreparedMessage, prepareMessage
from mailraven.store.rows import insertMessage
from mailraven.store.senderlists import loadSenderLists
from mailraven.store.sqlite import commitBatch, connect

HEADER = struct.Struct("!I")
READ_SIZE = 1 << 20
MAX_BATCH = 64


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    dataDir: str
    dbPath: str
    compressionLevel: int
    scorer: Any  # a detached SpamScorer, or None
    syncer: Syncer = dataclasses.field(default_factory=Syncer)


class FrameReader:
    """Length-prefixed frames from a file descriptor, many per read."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self.eof = False

    def frames(self, block: bool) -> list[Any]:
        """
        The complete frames now buffered, reading first: waiting for input if
        C{block} and nothing is buffered, else only what is already there.
        """
        if block and not self._complete():
            while not self.eof and not self._complete():
                self._read()
        elif not block and select.select([self._fd], [], [], 0)[0]:
            self._read()
        out = []
        while self._complete():
            (length,) = HEADER.unpack_from(self._buffer)
            out.append(pickle.loads(self._buffer[HEADER.size : HEADER.size + length]))
            del self._buffer[: HEADER.size + length]
        return out

    def _read(self) -> None:
        data = os.read(self._fd, READ_SIZE)
        if not data:
            self.eof = True
        self._buffer += data

    def _complete(self) -> bool:
        if len(self._buffer) < HEADER.size:
            return False
        (length,) = HEADER.unpack_from(self._buffer)
        return len(self._buffer) >= HEADER.size + length


def encodeFrame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def writeAll(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Preparer:
    """The worker's state: settings, its database connection, its own copy of
    the sender lists."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._conn: sqlite3.Connection | None = None
        self.senderLists = SenderLists(self._loadLists)
        self._generation = 0
        self.spares = SpareFiles(settings.dataDir, settings.syncer)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.settings.dbPath)
        return self._conn

    def _loadLists(self) -> dict:
        return loadSenderLists(self.conn)

    def handle(self, requests: list[tuple]) -> list[tuple]:
        """
        Prepare every message of C{requests}, then commit the rows of all
        that succeeded in one transaction (this worker's group commit). One
        answer per request, in order, after one ("commit", seconds, count).

        A message alone in the server (no other in any worker) has its rows
        inserted while the kernel writes its file back (L{startWriteback});
        its C{fdatasync} comes after them, just before COMMIT, and finds less
        left to do. Otherwise the files sync first: with other mail in
        flight, the write lock that other workers wait for is not held while
        files sync.
        """
        answers: dict[int, tuple] = {}
        prepared: list[tuple[int, PreparedMessage]] = []
        for request in requests:
            rid, outcome = self._prepareOne(request)
            if isinstance(outcome, PreparedMessage):
                prepared.append((rid, outcome))
            else:
                answers[rid] = outcome
        beforeCommit = None
        if len(prepared) == 1 and len(requests) == 1 and requests[0][-1]:
            lone = prepared[0][1]
            startWriteback(self.settings.dataDir, lone.stored.relpath)
            beforeCommit = functools.partial(self._durable, [lone])
        else:
            prepared = self._syncedFirst(prepared, answers)
        if prepared:
            results, seconds, _ = commitBatch(
                self.conn,
                self.settings.dbPath,
                [lambda c, p=p: insertMessage(c, p) for _, p in prepared],
                set(),  # synced by _durable, before the commit
                _Failed.capture,
                self.settings.syncer,
                beforeCommit,
            )
            for (rid, message), result in zip(prepared, results, strict=True):
                if isinstance(result, _Failed):
                    removeMessageFile(self.settings.dataDir, message.stored.relpath)
                    answers[rid] = ("error", rid, result.text)
                else:
                    answers[rid] = ("ok", rid, result, message.spamScore)
        out = [answers[request[1]] for request in requests]
        if prepared:  # first: the server counts the commit before it answers
            out.insert(0, ("commit", seconds, len(prepared)))
        return out

    def _syncedFirst(
        self, prepared: list[tuple[int, PreparedMessage]], answers: dict[int, tuple]
    ) -> list[tuple[int, PreparedMessage]]:
        """L{_durable} now; if that fails, so does every message of the batch."""
        try:
            self._durable([p for _, p in prepared])
        except OSError:
            text = traceback.format_exc()
            for rid, message in prepared:
                removeMessageFile(self.settings.dataDir, message.stored.relpath)
                answers[rid] = ("error", rid, text)
            return []
        return prepared

    def _durable(self, prepared: list[PreparedMessage]) -> None:
        """
        fdatasync the batch's files together (L{syncFiles}), then fsync the
        directories of those not written into spares. If that fails, every
        message of the batch fails (451 to its client) and its file goes.
        """
        syncFiles(
            self.settings.dataDir,
            [p.stored.relpath for p in prepared],
            self.settings.syncer,
        )
        for directory in {p.stored.directory for p in prepared} - {None}:
            self.settings.syncer.directory(directory)

    def _prepareOne(self, request: tuple) -> tuple[int, PreparedMessage | tuple]:
        """The prepared message, or the answer that says why there is none."""
        _, rid, generation, envelope, path, tail, _ = request
        if generation != self._generation:
            self._generation = generation
            self.senderLists.changed()  # an account trained its lists
        try:
            return rid, prepareMessage(
                self.settings.dataDir,
                self.settings.compressionLevel,
                self.settings.scorer,
                self.senderLists,
                envelope,
                _joined(path, tail),
                sync=False,  # the batch is made durable together: _durable
                syncer=self.settings.syncer,
                spares=self.spares,
            )
        except SpamRejected as e:
            return rid, ("spam", rid, e.score, e.rules)
        except Exception:
            return rid, ("error", rid, traceback.format_exc())


class _Failed:
    """A work that did not commit, as the worker reports it."""

    def __init__(self, text: str) -> None:
        self.text = text

    @classmethod
    def capture(cls) -> _Failed:
        return cls(traceback.format_exc())


def _joined(path: str | None, tail: bytes) -> bytes:
    """The message: the spool's temp file (ours now: removed) and the rest."""
    if path is None:
        return tail
    try:
        with open(path, "rb") as f:
            return f.read() + tail
    finally:
        os.unlink(path)


SERVER_PID = "MAILRAVEN_STORE_SERVER_PID"
PR_SET_PDEATHSIG = 1


def dieWithTheServer() -> None:
    """
    Linux: the kernel SIGKILLs this worker the moment the server dies. A
    server that was SIGKILLed and restarted at once moves files without rows
    to lost+found at start; a worker of the old server that went on to
    commit rows for such a file afterwards would leave rows without files.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the closed pipe still ends the worker
    if os.getppid() != int(os.environ.get(SERVER_PID, os.getppid())):
        os._exit(0)  # the server died before we asked


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    dieWithTheServer()
    results = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to the log, never into the results
    reader = FrameReader(0)
    first = reader.frames(block=True)
    if not first:
        return 0
    settings, waiting = first[0], first[1:]
    preparer = Preparer(settings)
    try:
        preparer.spares.make()
    except OSError:
        pass  # none yet: messages get new files, and take() tries again
    writeAll(results, encodeFrame(("ready", os.getpid())))
    try:
        while True:
            # Everything that arrived while the last batch was committing is
            # the next batch (group commit), up to MAX_BATCH.
            waiting += reader.frames(block=not waiting)
            if not waiting:
                return 0  # end of input: the server is done with us
            batch, waiting = waiting[:MAX_BATCH], waiting[MAX_BATCH:]
            answers = preparer.handle(batch)
            writeAll(results, b"".join(encodeFrame(a) for a in answers))
    finally:
        preparer.spares.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the server is gone; what we committed stays
        sys.exit(0)
