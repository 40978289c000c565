"""
L{PostgresDatabase}: a psycopg connection pool used only from a thread pool
the service owns, so nothing blocks the reactor, and numbered migrations kept
as SQL files next to this module.

Durability: every interaction runs in one transaction that is committed
before its Deferred fires, so a caller acknowledges only what PostgreSQL has
made durable (the server runs with fsync and synchronous_commit on).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Callable, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")
_MIGRATIONS = "mailraven.store.postgres.migrations"


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every migration shipped, in order; files are NNNN_name.sql."""
    found = []
    for entry in resources.files(_MIGRATIONS).iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


def migrate(conn: Any) -> int:
    """
    Apply the migrations newer than the database's version, each in its own
    transaction with the version row it sets; returns the version reached.
    An advisory lock keeps two starting servers from migrating at once.
    """
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL"
            " DEFAULT now())"
        )
    version = 0
    for number, sql in migrations():
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7262730)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            if (row[0] or 0) < number:
                conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_version (version) VALUES (%s)", (number,)
                )
        version = number
    return version


class PostgresDatabase(Service):
    """
    The PostgreSQL connection pool and the threads that use it. Started, it
    has migrated the schema; stopped, its threads and connections are gone.
    """

    def __init__(self, dsn: str, reactor: Any = None, size: int = 4) -> None:
        if reactor is None:
            from twisted.internet import reactor as defaultReactor

            reactor = defaultReactor
        self.dsn = dsn
        self._reactor = reactor
        self._size = size
        self._threads = ThreadPool(minthreads=0, maxthreads=size, name="postgres")
        self._pool: Any = None

    def startService(self) -> Deferred:
        """Start the threads, open the pool, migrate; fires when usable."""
        super().startService()
        self._threads.start()
        return self._inThread(self._open)

    def _open(self) -> int:
        from psycopg_pool import ConnectionPool

        self._pool = ConnectionPool(
            self.dsn, min_size=1, max_size=self._size, open=True, timeout=30
        )
        with self._pool.connection() as conn:
            conn.autocommit = True
            try:
                return migrate(conn)
            finally:
                conn.autocommit = False

    def stopService(self) -> Deferred:
        """Close the pool in a thread, then stop the threads."""
        super().stopService()
        d = self._inThread(self._close)
        d.addBoth(lambda result: self._threads.stop() or result)
        return d

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _inThread(self, f: Callable[..., T], *args: Any) -> Deferred:
        return deferToThreadPool(self._reactor, self._threads, f, *args)

    def runInteraction(self, f: Callable[..., T], *args: Any) -> Deferred:
        """
        C{f(conn, *args)} in one transaction on a pooled connection, off the
        reactor; the Deferred fires with its result after the commit, or
        fails (nothing written) if C{f} or the commit raised.
        """
        return self._inThread(self._interact, f, args)

    def _interact(self, f: Callable[..., T], args: tuple) -> T:
        with self._pool.connection() as conn:
            with conn.transaction():
                return f(conn, *args)
