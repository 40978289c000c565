"""Durable message files: gzip, fsync, rename, fsync the directory.

Only after all four steps is the file's name on stable storage; a crash before
that leaves at most a C{.tmp} file that start-up removes.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable

MESSAGES = "messages"


@dataclass(frozen=True)
class StoredFile:
    relpath: str
    size: int
    storedSize: int
    sha256: str


def relativePath(messageId: str) -> str:
    """messages/ab/cd/<id>.eml.gz: two levels keep directories small."""
    return os.path.join(MESSAGES, messageId[:2], messageId[2:4], messageId + ".eml.gz")


def fsyncDirectory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensureDirectory(root: str, relative: str) -> str:
    """Create C{root/relative}; each new directory's entry is fsynced in its parent."""
    path = root
    for part in relative.split(os.sep):
        parent, path = path, os.path.join(path, part)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        fsyncDirectory(parent)
    return path


def writeMessageFile(
    root: str,
    messageId: str,
    chunks: Iterable[bytes],
    level: int,
    observe: Callable[[bytes], None] | None = None,
) -> StoredFile:
    """
    Write C{chunks} gzip-compressed as the message file of C{messageId}, durably.
    C{observe} sees every raw chunk (metadata parsing rides along in one pass).
    """
    relpath = relativePath(messageId)
    directory = ensureDirectory(root, os.path.dirname(relpath))
    final = os.path.join(root, relpath)
    tmp = final + ".tmp"
    digest = hashlib.sha256()
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip container
    size = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                size += len(chunk)
                digest.update(chunk)
                if observe is not None:
                    observe(chunk)
                f.write(compressor.compress(chunk))
            f.write(compressor.flush())
            f.flush()
            os.fsync(f.fileno())
            storedSize = f.tell()
        os.rename(tmp, final)
    except BaseException:
        _unlinkQuietly(tmp)
        raise
    fsyncDirectory(directory)
    return StoredFile(relpath, size, storedSize, digest.hexdigest())


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
