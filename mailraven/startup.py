"""What happens to a data dir before anything listens.

Create the layout, apply migrations, clear what a crash left half-written, and
refuse to start on a damaged store (serving from it would hide lost mail).
"""

from __future__ import annotations

import os
import sqlite3
import time

from twisted.logger import Logger

from mailraven.store.db import openDatabase
from mailraven.store.integrity import (
    checkIntegrity,
    quarantineOrphans,
    removeTemporaryFiles,
)
from mailraven.store.schema import SCHEMA_VERSION

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


def _schemaOf(path: str) -> int:
    """The schema version of the database at C{path}; 0 when there is none."""
    if not os.path.exists(path):
        return 0
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def prepareDataDir(dataDir: str) -> None:
    ensureLayout(dataDir)
    path = databasePath(dataDir)
    try:
        old = _schemaOf(path)
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
    if report.orphans:
        quarantineOrphans(dataDir, report.orphans)
        log.warn(
            "{n} message files had no row (never acknowledged); moved to lost+found",
            n=len(report.orphans),
            event="orphans_quarantined",
        )
