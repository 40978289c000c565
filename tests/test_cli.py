"""The `mailraven` command, run as a subprocess like an operator would."""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import select
import socket
import stat
import subprocess
import sys
import termios

from twisted.trial.unittest import SynchronousTestCase

from mailraven.config import ConfigError, load
from tests.process import ROOT, ServerProcess, cli, environment, writeConfig

PW = "long enough pw\n"


class UserCommandTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.config, _ = writeConfig(self.dir)

    def run_(self, *args, stdin="", check=True):
        return cli("--config", self.config, *args, stdin=stdin, check=check)

    def test_addListPasswdDel(self):
        self.run_("user", "add", "Alice@Example.TEST", "--password-stdin", stdin=PW)
        self.run_("user", "add", "bob@example.test", "--password-stdin", stdin=PW)
        listed = self.run_("user", "list").stdout.decode().split()
        self.assertEqual(listed, ["Alice@example.test", "bob@example.test"])
        self.run_(
            "user",
            "passwd",
            "alice@example.test",
            "--password-stdin",
            stdin="another password\n",
        )
        self.run_("user", "del", "bob@example.test")
        self.assertEqual(
            self.run_("user", "list").stdout.decode().split(), ["Alice@example.test"]
        )

    def test_errorsAreClearAndNonZero(self):
        self.run_("user", "add", "alice@example.test", "--password-stdin", stdin=PW)
        again = self.run_(
            "user",
            "add",
            "alice@example.test",
            "--password-stdin",
            stdin=PW,
            check=False,
        )
        self.assertEqual(again.returncode, 1)
        self.assertIn(b"already exists (data dir /", again.stderr)
        bad = self.run_(
            "user",
            "add",
            "not-an-address",
            "--password-stdin",
            stdin=PW,
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
            "user",
            "add",
            "alice@example.test",
            "--password-stdin",
            stdin="hunter2hunter2\n",
        )
        conn = sqlite3.connect(os.path.join(self.dir, "data", "mailraven.db"))
        (stored,) = conn.execute("SELECT password_hash FROM users").fetchone()
        self.assertTrue(stored.startswith("$argon2id$"))
        self.assertNotIn("hunter2hunter2", stored)

    def test_verifyOnEmptyStore(self):
        self.run_("user", "list")
        result = self.run_("verify")
        self.assertIn(b"0 messages checked in ", result.stdout)
        self.assertIn(b": OK", result.stdout)

    def test_configAndDataDirAfterTheSubcommand(self):
        """`mailraven user add X --config FILE` as well as before the command."""
        cli(
            "user",
            "add",
            "a@example.test",
            "--password-stdin",
            "--config",
            self.config,
            stdin=PW,
        )
        listed = cli("user", "list", "--config", self.config).stdout.decode()
        self.assertEqual(listed.split(), ["a@example.test"])
        # --config before the command is kept, not reset by the sub-parser
        listed = cli("--config", self.config, "user", "list").stdout.decode()
        self.assertEqual(listed.split(), ["a@example.test"])
        other = os.path.join(self.dir, "other")
        cli(
            "quickstart",
            "me@example.org",
            "--data-dir",
            other,
            "--config",
            os.path.join(self.dir, "q.toml"),
        )
        listed = cli("user", "list", "--data-dir", other).stdout.decode()
        self.assertEqual(listed.split(), ["me@example.org"])

    def test_adminRoleIsGrantedListedAndRevoked(self):
        """Found by a new operator: no command made an existing account an
        admin, and C{user list} did not say who is one."""
        self.run_("user", "add", "a@example.test", "--password-stdin", stdin=PW)
        self.run_("user", "add", "b@example.test", "--password-stdin", stdin=PW)
        granted = self.run_("user", "admin", "B@example.test")
        self.assertIn("B@example.test is an admin", granted.stdout.decode())
        listed = self.run_("user", "list")
        self.assertIn("2 accounts, admin: b@example.test", listed.stderr.decode())
        self.assertEqual(
            listed.stdout.decode().split(), ["a@example.test", "b@example.test"]
        )
        revoked = self.run_("user", "admin", "b@example.test", "--revoke")
        self.assertIn("is no longer an admin", revoked.stdout.decode())
        self.assertIn("admin: none", self.run_("user", "list").stderr.decode())
        missing = self.run_("user", "admin", "c@example.test", check=False)
        self.assertEqual(missing.returncode, 1)
        self.assertIn(b"no such user: c@example.test", missing.stderr)

    def test_quickstartAccountIsAnAdmin(self):
        """The operator's own account may use the admin API at once."""
        other = os.path.join(self.dir, "other")
        cli(
            "quickstart",
            "me@example.org",
            "--data-dir",
            other,
            "--config",
            os.path.join(self.dir, "q.toml"),
        )
        listed = cli("user", "list", "--data-dir", other)
        self.assertIn("admin: me@example.org", listed.stderr.decode())

    def test_removingAnAliasesLastMemberSaysSo(self):
        for email in ("a@example.test", "b@example.test"):
            self.run_("user", "add", email, "--password-stdin", stdin=PW)
        self.run_("alias", "add", "solo@example.test", "a@example.test")
        self.run_(
            "alias", "add", "team@example.test", "a@example.test", "b@example.test"
        )
        removed = self.run_("user", "del", "a@example.test").stdout.decode()
        self.assertIn(
            "removed with it (it was their only member): solo@example.test", removed
        )
        self.assertNotIn("team@", removed)

    def test_aliasMembersAreRemovedOneByOne(self):
        for email in ("a@example.test", "b@example.test"):
            self.run_("user", "add", email, "--password-stdin", stdin=PW)
        self.run_(
            "alias", "add", "team@example.test", "a@example.test", "b@example.test"
        )
        out = self.run_("alias", "remove", "team@example.test", "B@example.test")
        self.assertIn(
            "removed B@example.test from team@example.test; left: a@example.test",
            out.stdout.decode(),
        )
        again = self.run_(
            "alias", "remove", "team@example.test", "b@example.test", check=False
        )
        self.assertEqual(again.returncode, 1)
        self.assertIn(
            b"no such alias: b@example.test in team@example.test", again.stderr
        )
        out = self.run_("alias", "remove", "team@example.test", "a@example.test")
        self.assertIn("the alias is gone", out.stdout.decode())
        self.assertEqual(self.run_("alias", "list").stdout, b"")

    def test_everyReplyNamesTheAbsoluteDataDir(self):
        dataDir = os.path.join(self.dir, "data")
        added = self.run_("user", "add", "a@example.test", "--password-stdin", stdin=PW)
        self.assertIn(f"(data dir {dataDir})", added.stdout.decode())
        listed = self.run_("user", "list")
        self.assertIn(
            f"1 accounts, admin: none (data dir {dataDir})", listed.stderr.decode()
        )
        self.assertEqual(listed.stdout.decode().split(), ["a@example.test"])
        removed = self.run_("user", "del", "a@example.test")
        self.assertIn(f"(data dir {dataDir})", removed.stdout.decode())

    def test_noDataDirIsRefusedNotCreated(self):
        """From another directory the default ./mailraven-data does not exist:
        say so, do not make a second, empty data dir."""
        elsewhere = os.path.join(self.dir, "elsewhere")
        os.makedirs(elsewhere)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "mailraven.cli",
                "user",
                "add",
                "a@localhost",
                "--password-stdin",
            ],
            input=PW.encode(),
            capture_output=True,
            env=environment(),
            cwd=elsewhere,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn(
            f"no data dir at {elsewhere}/mailraven-data".encode(), result.stderr
        )
        self.assertEqual(os.listdir(elsewhere), [])

    def test_shortPasswordIsRefused(self):
        short = self.run_(
            "user",
            "add",
            "a@example.test",
            "--password-stdin",
            stdin="123456789\n",
            check=False,
        )
        self.assertEqual(short.returncode, 1)
        self.assertIn(b"at least 10 characters", short.stderr)
        self.run_("user", "add", "a@example.test", "--password-stdin", stdin=PW)
        passwd = self.run_(
            "user",
            "passwd",
            "a@example.test",
            "--password-stdin",
            stdin="x\n",
            check=False,
        )
        self.assertEqual(passwd.returncode, 1)
        self.assertIn(b"at least 10 characters", passwd.stderr)

    def test_endOfInputAtThePromptIsAClearError(self):
        """Ctrl-D at the terminal's password prompt: one line, exit 1."""
        master, slave = os.openpty()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailraven.cli",
                "--config",
                self.config,
                "user",
                "add",
                "a@example.test",
            ],
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=environment(),
            cwd=ROOT,
            start_new_session=True,
            # the pty becomes the controlling terminal: getpass's /dev/tty
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.addCleanup(os.close, master)
        shown = b""
        while b"Password: " not in shown:  # the prompt: the terminal is read now
            ready, _, _ = select.select([master], [], [], 60)
            self.assertTrue(ready, f"no prompt, only {shown!r}")
            shown += os.read(master, 100)
        os.write(master, b"\x04")
        _, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn(b"mailraven: no password given", err)
        self.assertNotIn(b"Traceback", err)

    def test_helpHasNoMarkup(self):
        out = cli("--help").stdout.decode()
        self.assertIn("The mailraven command", out)
        self.assertNotRegex(out, r"[CLI]\{")

    def test_helpSaysHowToRunTheServer(self):
        """`mailraven --help` says the server itself runs under twistd."""
        out = cli("--help").stdout.decode()
        self.assertIn("twistd -n mailraven", out)

    def test_everyArgumentHasHelp(self):
        """No argument shows in --help without saying what it is."""
        from mailraven.cli import parser

        def walk(p, name):
            for action in p._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for sub, subParser in action.choices.items():
                        yield from walk(subParser, f"{name} {sub}")
                elif action.help is None:
                    yield f"{name}: {action.dest}"

        self.assertEqual(list(walk(parser(), "mailraven")), [])


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
        self.assertRegex(
            out,
            rf"Account me@example.org created in data dir {re.escape(dataDir)}"
            r" with password: \S+",
        )
        for record in (
            "MX    10 mail.example.org.",
            '"v=spf1 mx -all"',
            "._domainkey.example.org.",
            "_dmarc.example.org.",
            "_mta-sts.example.org.",
            "_smtp._tls.example.org.",
        ):
            self.assertIn(record, out)
        # a 2048-bit key is split into TXT strings of at most 255 octets
        self.assertRegex(
            out, r'"v=DKIM1; k=rsa; p=[A-Za-z0-9+/]{200,}" "[A-Za-z0-9+/=]+"'
        )
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


