"""SQL lives in mailraven/store/ only: a scan of every other module for
sqlite3, statements executed and SQL text, failing with file:line."""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import mailraven

PACKAGE = Path(mailraven.__file__).parent

# Modules still holding SQL, each to move behind a store interface; a module
# that no longer does must leave this list (test_knownExceptionsStillNeedIt).
KNOWN = {
    # The API's read queries: they move behind the store next.
    "api/queries.py",
    # Online backup and restore move whole into store/ (store/backup.py).
    "backup.py",
    # Offline CLI commands run store functions on their own connection.
    "cli.py",
    # RecordingSyncer fakes the store's Syncer, which commits a connection.
    "testing.py",
}

# Upper-case SQL with a lower-case column or table after it; IMAP's SELECT
# command and prose about it do not match.
SQL = re.compile(
    r"\bSELECT\s+(\*|[a-z_][\w.]*\s*(\(|,|\s+FROM\b)|DISTINCT\b)"
    r"|\bINSERT\s+(OR\s+\w+\s+)?INTO\s+[a-z_]"
    r"|\bUPDATE\s+[a-z_]\w*\s+SET\b"
    r"|\bDELETE\s+FROM\s+[a-z_]"
    r"|\b(CREATE|DROP)\s+(TABLE|INDEX|TRIGGER|VIEW)\b"
    r"|\bPRAGMA\s+[a-z_]"
)
CALLS = re.compile(r"\.(execute|executemany|executescript)\(")
IMPORT = re.compile(r"^\s*(import\s+sqlite3\b|from\s+sqlite3\b)")


def violations(source: str) -> list[tuple[int, str]]:
    """(line number, line) of each line that imports sqlite3, executes a
    statement or holds SQL text."""
    return [
        (number, line.strip())
        for number, line in enumerate(source.splitlines(), 1)
        if IMPORT.search(line) or CALLS.search(line) or SQL.search(line)
    ]


def outsideTheStore() -> dict[str, list[tuple[int, str]]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("store/"):
            continue
        hits = violations(path.read_text(encoding="utf-8"))
        if hits:
            found[relative] = hits
    return found


class StoreBoundaryTests(SynchronousTestCase):
    def test_noSQLOutsideTheStore(self):
        stray = [
            f"mailraven/{name}:{number}: {line}"
            for name, hits in outsideTheStore().items()
            if name not in KNOWN
            for number, line in hits
        ]
        self.assertEqual(
            stray, [], "SQL outside mailraven/store/:\n" + "\n".join(stray)
        )

    def test_knownExceptionsStillNeedIt(self):
        self.assertEqual(sorted(KNOWN - set(outsideTheStore())), [])

    def test_scanFindsSQLButNotIMAPSelect(self):
        found = violations(
            "import sqlite3\n"
            'conn.execute("PRAGMA user_version")\n'
            '    "SELECT id, status FROM outbound_queue"\n'
            '    "INSERT OR IGNORE INTO outbound_recipients (queue_id)"\n'
            '    "UPDATE users SET quota_limit = ?"\n'
            '    "DELETE FROM sender_lists"\n'
            'sendBadResponse(tag, b"Unknown SELECT parameter")\n'
            '"""LIST, LSUB, STATUS, CREATE, DELETE, RENAME, SELECT,"""\n'
        )
        self.assertEqual([n for n, _ in found], [1, 2, 3, 4, 5, 6])
