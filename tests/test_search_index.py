"""Each account's search index is its own (schema 11): another account's mail
neither moves its scores nor counts in its totals, and a removed account's
index goes with it."""

from __future__ import annotations

import os
import sqlite3

from twisted.trial.unittest import TestCase

from mailraven.api.queries import search
from mailraven.api.search import parseQuery
from mailraven.envelope import Envelope, Recipient
from mailraven.startup import ensureLayout
from mailraven.store.db import openDatabase
from mailraven.store.prepare import prepareMessage
from mailraven.store.rows import insertMessage
from mailraven.store.searchindex import searchTable
from mailraven.store.users import addUser, removeUser


class PerAccountIndexTests(TestCase):
    def setUp(self) -> None:
        self.dataDir = os.path.abspath(self.mktemp())
        ensureLayout(self.dataDir)
        self.conn = openDatabase(os.path.join(self.dataDir, "mailraven.db"))
        self.conn.row_factory = sqlite3.Row
        self.addCleanup(self.conn.close)
        self.alice = self.addAccount("alice@example.test")
        self.bob = self.addAccount("bob@example.test")

    def addAccount(self, email: str) -> int:
        with self.conn:
            return addUser(self.conn, email, "hash")

    def deliver(self, body: str, *userIds: int) -> None:
        """Through the store's own path: prepared (file, metadata), then rows."""
        envelope = Envelope(
            mailFrom="dana@sender.example",
            recipients=[Recipient(f"u{u}@example.test", u) for u in userIds],
        )
        raw = f"Subject: note\r\nFrom: dana@sender.example\r\n\r\n{body}\r\n".encode()
        prepared = prepareMessage(self.dataDir, 6, None, None, envelope, raw)
        with self.conn:
            insertMessage(self.conn, prepared)

    def found(self, userId: int, text: str) -> tuple[int, list[tuple[float, str]]]:
        result = search(self.conn, userId, parseQuery(text), 50, 0, order="relevance")
        ranked = [(r["relevance"], r["snippet"]) for r in result["results"]]
        return result["total_matches"], ranked

    def test_anotherAccountsMailDoesNotMoveThisAccountsScores(self) -> None:
        """
        In one shared table BM25 counted every account's documents for its
        IDF: mail to bob holding "zanzibar" changed the relevance of alice's
        results for "zanzibar known", so alice could learn what bob's mail
        says.
        """
        self.deliver("zanzibar known", self.alice)
        self.deliver("zanzibar known known known and more words", self.alice)
        self.deliver("zanzibar zanzibar known plus a few other words", self.alice)
        self.deliver("nothing in common", self.alice)
        before = self.found(self.alice, "zanzibar known")
        self.assertEqual(before[0], 3)
        self.assertEqual(len({score for score, _ in before[1]}), 3)
        for _ in range(5):
            self.deliver("zanzibar is where the secret meeting is", self.bob)
        self.assertEqual(self.found(self.alice, "zanzibar known"), before)
        self.assertEqual(self.found(self.bob, "zanzibar")[0], 5)

    def test_aRemovedAccountsIndexGoesWithIt(self) -> None:
        """Account ids come back: the next account must not inherit an index
        (it counted the old account's mail in total_matches)."""
        carolBefore = self.bob
        self.deliver("secret plans for the merger", self.bob)
        with self.conn:
            self.assertTrue(removeUser(self.conn, "bob@example.test"))
        self.assertIsNone(self._table(self.bob))
        carol = self.addAccount("carol@example.test")
        self.assertEqual(carol, carolBefore)  # SQLite gave the id out again
        self.assertEqual(self.found(carol, "secret"), (0, []))
        self.assertIsNotNone(self._table(carol))

    def test_aStaleIndexIsNotInherited(self) -> None:
        """A table left by an account removed with plain SQL (its row gone,
        its index not) is dropped when the id is given out again."""
        self.deliver("old secret", self.bob)
        with self.conn:
            self.conn.execute("DELETE FROM users WHERE id = ?", (self.bob,))
        carol = self.addAccount("carol@example.test")
        self.assertEqual(self.found(carol, "secret"), (0, []))

    def test_anAccountWithoutATableFindsNothingAndGetsOneWithItsMail(self) -> None:
        """Accounts written straight into the users table (older tools) have
        no table until their first message: search says 0, never 500."""
        with self.conn:
            self.conn.execute(
                "INSERT INTO users (id, email, password_hash, created_at)"
                " VALUES (7, 'old@example.test', 'x', 'now')"
            )
        self.assertEqual(self.found(7, "anything"), (0, []))
        self.deliver("anything at all", 7)
        total, ranked = self.found(7, "anything")
        self.assertEqual((total, len(ranked)), (1, 1))

    def test_aMessageToTwoAccountsIsInBothIndexes(self) -> None:
        self.deliver("shared zeppelin", self.alice, self.bob)
        self.assertEqual(self.found(self.alice, "zeppelin")[0], 1)
        self.assertEqual(self.found(self.bob, "zeppelin")[0], 1)

    def test_aNulInTheQueryIsAWordBreak(self) -> None:
        """
        Found by tests/fuzz/fuzz_search.py: FTS5 ends a string at NUL, so
        C{q=zep%00pelin} was an "unterminated string" SQLite error (a 500).
        """
        self.deliver("shared zeppelin", self.alice)
        self.assertEqual(self.found(self.alice, "shared\x00zeppelin")[0], 1)
        self.assertEqual(self.found(self.alice, '"zep\x00pelin"')[0], 0)
        self.assertEqual(self.found(self.alice, "\x00zeppelin*")[0], 1)

    def _table(self, userId: int) -> str | None:
        row = self.conn.execute(
            "SELECT name FROM sqlite_master WHERE name = ?", (searchTable(userId),)
        ).fetchone()
        return None if row is None else row[0]
