"""SQLite access off the reactor thread: one writer thread with group commit, a
small pool of read connections.

One writer is SQLite's own model (a single write lock); doing every write from
one thread lets us commit the rows of all messages that became ready while the
previous commit was running in a single transaction (group commit), which is
where durable acceptance gets most of its throughput back (docs/performance.md).
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mailraven.store.files import SYNCER, Syncer
from mailraven.store.sqlite import commitBatch, connect, openDatabase

__all__ = ["Database", "connect", "openDatabase"]

T = TypeVar("T")
_STOP = object()
MAX_BATCH = 256


@dataclass(frozen=True)
class WriteRequest:
    work: Callable[[sqlite3.Connection], Any]
    result: Deferred
    syncDirectory: str | None = None
    onFailure: Callable[[], None] | None = None


def _lowerPriority(nice: int) -> None:
    """
    Reads (API listing, search) yield the CPU to mail acceptance: SQLite runs
    without the GIL, so a nicer thread really does give way (Linux: per-thread
    nice values). Best effort elsewhere.
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError:
        pass


class Database(Service):
    """
    The database of one data dir. C{write} work runs on the writer thread inside
    a transaction shared with whatever else is queued; C{read} work runs on the
    read pool.
    """

    log = Logger()
    # 19, not 5: with SMTP saturating both cores, API reads at nice 5 slowed
    # acceptance by 10-17 %, at 19 by 0-8 % (bench/api.py); the API still
    # served 28-34 of the 50 requests/s asked meanwhile, and has all idle CPU.
    # Since the store needs less CPU (2026-12-02) the API serves 47-48 and
    # SMTP beside it is 13-14 % slower: docs/performance.md.
    readNice = 19

    def __init__(
        self,
        path: str,
        reactor: Any,
        readThreads: int = 2,
        onCommit: Callable[[float, int], None] | None = None,
        syncer: Syncer = SYNCER,
    ) -> None:
        self.path = path
        self.syncer = syncer
        self._reactor = reactor
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._readPool = ThreadPool(1, readThreads, name="mailraven-db-read")
        self._local = threading.local()
        self._onCommit = onCommit
        self._writer: threading.Thread | None = None
        self._stopped: Deferred | None = None

    def startService(self) -> None:
        conn = openDatabase(self.path)
        self._writer = threading.Thread(
            target=self._writerLoop, args=(conn,), name="mailraven-db-writer"
        )
        self._writer.start()
        self._readPool.start()
        super().startService()

    def stopService(self) -> Deferred:
        """Drain queued writes, then close; fires when the writer has exited."""
        super().stopService()
        self._stopped = Deferred()
        self._queue.put(_STOP)
        self._readPool.stop()
        return self._stopped

    def write(
        self,
        work: Callable[[sqlite3.Connection], T],
        syncDirectory: str | None = None,
        onFailure: Callable[[], None] | None = None,
        result: Deferred | None = None,
    ) -> Deferred:
        """
        Run C{work(conn)} in the next group-committed transaction; the Deferred
        fires with its result after COMMIT, or fails with its exception (its
        changes rolled back, the other work in the batch unaffected).
        C{syncDirectory} is fsynced before that COMMIT (once per batch however
        many writes name it): the entries of files the rows refer to.
        C{onFailure} runs on the writer thread if the work does not commit.
        Safe to call from any thread; one that is not the reactor's passes
        C{result}, a Deferred nothing else touches until it fires.
        """
        d: Deferred = Deferred() if result is None else result
        self._queue.put(WriteRequest(work, d, syncDirectory, onFailure))
        return d

    def read(self, work: Callable[[sqlite3.Connection], T]) -> Deferred:
        """Run C{work(conn)} on a read connection of the pool."""
        return deferToThreadPool(self._reactor, self._readPool, self._readWith, work)

    def readHere(self, work: Callable[[sqlite3.Connection], T], nice: int = 0) -> T:
        """Run C{work} now, on this (non-reactor) thread's own read connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path, readOnly=True)
            _lowerPriority(nice)
        return work(conn)

    def _readWith(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self.readHere(work, self.readNice)

    def _writerLoop(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [item for item in batch if item is not _STOP]
                # Anything queued behind the sentinel is still ours to commit.
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        batch.append(item)
            if batch:
                self._commitBatch(conn, batch)
        conn.close()
        self._reactor.callFromThread(self._stopped.callback, None)

    def _commitBatch(self, conn: sqlite3.Connection, batch: list[WriteRequest]) -> None:
        results, seconds, failed = commitBatch(
            conn,
            self.path,
            [request.work for request in batch],
            {r.syncDirectory for r in batch if r.syncDirectory},
            Failure,
            self.syncer,
        )
        if failed is not None:
            self.log.failure("group commit of {n} items failed", failed, n=len(batch))
        self.reportCommit(seconds, len(batch))
        for request, result in zip(batch, results, strict=True):
            if isinstance(result, Failure) and request.onFailure is not None:
                try:
                    request.onFailure()
                except Exception:
                    self.log.failure("cleanup after a failed write failed")
        # One wake-up of the reactor for the whole batch.
        self._reactor.callFromThread(_fire, batch, results)

    def reportCommit(self, seconds: float, items: int) -> None:
        """A group commit took C{seconds} (here, or in a store worker)."""
        if self._onCommit is not None:
            self._onCommit(seconds, items)


def _fire(batch: list[WriteRequest], results: list[Any]) -> None:
    for request, result in zip(batch, results, strict=True):
        if isinstance(result, Failure):
            request.result.errback(result)
        else:
            request.result.callback(result)
