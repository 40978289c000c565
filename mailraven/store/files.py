"""Durable message files: gzip, fdatasync; the directory is fsynced by the
writer thread once per group commit (L{StoredFile.directory}), before the rows
that refer to the file are committed.

A crash before that commit leaves at most a file without a row (never
acknowledged), which start-up moves to lost+found.

A store worker writes most messages into spare files (L{SpareFiles}): empty
files made ahead of need whose directory entries were fsynced when they were
made, so a message's file needs only its data synced before its rows commit.
A crash leaves unused spares behind, empty, which start-up removes.

Message ids are time-ordered UUIDs (version 7 layout) and the two directory
levels come from the millisecond timestamp, so the messages of one group
commit share a directory and one directory fsync, while a directory still
gets only the mail of 256 ms windows some hours apart.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sqlite3
import threading
import time
import uuid
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from isal import isal_zlib

MESSAGES = "messages"


@dataclass(frozen=True)
class StoredFile:
    relpath: str
    size: int
    storedSize: int
    sha256: str
    directory: str | None  # to fsync before the rows commit; None: durable already


def newMessageId() -> str:
    """A UUID with the RFC 9562 version 7 layout: 48-bit ms time, then random."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & (1 << 48) - 1) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (1 << 62) - 1
    return str(uuid.UUID(int=value))


def relativePath(messageId: str) -> str:
    """messages/ab/cd/<id>.eml.gz, ab/cd from the id's timestamp (see above)."""
    return os.path.join(
        MESSAGES, messageId[6:8], messageId[9:11], messageId + ".eml.gz"
    )


def fsyncDirectory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Syncer:
    """
    The three steps that put stored mail on stable storage, in the order the
    store takes them before it answers 250: a message file's data
    (L{file}), the directory entry naming it (L{directory}), the transaction
    of its rows (L{commit}; C{synchronous=FULL} makes COMMIT wait for the
    disk). Both store paths, the worker processes and the in-process
    fallback, take every step through the one they were given, so a test
    can watch that none is skipped and none comes late. Picklable: the
    workers get theirs in their settings.
    """

    def file(self, fd: int) -> None:
        os.fdatasync(fd)  # a new file: its size is flushed too

    def directory(self, path: str) -> None:
        fsyncDirectory(path)

    def commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")


SYNCER = Syncer()


_known: set[str] = set()
_knownLock = threading.Lock()


def ensureDirectory(root: str, relative: str, syncer: Syncer = SYNCER) -> str:
    """Create C{root/relative}; each new directory's entry is fsynced in its parent."""
    full = os.path.join(root, relative)
    if full in _known:
        return full
    path = root
    for part in relative.split(os.sep):
        parent, path = path, os.path.join(path, part)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        syncer.directory(parent)
    with _knownLock:
        _known.add(full)
    return path


SPARES = 32  # a worker's spare files (SpareFiles)


class SpareFiles:
    """
    Message files made ahead of need: empty, each named for the message id it
    will carry, their directory entries already fsynced. Writing a message
    into one leaves only its data to sync (C{fdatasync} flushes the new size
    with it), so a lone message waits for no directory fsync. New spares are
    made on a thread of their own when half are used, one directory fsync
    per batch of them; an id is handed out only after that fsync. One per
    worker process.
    """

    def __init__(self, root: str, syncer: Syncer = SYNCER, count: int = SPARES):
        self._root = root
        self._syncer = syncer
        self._count = count
        self._ids: deque[str] = deque()  # appended by the maker thread
        self._maker = ThreadPoolExecutor(1, thread_name_prefix="spares")
        self._making: Future | None = None

    def take(self) -> str | None:
        """The message id of a spare file, now the caller's; None if none is left."""
        if len(self._ids) <= self._count // 2 and (
            self._making is None or self._making.done()
        ):
            self._making = self._maker.submit(self.make)
        try:
            return self._ids.popleft()
        except IndexError:
            return None

    def make(self) -> None:
        """Make spares up to the count (blocking); each directory fsynced once."""
        ids, directories = [], set()
        try:
            for _ in range(self._count - len(self._ids)):
                messageId = newMessageId()
                relpath = relativePath(messageId)
                directory = ensureDirectory(
                    self._root, os.path.dirname(relpath), self._syncer
                )
                directories.add(directory)
                ids.append(messageId)
                path = os.path.join(self._root, relpath)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            for directory in directories:
                self._syncer.directory(directory)
        except OSError:
            for messageId in ids:  # not durable: never used, not left behind
                _unlinkQuietly(os.path.join(self._root, relativePath(messageId)))
            raise
        self._ids.extend(ids)

    def close(self) -> None:
        """Remove the spares not taken (blocking)."""
        self._maker.shutdown(wait=True)
        while self._ids:
            _unlinkQuietly(os.path.join(self._root, relativePath(self._ids.popleft())))


