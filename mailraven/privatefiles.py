"""Secrets on disk: keys, account data. Private from the first byte, replaced
atomically, so a crash never leaves a half-written or world-readable key."""

from __future__ import annotations

import os


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


def privateDirectory(path: str) -> str:
    """C{path}, created if missing and (re)set to 0700."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path
