"""PostgresDatabase on a real PostgreSQL: migrations, commit, rollback."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests import postgres


class PostgresDatabaseTests(TestCase):
    """The service migrates at start and commits before firing."""

    def setUp(self) -> defer.Deferred:
        from mailraven.store.postgres.database import PostgresDatabase

        self.dsn = postgres.createDatabase()
        self.db = PostgresDatabase(self.dsn)
        d = defer.ensureDeferred(self.db.startService())
        self.addCleanup(self.db.stopService)
        return d

    def _version(self, conn) -> int:
        return conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]

    @defer.inlineCallbacks
    def test_migrated(self):
        """Started, the database is at the newest migration's version."""
        from mailraven.store.postgres.database import migrations

        version = yield self.db.runInteraction(self._version)
        self.assertEqual(version, migrations()[-1][0])

    @defer.inlineCallbacks
    def test_migrateTwice(self):
        """A second start applies nothing again (tables exist: no error)."""
        from mailraven.store.postgres.database import PostgresDatabase, migrations

        again = PostgresDatabase(self.dsn)
        yield again.startService()
        self.addCleanup(again.stopService)
        count = yield again.runInteraction(
            lambda c: c.execute("SELECT count(*) FROM schema_version").fetchone()[0]
        )
        self.assertEqual(count, len(migrations()))

    @defer.inlineCallbacks
    def test_committedBeforeFiring(self):
        """What an interaction wrote is visible to a new connection when it fires."""
        import psycopg

        yield self.db.runInteraction(
            lambda c: c.execute(
                "INSERT INTO domains VALUES ('example.org', 's1', 'now')"
            )
        )
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute("SELECT name FROM domains").fetchall()
        self.assertEqual(rows, [("example.org",)])

    @defer.inlineCallbacks
    def test_failureRollsBack(self):
        """An interaction that raises writes nothing."""

        def half(conn):
            conn.execute("INSERT INTO domains VALUES ('example.net', 's', 'now')")
            raise ValueError("stop")

        yield self.assertFailure(self.db.runInteraction(half), ValueError)
        count = yield self.db.runInteraction(
            lambda c: c.execute("SELECT count(*) FROM domains").fetchone()[0]
        )
        self.assertEqual(count, 0)