class ServerStartTests(SynchronousTestCase):
    """`twistd -n mailraven` that cannot start says why in one line, exit != 0."""

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.config, self.ports = writeConfig(self.dir)

    def twistd(self, config: str, **env: str) -> tuple[int, str]:
        result = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
            + ["-n", "--pidfile=", "mailraven", "--config", config],
            capture_output=True,
            env=environment(**env),
            cwd=ROOT,
            timeout=120,
        )
        return result.returncode, (result.stdout + result.stderr).decode()

    def test_portInUseStopsWithTheKeyAndNonZeroExit(self):
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", self.ports["smtp"]))
        taken.listen()
        code, out = self.twistd(self.config)
        self.assertNotEqual(code, 0, out)
        self.assertIn(
            f"mailraven: smtp.listen: cannot listen on tcp:{self.ports['smtp']}"
            ":interface=127.0.0.1: address already in use",
            out,
        )
        self.assertNotIn("Traceback", out)

    def test_badEndpointIsRefusedAtConfigLoad(self):
        code, out = self.twistd(self.config, MAILRAVEN_API_LISTEN="tcp:http")
        self.assertNotEqual(code, 0, out)
        self.assertEqual(
            out.strip().splitlines(),
            [
                "mailraven: bad value for api.listen (MAILRAVEN_API_LISTEN): "
                "'tcp:http' is not an endpoint: invalid literal for int() with "
                "base 10: 'http'"
            ],
        )

    def test_emptyMXListenersAreRefused(self):
        code, out = self.twistd(self.config, MAILRAVEN_SMTP_LISTEN="")
        self.assertNotEqual(code, 0, out)
        self.assertIn("bad value for smtp.listen (MAILRAVEN_SMTP_LISTEN)", out)
        self.assertIn('"none" runs without this listener', out)

    def test_noneMeansNoMXListener(self):
        self.assertEqual(
            load(environ={"MAILRAVEN_SMTP_LISTEN": "none"})["smtp.listen"], []
        )
        with self.assertRaises(ConfigError):
            load(environ={"MAILRAVEN_SMTP_LISTEN": "tcp:2525:bogus=1"})
        with self.assertRaises(ConfigError):
            load(environ={"MAILRAVEN_SUBMISSION_LISTEN": "tcp:70000"})

    def test_secondServerOnOneDataDirIsRefused(self):
        first = ServerProcess(self.config, os.path.join(self.dir, "first.log"))
        self.addCleanup(first.ensureStopped)
        first.waitForPort(self.ports["smtp"])
        otherDir = os.path.join(self.dir, "second")
        os.makedirs(otherDir)
        second, secondPorts = writeConfig(
            otherDir, server={"data_dir": os.path.join(self.dir, "data")}
        )
        code, out = self.twistd(second)
        self.assertNotEqual(code, 0, out)
        self.assertIn(
            f"mailraven: data dir {self.dir}/data is in use by another MailRaven"
            f" server (pid {first.proc.pid})",
            out,
        )
        self.assertTrue(first.terminate())
        # the lock went with the first server: the data dir starts again
        again = ServerProcess(second, os.path.join(self.dir, "again.log"))
        self.addCleanup(again.ensureStopped)
        again.waitForPort(secondPorts["smtp"])
        self.assertTrue(again.terminate())


class TwistdOptionsTests(SynchronousTestCase):
    """`twistd -n mailraven` finds its file as the CLI and the .tac do."""

    def setUp(self):
        self.path = os.path.abspath(self.mktemp())
        with open(self.path, "w") as f:
            f.write("[smtp]\nmax_recipients = 7\n")
        saved = os.environ.pop("MAILRAVEN_CONFIG", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "MAILRAVEN_CONFIG", saved)
        self.addCleanup(os.environ.pop, "MAILRAVEN_CONFIG", None)

    def test_configVariableIsReadWithoutTheOption(self):
        from mailraven.tap import Options

        os.environ["MAILRAVEN_CONFIG"] = self.path
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["config"], self.path)
        self.assertEqual(options.loaded["smtp.max_recipients"], 7)

    def test_optionWinsOverTheVariable(self):
        from mailraven.tap import Options

        os.environ["MAILRAVEN_CONFIG"] = "/nonexistent/mailraven.toml"
        options = Options()
        options.parseOptions(["--config", self.path])
        self.assertEqual(options.loaded["smtp.max_recipients"], 7)
