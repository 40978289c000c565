"""Numbered migrations: an old database comes forward with its data intact."""

from __future__ import annotations

import os
import sqlite3
import stat

from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from mailraven.api.queries import search
from mailraven.api.search import parseQuery
from mailraven.startup import databasePath, ensureLayout, prepareDataDir
from mailraven.store.db import connect, openDatabase
from mailraven.store.schema import SCHEMA_VERSION, SchemaTooNew, migrate
from mailraven.store.searchindex import searchTable

BEFORE_CONTENTLESS = 7  # the last schema whose search index stored the text


def _messageRows(
    conn: sqlite3.Connection, n: int, subject: str, entries: dict[str, int]
) -> str:
    """The message row of message C{n} and its mailbox entries (entry id ->
    user id), as every schema since 1 stores them; its id."""
    messageId, at = f"m{n:04}", f"2026-11-{n:02}T10:00:00.000000+00:00"
    conn.execute(
        "INSERT INTO messages (id, path, size, stored_size, sha256, received_at,"
        " mail_from, rcpt_to, subject) VALUES (?, 'p', 1, 1, 's', ?, 'a@x', '[]', ?)",
        (messageId, at, subject),
    )
    for entryId, userId in entries.items():
        conn.execute(
            "INSERT INTO mailbox_entries (id, message_id, user_id, recipient,"
            " received_at, updated_at) VALUES (?, ?, ?, 'u@example.test', ?, ?)",
            (entryId, messageId, userId, at, at),
        )
    return messageId


def _oldMessage(conn: sqlite3.Connection, n: int, subject: str, body: str) -> str:
    """A message as schema 7 stored it: rows plus the text in message_text."""
    entryId = f"e{n:04}"
    messageId = _messageRows(conn, n, subject, {entryId: 1})
    conn.execute(
        "INSERT INTO message_text (message_id, owners, sender, recipients, subject,"
        " body) VALUES (?, 'u1', 'dana@sender.example', 'u@example.test', ?, ?)",
        (messageId, subject, body),
    )
    return entryId


class ContentlessIndexMigrationTests(TestCase):
    def setUp(self) -> None:
        self.conn = connect(os.path.join(self.mktemp() + ".sqlite"))
        self.addCleanup(self.conn.close)
        migrate(self.conn, BEFORE_CONTENTLESS)
        self.conn.execute(
            "INSERT INTO users (id, email, password_hash, created_at)"
            " VALUES (1, 'u@example.test', 'x', 'now')"
        )
        self.budget = _oldMessage(self.conn, 1, "Budget", "the budget report is late")
        self.lunch = _oldMessage(self.conn, 2, "Lunch", "pizza on friday")

    def test_searchFindsMessagesIndexedBeforeTheMigration(self) -> None:
        """Words, phrases, fields and dates find the same messages afterwards."""
        self.assertEqual(migrate(self.conn), SCHEMA_VERSION)
        for text, expected in [
            ("budget", [self.budget]),
            ('"budget report"', [self.budget]),
            ('"report budget"', []),
            ("pizza", [self.lunch]),
            ("from:dana@sender.example", [self.lunch, self.budget]),
            ("budget after:2026-11-01", [self.budget]),
            ("pizza before:2026-11-02", []),
        ]:
            found = search(self.conn, 1, parseQuery(text), 20, 0)
            self.assertEqual(
                sorted(r["id"] for r in found["results"]), sorted(expected), text
            )

    def test_textIsNoLongerStoredTwice(self) -> None:
        """The old table (with its copy of every body) is gone; the index is
        contentless: it cannot give the text back."""
        migrate(self.conn)
        tables = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master")}
        self.assertNotIn("message_text", tables)
        self.assertNotIn("message_text_content", tables)
        self.assertNotIn("message_search", tables)  # schema 11: one per account
        table = searchTable(1)
        (body,) = self.conn.execute(
            f"SELECT body FROM {table} WHERE {table} MATCH 'pizza'"
        ).fetchone()
        self.assertIsNone(body)

    def test_newDocumentsRankAfterMigratedOnes(self) -> None:
        """Index rowids keep growing with arrival: the search window (newest
        matches) depends on it."""
        migrate(self.conn)
        old = self.conn.execute("SELECT max(id) FROM search_docs").fetchone()[0]
        new = self.conn.execute(
            "INSERT INTO search_docs (message_id) VALUES ('m9999')"
        ).lastrowid
        self.assertEqual(old, 2)
        self.assertGreater(new, old)

    def test_newerDatabaseIsRefused(self) -> None:
        migrate(self.conn)
        self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        self.assertRaises(SchemaTooNew, migrate, self.conn)


