"""Message bytes as they arrive during DATA.

Small messages stay in memory; past C{memoryLimit} the bytes are appended to a
temp file by a thread of the store's pool, so a 25 MB message never sits whole
in memory and the reactor never writes to disk.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Iterator

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

READ_SIZE = 1 << 20


class Spool:
    def __init__(
        self, tmpDir: str, reactor: Any, pool: Any, memoryLimit: int = 1 << 20
    ) -> None:
        self._tmpDir = tmpDir
        self._reactor = reactor
        self._pool = pool
        self._memoryLimit = memoryLimit
        self._chunks: list[bytes] = []
        self._buffered = 0
        self.size = 0
        self.path: str | None = None
        self._pending: Deferred = succeed(None)

    def write(self, data: bytes) -> Deferred | None:
        """
        Add C{data}. Returns a Deferred when bytes went to the disk thread: the
        caller should stop reading from the network until it fires.
        """
        self._chunks.append(data)
        self._buffered += len(data)
        self.size += len(data)
        if self._buffered < self._memoryLimit:
            return None
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        spilled: Deferred = Deferred()

        def spill(_: object) -> Deferred:
            d = deferToThreadPool(self._reactor, self._pool, self._spill, chunks)
            d.chainDeferred(spilled)
            return d

        self._pending.addCallback(spill)
        self._pending = spilled
        return spilled

    def finished(self) -> Deferred:
        """Fires when every spilled chunk is on the temp file."""
        done: Deferred = Deferred()
        self._pending.addBoth(lambda r: (done.callback(r), r)[1])
        return done

    def _spill(self, chunks: list[bytes]) -> None:
        if self.path is None:
            fd, self.path = tempfile.mkstemp(prefix="data-", dir=self._tmpDir)
            os.close(fd)
        with open(self.path, "ab") as f:
            f.writelines(chunks)

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
        self.path, self._chunks = None, []
        return path, tail

    def discard(self) -> None:
        """Forget the bytes; removes the temp file (blocking: call from a thread)."""
        self._chunks = []
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
