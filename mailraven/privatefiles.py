"""Secrets on disk: keys, account data. Private from the first byte, replaced
atomically, so a crash never leaves a half-written or world-readable key."""

from __future__ import annotations

import os
import threading


def writePrivate(path: str, data: bytes) -> None:
    """Write a secret: created 0600 before a byte is written, replaced atomically."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def createPrivate(path: str, data: bytes) -> bool:
    """Write a secret at a path that must stay as first written (a key whose
    record may be published): complete and 0600 before it has its name, and
    never replacing a file there. False if one was there (and is kept)."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # unlike rename, fails on an existing name
        except FileExistsError:
            return False
    finally:
        os.unlink(tmp)
    _syncDirectory(os.path.dirname(path) or ".")
    return True


def _syncDirectory(path: str) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def privateDirectory(path: str) -> str:
    """C{path}, created if missing and (re)set to 0700."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path
