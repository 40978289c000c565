"""The `mailraven` command, run as a subprocess like an operator would."""

from __future__ import annotations

import os
import re
import stat

from twisted.trial.unittest import SynchronousTestCase

from tests.process import cli, writeConfig


class UserCommandTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.config, _ = writeConfig(self.dir)

    def run_(self, *args, stdin="", check=True):
        return cli("--config", self.config, *args, stdin=stdin, check=check)

    def test_addListPasswdDel(self):
        self.run_("user", "add", "Alice@Example.TEST", "--password-stdin", stdin="pw\n")
        self.run_("user", "add", "bob@example.test", "--password-stdin", stdin="pw\n")
        listed = self.run_("user", "list").stdout.decode().split()
        self.assertEqual(listed, ["Alice@example.test", "bob@example.test"])
        self.run_(
            "user", "passwd", "alice@example.test", "--password-stdin", stdin="new\n"
        )
        self.run_("user", "del", "bob@example.test")
        self.assertEqual(
            self.run_("user", "list").stdout.decode().split(), ["Alice@example.test"]
        )

    def test_errorsAreClearAndNonZero(self):
        self.run_("user", "add", "alice@example.test", "--password-stdin", stdin="pw\n")
        again = self.run_(
            "user",
            "add",
            "alice@example.test",
            "--password-stdin",
            stdin="pw\n",
            check=False,
        )
        self.assertEqual(again.returncode, 1)
        self.assertIn(b"already exists", again.stderr)
        bad = self.run_(
            "user",
            "add",
            "not-an-address",
            "--password-stdin",
            stdin="pw\n",
            check=False,
        )
        self.assertIn(b"not an email address", bad.stderr)
        missing = self.run_("user", "del", "ghost@example.test", check=False)
        self.assertIn(b"no such user", missing.stderr)
        empty = self.run_(
            "user", "add", "x@example.test", "--password-stdin", stdin="\n", check=False
        )
        self.assertIn(b"must not be empty", empty.stderr)

    def test_passwordsAreArgon2Hashes(self):
        import sqlite3

        self.run_(
            "user", "add", "alice@example.test", "--password-stdin", stdin="hunter2\n"
        )
        conn = sqlite3.connect(os.path.join(self.dir, "data", "mailraven.db"))
        (stored,) = conn.execute("SELECT password_hash FROM users").fetchone()
        self.assertTrue(stored.startswith("$argon2id$"))
        self.assertNotIn("hunter2", stored)

    def test_verifyOnEmptyStore(self):
        self.run_("user", "list")
        result = self.run_("verify")
        self.assertIn(b"0 messages checked: OK", result.stdout)


class QuickstartTests(SynchronousTestCase):
    def test_writesConfigKeyAndPrintsRecords(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        configPath = os.path.join(directory, "mailraven.toml")
        dataDir = os.path.join(directory, "data")
        result = cli(
            "--config",
            configPath,
            "quickstart",
            "me@example.org",
            "--data-dir",
            dataDir,
        )
        out = result.stdout.decode()
        # the account exists and its printed password is shown once
        self.assertRegex(out, r"Account me@example.org created with password: \S+")
        for record in (
            "MX   10 mail.example.org.",
            '"v=spf1 mx -all"',
            "._domainkey.example.org.",
            "_dmarc.example.org.",
            "_mta-sts.example.org.",
            "_smtp._tls.example.org.",
        ):
            self.assertIn(record, out)
        self.assertRegex(out, r'"v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]{300,}"')
        with open(configPath) as f:
            self.assertIn('domains = ["example.org"]', f.read())
        self.assertEqual(stat.S_IMODE(os.stat(configPath).st_mode), 0o600)
        selector = re.search(r"(mailraven\d{6})\._domainkey", out).group(1)
        key = os.path.join(dataDir, "dkim", selector + ".key")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        # the written config is one the server and the CLI accept
        listed = cli("--config", configPath, "user", "list").stdout.decode()
        self.assertEqual(listed.split(), ["me@example.org"])
        again = cli("--config", configPath, "quickstart", "me@example.org", check=False)
        self.assertEqual(again.returncode, 1)
        self.assertIn(b"exists already", again.stderr)