BEFORE_PER_ACCOUNT = 8  # the last schema with one index document per message
PER_ACCOUNT_RANGES = 10  # the last schema with all accounts in one index table


def _twoAccounts(test: TestCase, version: int) -> sqlite3.Connection:
    """A database at schema C{version} with accounts 1 and 2."""
    conn = connect(os.path.join(test.mktemp() + ".sqlite"))
    test.addCleanup(conn.close)
    migrate(conn, version)
    for userId in (1, 2):
        conn.execute(
            "INSERT INTO users (id, email, password_hash, created_at)"
            " VALUES (?, ?, 'x', 'now')",
            (userId, f"u{userId}@example.test"),
        )
    return conn


class PerAccountIndexMigrationTests(TestCase):
    """Schema 9 rebuilds the contentless index from its own token instances,
    one document per account, in the account's rowid range."""

    def setUp(self) -> None:
        self.conn = _twoAccounts(self, BEFORE_PER_ACCOUNT)
        self.budget = self._message(1, "u1 u2", "Budget", "the Büdget report is late")
        self.lunch = self._message(2, "u2", "Lunch", "pizza on friday, budget")

    def _message(self, n: int, owners: str, subject: str, body: str) -> str:
        """A message as schema 8 indexed it: owners as terms, rowid = doc id."""
        entries = {f"e{n}{owner}": int(owner[1:]) for owner in owners.split()}
        messageId = _messageRows(self.conn, n, subject, entries)
        docId = self.conn.execute(
            "INSERT INTO search_docs (message_id) VALUES (?)", (messageId,)
        ).lastrowid
        self.conn.execute(
            "INSERT INTO message_search (rowid, owners, sender, recipients, subject,"
            " body) VALUES (?, ?, 'dana@sender.example', 'u@example.test', ?, ?)",
            (docId, owners, subject, body),
        )
        return messageId

    def _found(self, userId: int, text: str) -> list[str]:
        found = search(self.conn, userId, parseQuery(text), 20, 0)
        return sorted(r["id"] for r in found["results"])

    def test_eachAccountFindsOnlyItsOwnMail(self) -> None:
        migrate(self.conn)
        self.assertEqual(self._found(1, "budget"), ["e1u1"])
        self.assertEqual(self._found(2, "budget"), ["e1u2", "e2u2"])
        self.assertEqual(self._found(1, "pizza"), [])
        self.assertEqual(self._found(2, "from:dana@sender.example"), ["e1u2", "e2u2"])
        self.assertEqual(self._found(2, "budget after:2026-11-02"), ["e2u2"])

    def test_positionsSurviveSoPhrasesStillMatch(self) -> None:
        migrate(self.conn)
        self.assertEqual(self._found(2, '"budget report"'), ["e1u2"])
        self.assertEqual(self._found(2, '"report budget"'), [])
        self.assertEqual(self._found(2, '"friday budget"'), ["e2u2"])

    def test_documentsLieInTheirAccountsRanges(self) -> None:
        migrate(self.conn, PER_ACCOUNT_RANGES)
        rowids = [r[0] for r in self.conn.execute("SELECT rowid FROM message_search")]
        self.assertEqual(sorted(rowids), [1 << 40 | 1, 2 << 40 | 1, 2 << 40 | 2])
        columns = [r[1] for r in self.conn.execute("PRAGMA table_info(message_search)")]
        self.assertEqual(columns, ["sender", "recipients", "subject", "body"])
        # the migration's helper table lived in temp and is gone
        self.assertIsNone(
            self.conn.execute(
                "SELECT name FROM sqlite_temp_master WHERE name = 'old_terms'"
            ).fetchone()
        )