def isalLevel(level: int) -> int:
    """
    The ISA-L level (1..3) for a configured gzip level (1..9): 1-3 -> 1,
    4-6 -> 2, 7-9 -> 3. ISA-L (isal) writes the same gzip format as zlib
    (every reader here still uses zlib) at a fraction of the CPU: per 64 KB,
    text 395 -> 46 us for 11 % larger files, a base64 attachment 751 -> 351
    us (zlib Huffman-only) for the same size (docs/performance.md).
    """
    return min(3, (level + 2) // 3)


def writeMessageFile(
    root: str,
    messageId: str,
    raw: bytes,
    level: int,
    sync: bool = True,
    syncer: Syncer = SYNCER,
    spare: bool = False,
) -> StoredFile:
    """
    Write C{raw} gzip-compressed as the message file of C{messageId}; with
    C{sync} false the caller must L{syncFiles} it before its row commits.
    C{spare}: the file exists already, made by L{SpareFiles}.
    """
    relpath = relativePath(messageId)
    final = os.path.join(root, relpath)
    if spare:
        directory = None
        fd = os.open(final, os.O_WRONLY)
    else:
        directory = ensureDirectory(root, os.path.dirname(relpath), syncer)
        fd = _create(root, final, directory, syncer)
    try:
        try:
            data = isal_zlib.compress(raw, isalLevel(level), 31)  # 31: gzip
            view = memoryview(data)
            while view:  # raw os calls: no buffered file object, fewer syscalls
                view = view[os.write(fd, view) :]
            if sync:
                syncer.file(fd)
        finally:
            os.close(fd)
    except BaseException:
        _unlinkQuietly(final)
        raise
    storedSize = len(data)
    digest = hashlib.sha256(raw).hexdigest()
    return StoredFile(relpath, len(raw), storedSize, digest, directory)


def _create(root: str, final: str, directory: str, syncer: Syncer) -> int:
    # Written in place, no temp name + rename: until its row commits, a file is
    # invisible (nothing refers to it) and start-up moves such files aside.
    try:
        return os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:  # removed behind our back: forget and recreate
        _known.discard(directory)
        ensureDirectory(root, os.path.relpath(directory, root), syncer)
        return os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def syncFiles(root: str, relpaths: list[str], syncer: Syncer = SYNCER) -> None:
    """
    Make the files of a batch durable. Their writeback is started for all of
    them first (Linux C{sync_file_range}), so the first C{fdatasync} waits
    for one journal commit that covers the whole batch and the others find
    nothing left to do; one C{fdatasync} after another, each file cost a
    journal commit of its own.
    """
    fds = []
    try:
        for relpath in relpaths:
            fds.append(os.open(os.path.join(root, relpath), os.O_RDONLY))
            _startWriteback(fds[-1])
        for fd in fds:
            syncer.file(fd)
    finally:
        for fd in fds:
            os.close(fd)


def startWriteback(root: str, relpath: str) -> None:
    """
    Ask the kernel to start writing a file back now (see L{syncFiles}). Only
    a hint: a failure is the C{fdatasync}'s to report.
    """
    try:
        fd = os.open(os.path.join(root, relpath), os.O_RDONLY)
    except OSError:
        return
    try:
        _startWriteback(fd)
    finally:
        os.close(fd)


SYNC_FILE_RANGE_WRITE = 2


def _loadSyncFileRange() -> Callable[[int], None]:
    """
    C{sync_file_range(fd, 0, 0, WRITE)} through libc (the os module lacks
    it); elsewhere a no-op. Only a hint: the C{fdatasync} after it is what
    makes the file durable, so its result is not checked.
    """
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux: fdatasync alone
        return lambda fd: None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return lambda fd: function(fd, 0, 0, SYNC_FILE_RANGE_WRITE) and None


_startWriteback = _loadSyncFileRange()


def readMessageFile(root: str, relpath: str) -> bytes:
    """The raw message (blocking)."""
    with open(os.path.join(root, relpath), "rb") as f:
        return zlib.decompress(f.read(), 31)


def removeMessageFile(root: str, relpath: str) -> None:
    _unlinkQuietly(os.path.join(root, relpath))


def _unlinkQuietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
