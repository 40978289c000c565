"""Is the store whole? SQLite's own check plus rows vs. message files.

Used at start-up (damage stops the server with the list) and by
C{mailraven verify}.
"""

from __future__ import annotations

import os
import sqlite3
import zlib
from dataclasses import dataclass, field

from mailraven.store.files import MESSAGES

LOST_AND_FOUND = "lost+found"


@dataclass
class IntegrityReport:
    damage: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    spares: list[str] = field(default_factory=list)  # empty: no mail in them
    messages: int = 0

    @property
    def ok(self) -> bool:
        return not self.damage


def checkIntegrity(
    conn: sqlite3.Connection, dataDir: str, readFiles: bool = False
) -> IntegrityReport:
    """
    Damage: SQLite corruption, a row whose file is missing (or, with
    C{readFiles}, unreadable). Orphans: message files no row refers to (a crash
    after the file was written, before its commit: never acknowledged).
    Spares: empty files no row refers to, made ahead by a store worker
    (L{mailraven.store.files.SpareFiles}); a running server always has some.
    """
    report = IntegrityReport()
    for (line,) in conn.execute("PRAGMA quick_check"):
        if line != "ok":
            report.damage.append(f"database: {line}")
    onDisk = set(_messageFiles(dataDir))
    referenced = set()
    for messageId, relpath in conn.execute("SELECT id, path FROM messages"):
        report.messages += 1
        referenced.add(relpath)
        if relpath not in onDisk:
            report.damage.append(f"message {messageId}: file {relpath} is missing")
        elif readFiles and not _readable(os.path.join(dataDir, relpath)):
            report.damage.append(f"message {messageId}: file {relpath} is unreadable")
    for relpath in sorted(onDisk - referenced):
        if _isEmpty(os.path.join(dataDir, relpath)):
            report.spares.append(relpath)
        else:
            report.orphans.append(relpath)
    return report


def _isEmpty(path: str) -> bool:
    try:
        return os.stat(path).st_size == 0
    except FileNotFoundError:  # a spare taken and failed meanwhile
        return True


def _messageFiles(dataDir: str):
    root = os.path.join(dataDir, MESSAGES)
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(".eml.gz"):
                yield os.path.relpath(os.path.join(directory, name), dataDir)


def _readable(path: str) -> bool:
    decompressor = zlib.decompressobj(31)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                decompressor.decompress(chunk)
        return decompressor.eof
    except (OSError, zlib.error):
        return False


def removeTemporaryFiles(dataDir: str) -> int:
    """Half-written files of a crash (never acknowledged) are removed."""
    removed = 0
    for directory, _, names in os.walk(os.path.join(dataDir, MESSAGES)):
        for name in names:
            if name.endswith(".tmp"):
                os.unlink(os.path.join(directory, name))
                removed += 1
    tmp = os.path.join(dataDir, "tmp")
    if os.path.isdir(tmp):
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
            removed += 1
    return removed


def removeSpares(dataDir: str, spares: list[str]) -> None:
    """Spares left by a crash hold no mail: removed, not moved aside."""
    for relpath in spares:
        try:
            os.unlink(os.path.join(dataDir, relpath))
        except FileNotFoundError:
            pass


def quarantineOrphans(dataDir: str, orphans: list[str]) -> None:
    """Move orphans aside rather than delete: mail is never thrown away silently."""
    target = os.path.join(dataDir, LOST_AND_FOUND)
    os.makedirs(target, mode=0o700, exist_ok=True)
    for relpath in orphans:
        os.rename(
            os.path.join(dataDir, relpath),
            os.path.join(target, os.path.basename(relpath)),
        )