class IndexTablePerAccountMigrationTests(TestCase):
    """Schema 11 moves each account's documents out of its rowid range of the
    shared index into a table of its own; a removed account's are dropped."""

    def setUp(self) -> None:
        self.conn = _twoAccounts(self, PER_ACCOUNT_RANGES)
        self._message(1, [1, 2], "Plan", "the Büdget report is late")
        self._message(2, [2], "Lunch", "pizza on friday, budget")
        # account 3 was removed (its entries cascaded), its documents stayed;
        # so did those of the account 2 before this one, given the same id
        self._message(3, [], "Gone", "budget of a removed account", indexFor=[3])
        self._message(4, [], "Old two", "budget of the first account 2", indexFor=[2])

    def _message(
        self, n: int, owners: list[int], subject: str, body: str, indexFor=None
    ) -> str:
        """A message as schema 10 indexed it: rowid = account << 40 | doc id."""
        entries = {f"e{n}u{owner}": owner for owner in owners}
        messageId = _messageRows(self.conn, n, subject, entries)
        docId = self.conn.execute(
            "INSERT INTO search_docs (message_id, received_at) VALUES (?, ?)",
            (messageId, f"2026-11-{n:02}T10:00:00.000000+00:00"),
        ).lastrowid
        for owner in indexFor or owners:
            self.conn.execute(
                "INSERT INTO message_search (rowid, sender, recipients, subject,"
                " body) VALUES (?, 'dana@sender.example', 'u@example.test', ?, ?)",
                (owner << 40 | docId, subject, body),
            )
        return messageId

    def _found(self, userId: int, text: str) -> list[str]:
        found = search(self.conn, userId, parseQuery(text), 20, 0)
        return sorted(r["id"] for r in found["results"])

    def test_eachAccountFindsWhatItFoundBefore(self) -> None:
        """Words, phrases (positions kept), dates, per account."""
        migrate(self.conn)
        for userId, text, expected in [
            (1, "budget", ["e1u1"]),
            (2, "budget", ["e1u2", "e2u2"]),
            (2, '"budget report"', ["e1u2"]),
            (2, '"report budget"', []),
            (1, "pizza", []),
            (2, "pizza", ["e2u2"]),
            (2, "budget after:2026-11-02", ["e2u2"]),
            (2, "from:dana@sender.example", ["e1u2", "e2u2"]),
        ]:
            self.assertEqual(self._found(userId, text), expected, (userId, text))
        found = search(self.conn, 2, parseQuery("budget"), 20, 0)
        self.assertEqual(found["total_matches"], 2)  # not the first account 2's

    def test_sharedTableAndRemovedAccountsDocumentsAreGone(self) -> None:
        migrate(self.conn)
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
        self.assertNotIn("message_search", tables)
        self.assertLessEqual({searchTable(1), searchTable(2)}, tables)
        self.assertNotIn(searchTable(3), tables)
        rowids = {
            u: [r[0] for r in self.conn.execute(f"SELECT rowid FROM {searchTable(u)}")]
            for u in (1, 2)
        }
        self.assertEqual(rowids, {1: [1], 2: [1, 2]})  # the search_docs ids


BEFORE_TAGS = 11  # the last schema without mailbox_entries.tag


class EntryTagMigrationTests(TestCase):
    def test_entriesKeepTheirDataAndHaveNoTag(self) -> None:
        """Mail stored before subaddress tags comes forward untagged."""
        conn = _twoAccounts(self, BEFORE_TAGS)
        _messageRows(conn, 1, "old", {"e1": 1, "e2": 2})
        migrate(conn)
        rows = conn.execute(
            "SELECT id, user_id, recipient, tag FROM mailbox_entries ORDER BY id"
        ).fetchall()
        self.assertEqual(
            [tuple(r) for r in rows],
            [("e1", 1, "u@example.test", None), ("e2", 2, "u@example.test", None)],
        )
        conn.execute("UPDATE mailbox_entries SET tag = 'news' WHERE id = 'e1'")


BEFORE_ALIASES = 12  # the last schema without the aliases table


