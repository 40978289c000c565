"""What happens to a data dir before anything listens.

Create the layout, apply migrations, clear what a crash left half-written, and
refuse to start on a damaged store (serving from it would hide lost mail).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from mailraven.store.db import openDatabase
from mailraven.store.integrity import (
    checkIntegrity,
    quarantineOrphans,
    removeSpares,
    removeTemporaryFiles,
)
from mailraven.store.schema import SCHEMA_VERSION, schemaVersionOf

log = Logger()
LAYOUT = ("messages", "tmp", "certs", "dkim", "backups")


class StartupError(Exception):
    """The server must not start; the message tells the operator why."""


def databasePath(dataDir: str) -> str:
    return os.path.join(dataDir, "mailraven.db")


def ensureLayout(dataDir: str) -> None:
    try:
        os.makedirs(dataDir, mode=0o700, exist_ok=True)
        for name in LAYOUT:
            os.makedirs(os.path.join(dataDir, name), mode=0o700, exist_ok=True)
    except OSError as e:
        raise StartupError(f"data dir {dataDir} is not usable: {e}") from e
    if not os.access(dataDir, os.W_OK):
        raise StartupError(f"data dir {dataDir} is not writable")


LOCK_NAME = "lock"


class DataDirLock(Service):
    """
    One server per data dir: an exclusive C{flock} on C{data_dir/lock},
    taken before the database is opened and held until the server stopped.
    Two servers on one data dir would each think they own the queue and the
    message files. The lock file holds the holder's pid, for the message.
    The lock goes with the process, so a crashed server leaves none behind.
    """

    def __init__(self, dataDir: str) -> None:
        self.path = os.path.join(dataDir, LOCK_NAME)
        # a file object, not a bare descriptor: should a start fail after the
        # lock was taken, dropping the object closes it and so unlocks
        self._file: Any = None

    def acquire(self) -> None:
        lockFile = os.fdopen(
            os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), "r+b", 0
        )
        try:
            fcntl.flock(lockFile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = lockFile.read(32).decode("ascii", "replace").strip()
            lockFile.close()
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise StartupError(f"cannot lock {self.path}: {e.strerror}") from e
            raise StartupError(
                f"data dir {os.path.dirname(self.path)} is in use by another"
                f" MailRaven server (pid {holder or 'unknown'})"
            ) from None
        lockFile.truncate(0)
        lockFile.write(f"{os.getpid()}\n".encode())
        self._file = lockFile

    def release(self) -> None:
        if self._file is not None:
            lockFile, self._file = self._file, None
            lockFile.close()  # closing the only descriptor drops the flock

    def stopService(self) -> None:
        super().stopService()
        self.release()


def serverHolding(dataDir: str) -> str | None:
    """The pid (as written) of a server holding C{dataDir}'s lock, else None."""
    try:
        lockFile = open(os.path.join(dataDir, LOCK_NAME), "rb")
    except FileNotFoundError:
        return None
    with lockFile:
        try:
            fcntl.flock(lockFile, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lockFile.read(32).decode("ascii", "replace").strip() or "unknown"
    return None


def lockDataDir(dataDir: str) -> DataDirLock:
    """The data dir (made if missing), locked for this process: see L{DataDirLock}."""
    ensureLayout(dataDir)
    lock = DataDirLock(dataDir)
    lock.acquire()
    return lock


def prepareDataDir(dataDir: str) -> None:
    ensureLayout(dataDir)
    path = databasePath(dataDir)
    try:
        old = schemaVersionOf(path)
        if 0 < old < SCHEMA_VERSION:
            # says why nothing listens yet: rebuilding the search index (9)
            # takes about a minute per 200,000 messages on a small machine
            log.info(
                "upgrading the database from schema {old} to {new} ...",
                old=old,
                new=SCHEMA_VERSION,
                event="schema_upgrade_started",
            )
        started = time.monotonic()
        conn = openDatabase(path)
    except Exception as e:
        raise StartupError(f"cannot open {path}: {e}") from e
    if 0 < old < SCHEMA_VERSION:
        log.info(
            "database upgraded to schema {new} in {seconds:.1f} s",
            new=SCHEMA_VERSION,
            seconds=time.monotonic() - started,
            event="schema_upgraded",
        )
    try:
        removed = removeTemporaryFiles(dataDir)
        report = checkIntegrity(conn, dataDir)
    finally:
        conn.close()
    if removed:
        log.info("removed {n} half-written files left by a crash", n=removed)
    if not report.ok:
        raise StartupError(
            "integrity check failed, refusing to start (run `mailraven verify`):\n  "
            + "\n  ".join(report.damage[:20])
        )
    removeSpares(dataDir, report.spares)
    if report.orphans:
        quarantineOrphans(dataDir, report.orphans)
        log.warn(
            "{n} message files had no row (never acknowledged); moved to lost+found",
            n=len(report.orphans),
            event="orphans_quarantined",
        )
