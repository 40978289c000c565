"""
A real PostgreSQL server for the tests.

One server per test run: started on first use in a temporary directory,
owned by an unprivileged user (PostgreSQL refuses to run as root, and CI runs
the tests as root), listening on a free loopback port and a unix socket in
that directory, with fsync and synchronous commit on because durability is
what the PostgreSQL store promises. Stopped at exit. Each test gets its own
database, copied from a template (C{createDatabase}).
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from twisted.trial.unittest import SkipTest

from tests.tools import inCI

USER = "nobody"
_server: PostgresServer | None = None
_names = itertools.count()


@dataclass
class PostgresServer:
    """A running PostgreSQL: where it lives and how to reach it."""

    directory: str
    port: int
    process: subprocess.Popen
    user: str

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for C{dbname} over loopback TCP."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}"

    def stop(self) -> None:
        """Fast shutdown, then remove the data directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def findBinaries() -> str:
    """
    The directory holding initdb and postgres. Without PostgreSQL the test is
    skipped on a developer's machine but fails in CI (.ci/run installs it).
    """
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(directory, "postgres")):
            return directory
    found = shutil.which("postgres")
    if found:
        return os.path.dirname(found)
    message = "postgresql is not installed (.ci/run installs it)"
    if inCI():
        raise AssertionError(message)
    raise SkipTest(message)


def _freePort() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _asUser(argv: list[str]) -> list[str]:
    """C{argv} run as the unprivileged test user when we are root."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", USER, "--", *argv]


def _userName() -> str:
    """The database superuser: the OS user initdb runs as."""
    if os.geteuid() == 0:
        return USER
    return pwd.getpwuid(os.geteuid()).pw_name


def _start() -> PostgresServer:
    """initdb, then postgres; wait until it accepts connections."""
    binaries = findBinaries()
    directory = tempfile.mkdtemp(prefix="mailraven-pg-")
    data = os.path.join(directory, "data")
    if os.geteuid() == 0:
        entry = pwd.getpwnam(USER)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        _asUser(
            [
                os.path.join(binaries, "initdb"),
                "-D",
                data,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    port = _freePort()
    log = open(os.path.join(directory, "postgres.log"), "wb")
    process = subprocess.Popen(
        _asUser(
            [
                os.path.join(binaries, "postgres"),
                "-D",
                data,
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={directory}",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = PostgresServer(directory, port, process, _userName())
    _waitReady(server)
    return server


def _waitReady(server: PostgresServer, timeout: float = 60.0) -> None:
    """Poll until a connection succeeds; a loaded machine may be slow."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(server.dsn(), connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if server.process.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(server.directory, "postgres.log")) as f:
                    output = f.read()
                server.stop()
                raise RuntimeError(f"postgres did not start:\n{output}") from None
            time.sleep(0.1)


def requirePsycopg() -> None:
    """psycopg is the optional C{postgresql} extra; CI installs the test extra."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        message = "psycopg is not installed (pip install .[postgresql])"
        if inCI():
            raise AssertionError(message) from None
        raise SkipTest(message) from None


def server() -> PostgresServer:
    """The run's PostgreSQL, started on first use and stopped at exit."""
    global _server
    requirePsycopg()
    if _server is None or _server.process.poll() is not None:
        _server = _start()
        atexit.register(_server.stop)
    return _server


def createDatabase(template: str = "template1") -> str:
    """A fresh database copied from C{template}; returns its DSN."""
    import psycopg

    running = server()
    name = f"test_{os.getpid()}_{next(_names)}"
    with psycopg.connect(running.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return running.dsn(name)