class AliasesMigrationTests(TestCase):
    def test_aliasesFollowTheirAccounts(self) -> None:
        """From schema 12: the table is there, empty, and removing an
        account removes its alias memberships."""
        conn = _twoAccounts(self, BEFORE_ALIASES)
        _messageRows(conn, 1, "old", {"e1": 1})
        migrate(conn)
        self.assertEqual(conn.execute("SELECT count(*) FROM aliases").fetchone()[0], 0)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executemany(
            "INSERT INTO aliases (address, user_id, created_at) VALUES (?, ?, 'now')",
            [("sales@example.test", 1), ("sales@example.test", 2)],
        )
        conn.execute("DELETE FROM mailbox_entries WHERE user_id = 1")
        conn.execute("DELETE FROM users WHERE id = 1")
        rows = conn.execute("SELECT address, user_id FROM aliases").fetchall()
        self.assertEqual([tuple(r) for r in rows], [("sales@example.test", 2)])


BEFORE_DOMAINS = 14  # the last schema without the domains table (quotas is 14)


class DomainsMigrationTests(TestCase):
    def test_domainsTableStartsEmptyAndKeepsEverythingElse(self) -> None:
        """From schema 14: accounts, mail and aliases come through, the
        domains table is there, empty, and names compare case-insensitively."""
        conn = _twoAccounts(self, BEFORE_DOMAINS)
        _messageRows(conn, 1, "old", {"e1": 1})
        conn.execute(
            "INSERT INTO aliases (address, user_id, created_at)"
            " VALUES ('sales@example.test', 1, 'now')"
        )
        migrate(conn)
        self.assertEqual(conn.execute("SELECT count(*) FROM domains").fetchone()[0], 0)
        self.assertEqual(conn.execute("SELECT count(*) FROM aliases").fetchone()[0], 1)
        self.assertEqual(
            conn.execute("SELECT count(*) FROM mailbox_entries").fetchone()[0], 1
        )
        conn.execute(
            "INSERT INTO domains (name, dkim_selector, added_at)"
            " VALUES ('shop.example', 's1', 'now')"
        )
        with self.assertRaises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO domains (name, dkim_selector, added_at)"
                " VALUES ('SHOP.example', 's2', 'now')"
            )


BEFORE_FOLDERS = 15  # the last schema without folders, UIDs and MODSEQs


def _entry(
    conn: sqlite3.Connection, entryId: str, userId: int, mailbox: str, at: str
) -> None:
    """An entry as schema 15 stored it, of a message arrived at C{at}."""
    conn.execute(
        "INSERT OR IGNORE INTO messages (id, path, size, stored_size, sha256,"
        " received_at, mail_from, rcpt_to) VALUES (?, 'p', 1, 1, 's', ?, 'a@x', '[]')",
        (f"m-{at}", at),
    )
    conn.execute(
        "INSERT INTO mailbox_entries (id, message_id, user_id, recipient, mailbox,"
        " read_state, received_at, updated_at) VALUES (?, ?, ?, 'u@x', ?, 1, ?, ?)",
        (entryId, f"m-{at}", userId, mailbox, at, at),
    )


