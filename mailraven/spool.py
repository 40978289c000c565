"""Message bytes as they arrive during DATA.

Small messages stay in memory; past C{memoryLimit} for one message, or once
all spools together hold the shared L{MemoryBudget}, the bytes are appended to
a temp file by a thread of the store's pool. So a 25 MB message never sits
whole in memory, 500 sessions in DATA hold at most the budget between them,
and the reactor never writes to disk.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any, Iterator

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

READ_SIZE = 1 << 20


class MemoryBudget:
    """
    The bytes all spools together may keep in memory (C{smtp.spool_memory}).
    C{used} never exceeds C{capacity}; C{peak} is the most it has been.
    Spools release from pool threads too, hence the lock.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        """Take C{size} bytes if they fit; False (nothing taken) if not."""
        with self._lock:
            if self.used + size > self.capacity:
                return False
            self.used += size
            self.peak = max(self.peak, self.used)
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.used -= size


class Spool:
    def __init__(
        self,
        tmpDir: str,
        reactor: Any,
        pool: Any,
        memoryLimit: int = 1 << 20,
        budget: MemoryBudget | None = None,
    ) -> None:
        self._tmpDir = tmpDir
        self._reactor = reactor
        self._pool = pool
        self._memoryLimit = memoryLimit
        self._budget = budget
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._reserved = 0  # of _buffered, the part taken from the budget
        self.size = 0
        self.path: str | None = None
        self._pending: Deferred = succeed(None)

    def write(self, data: bytes) -> Deferred | None:
        """
        Add C{data}. Returns a Deferred when bytes went to the disk thread: the
        caller should stop reading from the network until it fires.
        """
        self.size += len(data)
        if self._buffered + len(data) < self._memoryLimit and self._reserve(data):
            self._chunks.append(data)
            self._buffered += len(data)
            return None
        chunks, reserved = self._chunks + [data], self._reserved
        self._chunks, self._buffered, self._reserved = [], 0, 0
        spilled: Deferred = Deferred()

        def spill(_: object) -> Deferred:
            d = deferToThreadPool(
                self._reactor, self._pool, self._spill, chunks, reserved
            )
            d.chainDeferred(spilled)
            return d

        self._pending.addCallback(spill)
        self._pending = spilled
        return spilled

    def _reserve(self, data: bytes) -> bool:
        if self._budget is None:
            return True
        if not self._budget.reserve(len(data)):
            return False
        self._reserved += len(data)
        return True

    def _release(self) -> None:
        reserved, self._reserved = self._reserved, 0
        if self._budget is not None and reserved:
            self._budget.release(reserved)

    def finished(self) -> Deferred:
        """Fires when every spilled chunk is on the temp file."""
        done: Deferred = Deferred()
        self._pending.addBoth(lambda r: (done.callback(r), r)[1])
        return done

    def _spill(self, chunks: list[bytes], reserved: int) -> None:
        try:
            if self.path is None:
                fd, self.path = tempfile.mkstemp(prefix="data-", dir=self._tmpDir)
                os.close(fd)
            with open(self.path, "ab") as f:
                f.writelines(chunks)
        finally:
            if self._budget is not None and reserved:
                self._budget.release(reserved)

    def chunks(self) -> Iterator[bytes]:
        """The message bytes in order (call from a pool thread once finished)."""
        if self.path is not None:
            with open(self.path, "rb") as f:
                while chunk := f.read(READ_SIZE):
                    yield chunk
        yield from self._chunks

    def handOver(self) -> tuple[str | None, bytes]:
        """
        The temp file (if any) and the bytes after it, for another process that
        now owns them and removes the file; this spool is left empty.
        """
        path, tail = self.path, b"".join(self._chunks)
        self.path, self._chunks, self._buffered = None, [], 0
        self._release()
        return path, tail

    def discard(self) -> None:
        """Forget the bytes; removes the temp file (blocking: call from a thread)."""
        self._chunks, self._buffered = [], 0
        self._release()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = None


def memorySpool(data: bytes) -> Spool:
    """A spool already holding C{data} (tests, the API's send path)."""
    spool = Spool("", None, None, memoryLimit=len(data) + 1)
    spool.write(data)
    return spool
