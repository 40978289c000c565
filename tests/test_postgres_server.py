"""The tests' PostgreSQL (tests/postgres.py) runs and keeps what it commits."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests import postgres


class PostgresServerTests(TestCase):
    """A real server, reached over loopback, one database per test."""

    def test_connectAndCommit(self) -> None:
        """A committed row is read back from a new connection."""
        import psycopg

        dsn = postgres.createDatabase()
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE t (v text)")
            conn.execute("INSERT INTO t VALUES ('kept')")
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT v FROM t").fetchall()
        self.assertEqual(rows, [("kept",)])

    def test_durabilitySettings(self) -> None:
        """fsync and synchronous_commit are on: the store's promise needs them."""
        import psycopg

        with psycopg.connect(postgres.createDatabase()) as conn:
            fsync = conn.execute("SHOW fsync").fetchone()
            sync = conn.execute("SHOW synchronous_commit").fetchone()
        self.assertEqual((fsync, sync), (("on",), ("on",)))

    def test_databasesAreSeparate(self) -> None:
        """Two tests' databases do not share tables."""
        import psycopg

        first, second = postgres.createDatabase(), postgres.createDatabase()
        self.assertNotEqual(first, second)
        with psycopg.connect(first) as conn:
            conn.execute("CREATE TABLE only_here (v int)")
        with psycopg.connect(second) as conn:
            rows = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'"
            ).fetchone()
        self.assertEqual(rows, (0,))
