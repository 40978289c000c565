"""A store worker process: prepares messages (metadata, spam verdict, the
durable gzip file) for the server process, which keeps the SMTP protocol and
the single SQLite writer.

Why a process: in one process the reactor, the file threads and the writer
take turns on one GIL, and the machine stayed a quarter idle while mail
waited (docs/performance.md). A worker has its own interpreter.

Started by L{mailraven.store.workers.StoreWorkers} as ``python -m
mailraven.store.worker``. It speaks length-prefixed pickles on stdin and
stdout (both ends are our own code) and exits at the end of its input. It
ignores SIGINT and SIGTERM: the server decides when it stops, after the
messages in flight; a server that dies closes the pipe, and the worker exits.
It imports nothing of Twisted, so it starts in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import sqlite3
import struct
import sys
import traceback
from typing import Any, BinaryIO

from mailraven.policy.scoring import SenderLists, SpamRejected, loadSenderLists
from mailraven.store.prepare import prepareMessage

HEADER = struct.Struct("!I")


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    dataDir: str
    dbPath: str
    compressionLevel: int
    scorer: Any  # a detached SpamScorer, or None


def readFrame(stream: BinaryIO) -> Any:
    """The next object, or None at the end of the input."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (length,) = HEADER.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        return None
    return pickle.loads(data)


def encodeFrame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def writeAll(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Preparer:
    """The worker's state: settings and its own copy of the sender lists."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._conn: sqlite3.Connection | None = None
        self.senderLists = SenderLists(self._loadLists)
        self._generation = 0

    def _loadLists(self) -> dict:
        if self._conn is None:
            self._conn = sqlite3.connect(self.settings.dbPath, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout = 10000")
            self._conn.execute("PRAGMA query_only = ON")
        return loadSenderLists(self._conn)

    def handle(self, request: tuple) -> tuple:
        _, rid, generation, envelope, path, tail = request
        if generation != self._generation:
            self._generation = generation
            self.senderLists.changed()  # an account trained its lists
        try:
            raw = _joined(path, tail)
            prepared = prepareMessage(
                self.settings.dataDir,
                self.settings.compressionLevel,
                self.settings.scorer,
                self.senderLists,
                envelope,
                raw,
            )
        except SpamRejected as e:
            return ("spam", rid, e.score, e.rules)
        except Exception:
            return ("error", rid, traceback.format_exc())
        # The server has the envelope and has no use for the parsed headers.
        return (
            "ok",
            rid,
            dataclasses.replace(
                prepared,
                envelope=None,
                metadata=dataclasses.replace(prepared.metadata, headers=None),
            ),
        )


def _joined(path: str | None, tail: bytes) -> bytes:
    """The message: the spool's temp file (ours now: removed) and the rest."""
    if path is None:
        return tail
    try:
        with open(path, "rb") as f:
            return f.read() + tail
    finally:
        os.unlink(path)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    results = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to the log, never into the results
    requests = sys.stdin.buffer
    settings = readFrame(requests)
    if settings is None:
        return 0
    preparer = Preparer(settings)
    writeAll(results, encodeFrame(("ready", os.getpid())))
    while (request := readFrame(requests)) is not None:
        writeAll(results, encodeFrame(preparer.handle(request)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
