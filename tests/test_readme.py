"""The README's first commands, run as written: they fail here when they drift.

The commands are parsed from README.md, never copied: the first shell block's
two commands (install + run, the test suite) and the next block's (user add,
swaks, the API login and list). The install makes a fresh venv from a copy of
the checkout with pip's ordinary index and cache, as a new user's would; the
only changes made to a command are the ports (free ones instead of 2525 and
8080, given to the server as MAILRAVEN_*_LISTEN) and the password placeholder.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.process import ROOT, freePort
from tests.tools import requireTool

PASSWORD = "readme-password-1"


def shellBlocks(text: str) -> list[list[str]]:
    """Each ```sh block's commands: comments dropped, continuations joined."""
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", text, re.S):
        commands, pending = [], ""
        for line in body.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending += line
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            commands.append(re.sub(r"\s+#\s.*$", "", pending).strip())
            pending = ""
        blocks.append(commands)
    return blocks


def readme() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


class ReadmeTextTests(SynchronousTestCase):
    def test_firstBlockIsInstallAndRunThenTheSuite(self):
        first = shellBlocks(readme())[0]
        self.assertEqual(len(first), 2)
        self.assertIn("python3 -m venv", first[0])
        self.assertTrue(first[0].endswith("twistd -n mailraven"))
        self.assertIn("tox", first[1])

    def test_ciRunsTheReadmeTestCommand(self):
        suite = shellBlocks(readme())[0][1]
        with open(os.path.join(ROOT, ".ci", "run")) as f:
            self.assertIn(f"( {suite} )", f.read())

    def test_logRecipeSkipsTheTextLines(self):
        """The jq recipe keeps the JSON events and skips first-start text."""
        requireTool("jq", "the README's log recipe")
        recipe = re.search(r"\| (jq [^`]*)`", readme()).group(1)
        lines = (
            "MX  example.org.  mx.example.org.\n"
            '{"event": "listening", "log_level": "info"}\n'
            '{"log_level": "info", "text": "no event"}\n'
        )
        out = subprocess.run(
            recipe, shell=True, input=lines, capture_output=True, text=True
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(
            out.stdout.split(),
            ["{", '"event":', '"listening",', '"log_level":', '"info"', "}"],
        )


class QuickStartTests(SynchronousTestCase):
    """A new user's first minutes, from an empty directory."""

    def setUp(self) -> None:
        requireTool("swaks", "the README sends its first message with it")
        requireTool("curl", "the README reads the API with it")
        self.work = tempfile.mkdtemp(prefix="mailraven-readme-")
        self.addCleanup(shutil.rmtree, self.work, True)
        self.checkout = os.path.join(self.work, "mailraven")
        shutil.copytree(
            ROOT,
            self.checkout,
            ignore=shutil.ignore_patterns(
                ".git", ".tox", ".venv*", "_trial_temp*", "mailraven-data", "build"
            ),
        )
        self.smtp, self.api, self.imap = freePort(), freePort(), freePort()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MAILRAVEN_", "VIRTUAL_ENV", "PYTHON"))
        }
        # tox's and the developer's venvs out of PATH: a new user has neither
        self.env["PATH"] = os.pathsep.join(
            p
            for p in self.env["PATH"].split(os.pathsep)
            if not os.path.exists(os.path.join(p, "activate"))
        )
        self.env.update(
            MAILRAVEN_SMTP_LISTEN=f"tcp:interface=127.0.0.1:port={self.smtp}",
            MAILRAVEN_SUBMISSION_LISTEN=f"tcp:interface=127.0.0.1:port={freePort()}",
            MAILRAVEN_API_LISTEN=f"tcp:interface=127.0.0.1:port={self.api}",
            MAILRAVEN_IMAP_LISTEN=f"tcp:interface=127.0.0.1:port={self.imap}",
            MAILRAVEN_IMAPS_LISTEN=f"tls:tcp:interface=127.0.0.1:port={freePort()}",
            # as in the image, so that the log recipe gets real events
            MAILRAVEN_LOG_FORMAT="json",
        )

    def ported(self, command: str) -> str:
        return (
            command.replace(":2525", f":{self.smtp}")
            .replace(":8080", f":{self.api}")
            .replace(":2143", f":{self.imap}")
            .replace('"password": "..."', f'"password": "{PASSWORD}"')
            .replace("alice@localhost:...", f"'alice@localhost:{PASSWORD}'")
        )

    def run_(self, command: str, **kwargs) -> subprocess.CompletedProcess:
        out = subprocess.run(
            command,
            shell=True,
            cwd=self.checkout,
            env=self.env,
            capture_output=True,
            text=True,
            **kwargs,
        )
        self.assertEqual(
            out.returncode, 0, f"{command}\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        )
        return out

    def addUserAtATerminal(self, command: str) -> str:
        """C{user add} as typed: it asks twice for the password on a terminal."""
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=self.checkout,
            env=self.env,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=slave,
            start_new_session=True,  # no controlling tty: getpass reads stdin
        )
        os.close(slave)
        # getpass flushes what was typed ahead: answer each prompt once shown
        for prompt in (b"Password: ", b"Again: "):
            self.readUntil(master, prompt)
            os.write(master, f"{PASSWORD}\n".encode())
        out, _ = proc.communicate(timeout=60)
        os.close(master)
        self.assertEqual(proc.returncode, 0, out)
        return out.decode()

    def readUntil(self, fd: int, wanted: bytes) -> None:
        seen = b""
        deadline = time.monotonic() + 30
        while not seen.endswith(wanted):
            self.assertLess(time.monotonic(), deadline, seen)
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                seen += os.read(fd, 1)

    def startServer(self, command: str) -> subprocess.Popen:
        log = open(os.path.join(self.work, "server.log"), "w+")
        self.addCleanup(log.close)
        server = subprocess.Popen(
            command,
            shell=True,
            cwd=self.checkout,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def stop() -> None:
            os.killpg(server.pid, 15)
            server.wait(60)

        self.addCleanup(stop)
        deadline = time.monotonic() + 60
        ready = self.env["MAILRAVEN_API_LISTEN"]
        while ready not in open(log.name).read():
            self.assertIsNone(server.poll(), open(log.name).read())
            self.assertLess(time.monotonic(), deadline, open(log.name).read())
            time.sleep(0.2)
        return server

    def test_quickStartAsWritten(self):
        blocks = shellBlocks(readme())
        install, _, serve = blocks[0][0].rpartition(" && ")
        started = time.monotonic()
        self.run_(install, timeout=600)
        installSeconds = time.monotonic() - started
        self.startServer(serve)

        userAdd, swaks, login, listing, imap = blocks[1]
        self.assertIn(
            "added alice@localhost (data dir ", self.addUserAtATerminal(userAdd)
        )
        sent = self.run_(self.ported(swaks), timeout=60)
        self.assertIn("250 2.0.0 Ok", sent.stdout)
        listed = self.run_(f"{self.ported(login)}; {self.ported(listing)}", timeout=60)
        self.assertIn('"sender"', listed.stdout)
        self.assertIn("alice@localhost", listed.stdout)
        fetched = self.run_(self.ported(imap), timeout=60)
        self.assertIn("Received: from ", fetched.stdout)
        # the README's log recipe over this server's real output
        requireTool("jq", "the README's log recipe")
        recipe = re.search(r"\| (jq [^`]*)`", readme()).group(1)
        events = self.run_(f"{recipe} < {self.work}/server.log", timeout=60)
        self.assertIn('"event": "listening"', events.stdout)
        # a fresh venv from pip's cache; the budget says when it got slow
        self.assertLess(installSeconds, 120)