class FoldersMigrationTests(TestCase):
    """Schema 16: every account has the six standard folders, and existing
    mail gets UIDs per folder in arrival order."""

    def setUp(self) -> None:
        self.conn = _twoAccounts(self, BEFORE_FOLDERS)
        day = "2026-11-{:02}T10:00:00.000000+00:00".format
        # out of arrival order on purpose; e3b and e3a arrived together
        for entryId, userId, mailbox, at in [
            ("e5", 1, "inbox", day(5)),
            ("e1", 1, "inbox", day(1)),
            ("e3b", 1, "inbox", day(3)),
            ("e3a", 1, "inbox", day(3)),
            ("e2", 1, "archive", day(2)),
            ("e4", 1, "archive", day(4)),
            ("e6", 1, "trash", day(6)),
            ("e7", 1, "sent", day(7)),
            ("f1", 2, "junk", day(1)),
            ("f2", 2, "inbox", day(2)),
        ]:
            _entry(self.conn, entryId, userId, mailbox, at)

    def _uids(self, userId: int, mailbox: str) -> list[tuple[str, int]]:
        rows = self.conn.execute(
            "SELECT id, uid FROM mailbox_entries WHERE user_id = ? AND mailbox = ?"
            " ORDER BY uid",
            (userId, mailbox),
        )
        return [tuple(r) for r in rows]

    def _folders(self, userId: int) -> dict[str, tuple]:
        rows = self.conn.execute(
            "SELECT mailbox, name, special_use, uidnext, uidvalidity, subscribed"
            " FROM folders WHERE user_id = ?",
            (userId,),
        )
        return {r[0]: tuple(r)[1:] for r in rows}

    def test_existingMailGetsUidsInArrivalOrderPerFolder(self) -> None:
        migrate(self.conn)
        self.assertEqual(
            self._uids(1, "inbox"), [("e1", 1), ("e3a", 2), ("e3b", 3), ("e5", 4)]
        )
        self.assertEqual(self._uids(1, "archive"), [("e2", 1), ("e4", 2)])
        self.assertEqual(self._uids(1, "trash"), [("e6", 1)])
        self.assertEqual(self._uids(1, "sent"), [("e7", 1)])
        self.assertEqual(self._uids(2, "junk"), [("f1", 1)])
        self.assertEqual(self._uids(2, "inbox"), [("f2", 1)])

    def test_everyAccountHasTheSixFoldersWithUidnextPastItsMail(self) -> None:
        migrate(self.conn)
        for userId in (1, 2):
            folders = self._folders(userId)
            self.assertEqual(
                {key: row[:2] for key, row in folders.items()},
                {
                    "inbox": ("INBOX", None),
                    "sent": ("Sent", "\\Sent"),
                    "drafts": ("Drafts", "\\Drafts"),
                    "junk": ("Junk", "\\Junk"),
                    "trash": ("Trash", "\\Trash"),
                    "archive": ("Archive", "\\Archive"),
                },
            )
            for row in folders.values():
                self.assertGreater(row[3], 0)  # uidvalidity
                self.assertEqual(row[4], 1)  # subscribed
        uidnext = {key: row[2] for key, row in self._folders(1).items()}
        self.assertEqual(
            uidnext,
            {"inbox": 5, "archive": 3, "trash": 2, "sent": 2, "junk": 1, "drafts": 1},
        )

    def test_flagsAndCountsComeThroughUnchanged(self) -> None:
        """Read state, counts and quota usage are what they were."""
        before = self.conn.execute(
            "SELECT user_id, mailbox, total, unread FROM mailbox_counts ORDER BY 1, 2"
        ).fetchall()
        migrate(self.conn)
        after = self.conn.execute(
            "SELECT user_id, mailbox, total, unread FROM mailbox_counts ORDER BY 1, 2"
        ).fetchall()
        self.assertEqual([tuple(r) for r in after], [tuple(r) for r in before])
        flags = self.conn.execute(
            "SELECT DISTINCT read_state, starred, answered, draft, deleted, keywords,"
            " modseq FROM mailbox_entries"
        ).fetchall()
        self.assertEqual([tuple(r) for r in flags], [(1, 0, 0, 0, 0, "", 1)])
        # the message's size is copied to its entries: a folder lists alone
        sizes = self.conn.execute("SELECT DISTINCT size FROM mailbox_entries")
        self.assertEqual([tuple(r) for r in sizes], [(1,)])

    def test_mailAfterTheMigrationContinuesTheUids(self) -> None:
        """An entry inserted by any code (here plain SQL) takes the folder's
        UIDNEXT; a move takes the destination's; UIDNEXT never goes back."""
        migrate(self.conn)
        _entry(self.conn, "e8", 1, "inbox", "2026-11-08T10:00:00.000000+00:00")
        self.assertEqual(self._uids(1, "inbox")[-1], ("e8", 5))
        (size,) = self.conn.execute(
            "SELECT size FROM mailbox_entries WHERE id = 'e8'"
        ).fetchone()
        self.assertEqual(size, 1)
        self.conn.execute(
            "UPDATE mailbox_entries SET mailbox = 'archive' WHERE id = 'e5'"
        )
        self.assertEqual(self._uids(1, "archive")[-1], ("e5", 3))
        self.conn.execute("DELETE FROM mailbox_entries WHERE id = 'e8'")
        _entry(self.conn, "e9", 1, "inbox", "2026-11-09T10:00:00.000000+00:00")
        self.assertEqual(self._uids(1, "inbox")[-1], ("e9", 6))

    def test_newAccountsGetTheirFolders(self) -> None:
        migrate(self.conn)
        self.conn.execute(
            "INSERT INTO users (id, email, password_hash, created_at)"
            " VALUES (3, 'u3@example.test', 'x', 'now')"
        )
        self.assertEqual(len(self._folders(3)), 6)
        old = max(r[3] for r in self._folders(1).values())
        self.assertGreater(min(r[3] for r in self._folders(3).values()), old)


