"""store.backend and store.dsn: parsed, validated, and refused where unported."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from mailraven import config
from mailraven.service import makeService


class BackendConfigTests(TestCase):
    """The keys, their environment overrides and their checks."""

    def _file(self, text: str, mode: int) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_defaultIsSqlite(self):
        """Without configuration the store stays on SQLite."""
        self.assertEqual(config.load(environ={})["store.backend"], "sqlite")

    def test_environment(self):
        """MAILRAVEN_STORE_BACKEND and MAILRAVEN_STORE_DSN set the keys."""
        loaded = config.load(
            environ={
                "MAILRAVEN_STORE_BACKEND": "postgresql",
                "MAILRAVEN_STORE_DSN": "host=db dbname=mail",
            }
        )
        self.assertEqual(
            (loaded["store.backend"], loaded["store.dsn"]),
            ("postgresql", "host=db dbname=mail"),
        )

    def test_unknownBackend(self):
        """Only sqlite and postgresql are backends."""
        with self.assertRaises(config.ConfigError):
            config.load(environ={"MAILRAVEN_STORE_BACKEND": "mysql"})

    def test_postgresqlNeedsDsn(self):
        """postgresql without a dsn is a configuration error naming store.dsn."""
        with self.assertRaises(config.ConfigError) as caught:
            config.load(environ={"MAILRAVEN_STORE_BACKEND": "postgresql"})
        self.assertIn("store.dsn", str(caught.exception))

    def test_passwordInReadableFile(self):
        """A dsn with a password in a group/world-readable file is refused."""
        for dsn in ("host=db password=s3cret", "postgresql://u:s3cret@db/mail"):
            path = self._file(
                f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n', 0o644
            )
            with self.assertRaises(config.ConfigError) as caught:
                config.load(path, environ={})
            self.assertIn("0600", str(caught.exception))

    def test_passwordInPrivateFile(self):
        """The same dsn in a 0600 file loads."""
        path = self._file(
            '[store]\nbackend = "postgresql"\ndsn = "host=db password=s3cret"\n',
            0o600,
        )
        self.assertEqual(
            config.load(path, environ={})["store.dsn"], "host=db password=s3cret"
        )

    def test_passfileInReadableFile(self):
        """A dsn naming a passfile holds no secret: any mode will do."""
        path = self._file(
            '[store]\nbackend = "postgresql"\ndsn = "host=db passfile=/etc/pgpass"\n',
            0o644,
        )
        self.assertEqual(config.load(path, environ={})["store.backend"], "postgresql")


class UnportedBackendTests(TestCase):
    """The server does not start half on PostgreSQL."""

    def test_refusedAtStart(self):
        """makeService refuses postgresql, naming the parts not ported."""
        loaded = config.load(
            environ={
                "MAILRAVEN_STORE_BACKEND": "postgresql",
                "MAILRAVEN_STORE_DSN": "host=127.0.0.1",
                "MAILRAVEN_SERVER_DATA_DIR": self.mktemp(),
            }
        )
        with self.assertRaises(config.ConfigError) as caught:
            makeService(loaded)
        self.assertIn("mailboxes and messages", str(caught.exception))
        self.assertIn("not ported", str(caught.exception))
