"""Durable message files: gzip, fdatasync; the directory is fsynced by the
writer thread once per group commit (L{StoredFile.directory}), before the rows
that refer to the file are committed.

A crash before that commit leaves at most a file without a row (never
acknowledged), which start-up moves to lost+found.

Message ids are time-ordered UUIDs (version 7 layout) and the two directory
levels come from the millisecond timestamp, so the messages of one group
commit share a directory and one directory fsync, while a directory still
gets only the mail of 256 ms windows some hours apart.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
import zlib
from dataclasses import dataclass

from isal import isal_zlib

MESSAGES = "messages"


@dataclass(frozen=True)
class StoredFile:
    relpath: str
    size: int
    storedSize: int
    sha256: str
    directory: str


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


_known: set[str] = set()
_knownLock = threading.Lock()


def ensureDirectory(root: str, relative: str) -> str:
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
        fsyncDirectory(parent)
    with _knownLock:
        _known.add(full)
    return path


def isalLevel(level: int) -> int:
    """
    The ISA-L level (1..3) for a configured gzip level (1..9): 1-3 -> 1,
    4-6 -> 2, 7-9 -> 3. ISA-L (isal) writes the same gzip format as zlib
    (every reader here still uses zlib) at a fraction of the CPU: per 64 KB,
    text 395 -> 46 us for 11 % larger files, a base64 attachment 751 -> 351
    us (zlib Huffman-only) for the same size (docs/performance.md).
    """
    return min(3, (level + 2) // 3)


def writeMessageFile(root: str, messageId: str, raw: bytes, level: int) -> StoredFile:
    """Write C{raw} gzip-compressed as the message file of C{messageId}."""
    relpath = relativePath(messageId)
    directory = ensureDirectory(root, os.path.dirname(relpath))
    final = os.path.join(root, relpath)
    # Written in place, no temp name + rename: until its row commits, a file is
    # invisible (nothing refers to it) and start-up moves such files aside.
    try:
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:  # removed behind our back: forget and recreate
        _known.discard(directory)
        ensureDirectory(root, os.path.dirname(relpath))
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            data = isal_zlib.compress(raw, isalLevel(level), 31)  # 31: gzip
            view = memoryview(data)
            while view:  # raw os calls: no buffered file object, fewer syscalls
                view = view[os.write(fd, view) :]
            os.fdatasync(fd)  # a new file: its size is flushed too
        finally:
            os.close(fd)
    except BaseException:
        _unlinkQuietly(final)
        raise
    storedSize = len(data)
    digest = hashlib.sha256(raw).hexdigest()
    return StoredFile(relpath, len(raw), storedSize, digest, directory)


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