class ExpungedEntriesMigrationTests(TestCase):
    """Schema 17: entries that go (an IMAP EXPUNGE) leave a row for the
    API's delta sync, until their account goes."""

    def test_aRemovedEntryIsKeptAsExpungedUntilItsAccountGoes(self) -> None:
        conn = _twoAccounts(self, 16)
        migrate(conn, 16)
        _entry(conn, "e1", 1, "inbox", "2026-11-01T10:00:00.000000+00:00")
        _entry(conn, "f1", 2, "inbox", "2026-11-01T10:00:00.000000+00:00")
        self.assertEqual(migrate(conn), SCHEMA_VERSION)
        self.assertEqual(conn.execute("SELECT * FROM expunged_entries").fetchall(), [])
        conn.execute("DELETE FROM mailbox_entries WHERE id IN ('e1', 'f1')")
        rows = conn.execute(
            "SELECT id, user_id, mailbox, expunged_at FROM expunged_entries ORDER BY id"
        ).fetchall()
        self.assertEqual(
            [tuple(r)[:3] for r in rows], [("e1", 1, "inbox"), ("f1", 2, "inbox")]
        )
        # the form of every *_at column, so it sorts beside updated_at
        self.assertRegex(rows[0][3], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
        conn.execute("DELETE FROM users WHERE id = 1")
        remaining = conn.execute("SELECT id FROM expunged_entries").fetchall()
        self.assertEqual([r[0] for r in remaining], ["f1"])


class UpgradeAtStartTests(TestCase):
    """An operator sees why nothing listens yet while an old database is
    being upgraded, and how long it took."""

    def _events(self, dataDir: str) -> list[str]:
        with capturedLogs() as events:
            prepareDataDir(dataDir)
        return [e.get("event") for e in events if e.get("event")]

    def test_oldDatabaseIsUpgradedAndSaysSo(self) -> None:
        dataDir = self.mktemp()
        ensureLayout(dataDir)
        conn = connect(databasePath(dataDir))
        migrate(conn, BEFORE_PER_ACCOUNT)
        conn.close()
        events = self._events(dataDir)
        self.assertEqual(events[:2], ["schema_upgrade_started", "schema_upgraded"])
        conn = connect(databasePath(dataDir))
        self.addCleanup(conn.close)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        self.assertEqual(version, SCHEMA_VERSION)

    def test_newOrCurrentDatabaseSaysNothing(self) -> None:
        dataDir = self.mktemp()
        self.assertNotIn("schema_upgrade_started", self._events(dataDir))
        self.assertNotIn("schema_upgrade_started", self._events(dataDir))


class DatabaseFileModeTests(TestCase):
    def test_newDatabaseIsTheServersAloneWhateverTheUmask(self) -> None:
        """Password and token hashes: 0600 for the file, its WAL and shm."""
        path = self.mktemp()
        old = os.umask(0o022)
        try:
            conn = openDatabase(path)
        finally:
            os.umask(old)
        self.addCleanup(conn.close)
        conn.execute("INSERT INTO mta_sts_policies VALUES ('x', 'y')").close()
        for name in (path, path + "-wal", path + "-shm"):
            self.assertEqual(stat.S_IMODE(os.stat(name).st_mode), 0o600, name)
