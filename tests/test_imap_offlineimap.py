"""offlineimap (Debian offlineimap3), a client nobody here wrote, syncing
with the server over implicit TLS verified against a test CA: a full sync
into an empty Maildir, then incremental syncs after changes on each side."""

from __future__ import annotations

import glob
import os
import re
import subprocess

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.helpers import PASSWORD
from tests.test_imap_imapclient import TrustedServer, message
from tests.test_mobile_api import APIClient
from tests.tools import requireTool

CORPUS = os.path.join(os.path.dirname(__file__), "corpus")
DAMAGED = "08-bare-cr-lf-mixed-body.eml"

CONFIG = """\
[general]
accounts = mailraven
metadata = {work}/metadata
ui = basic

[Account mailraven]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {maildir}
sep = /

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {port}
remoteuser = alice@example.test
remotepass = {password}
ssl = yes
sslcacertfile = {ca}
"""


def lf(data: bytes) -> bytes:
    """A message as offlineimap's Maildir file holds it: every line end
    (CRLF, and a bare CR too) written as LF."""
    return re.sub(rb"\r\n?", b"\n", data)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def flagsOf(path: str) -> str:
    """The Maildir flags of a message file (the letters after ':2,')."""
    return path.rpartition(":2,")[2]


def _clientEnvironment(home: str) -> dict[str, str]:
    """offlineimap runs on Debian's python3: the paths of the Python running
    the tests (trial's workers get all of them in PYTHONPATH) would make it
    import another build's standard library."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HOME"] = home
    return env


class OfflineIMAPTests(TestCase):
    timeout = 300

    @inlineCallbacks
    def setUp(self):
        self.offlineimap = requireTool("offlineimap", "the IMAP sync test")
        self.trusted = TrustedServer(self)
        self.server = self.trusted.server
        yield self.server.addUser("alice@example.test")
        self.work = os.path.abspath(self.mktemp())
        self.maildir = os.path.join(self.work, "mail")
        os.makedirs(self.maildir)
        self.config = os.path.join(self.work, "offlineimaprc")
        with open(self.config, "w") as f:
            f.write(
                CONFIG.format(
                    work=self.work,
                    maildir=self.maildir,
                    port=self.server.imapsPort,
                    password=PASSWORD,
                    ca=self.trusted.ca.caPath,
                )
            )

    def sync(self):
        def run():
            out = subprocess.run(
                [self.offlineimap, "-c", self.config, "-o", "-u", "basic"],
                capture_output=True,
                text=True,
                timeout=120,
                env=_clientEnvironment(self.work),
            )
            output = out.stdout + out.stderr
            assert out.returncode == 0, output
            assert "ERROR" not in output, output
            return output

        return deferToThread(run)

    def local(self, folder: str = "INBOX") -> list[str]:
        found = []
        for sub in ("cur", "new"):
            found += glob.glob(os.path.join(self.maildir, folder, sub, "*"))
        return sorted(found)

    def imap(self, f, *args):
        def run():
            client = self.trusted.client()
            try:
                return f(client, *args)
            finally:
                client.logout()

        return deferToThread(run)

    @inlineCallbacks
    def test_fullThenIncrementalSyncBothWays(self):
        with open(os.path.join(CORPUS, DAMAGED), "rb") as f:
            damaged = f.read()
        sent = [message(b"one"), message(b"two"), message(b"three"), damaged]
        for data in sent:
            yield deferToThread(self.trusted.deliver, data)

        # full sync into an empty Maildir
        yield self.sync()
        for name in ("Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"):
            self.assertTrue(os.path.isdir(os.path.join(self.maildir, name)), name)
        files = self.local()
        self.assertEqual(len(files), 4)

        def server(client):
            client.select_folder("INBOX", readonly=True)
            uids = client.search("ALL")
            return client.fetch(uids, ["FLAGS", "BODY.PEEK[]"])

        remote = yield self.imap(server)
        bodies = []
        for path in files:
            with open(path, "rb") as f:
                bodies.append(f.read())
        self.assertEqual(
            sorted(bodies), sorted(lf(item[b"BODY[]"]) for item in remote.values())
        )
        self.assertTrue(any(body.endswith(lf(damaged)) for body in bodies))
        byBody = dict(zip(bodies, files, strict=True))
        uidOf = {lf(item[b"BODY[]"]): uid for uid, item in remote.items()}

        # flagged on each side
        def find(data: bytes) -> bytes:
            return next(body for body in bodies if body.endswith(lf(data)))

        one, two, three = (find(message(s)) for s in (b"one", b"two", b"three"))
        os.rename(byBody[one], byBody[one] + "S")  # read locally
        api = APIClient(self, self.server.apiPort)
        yield api.login()
        listed = (yield api.json("GET", "/messages"))["messages"]
        twoId = next(m["id"] for m in listed if m["subject"] == "two")
        yield api.json("PATCH", f"/messages/{twoId}", {"starred": True})

        def flagThree(client):
            client.select_folder("INBOX")
            client.add_flags([uidOf[three]], [b"\\Answered"])

        yield self.imap(flagThree)
        yield self.sync()

        def flags(client):
            client.select_folder("INBOX", readonly=True)
            return client.get_flags(client.search("ALL"))

        remoteFlags = yield self.imap(flags)
        self.assertIn(b"\\Seen", remoteFlags[uidOf[one]])
        localFlags = {}
        for path in self.local():
            with open(path, "rb") as f:
                localFlags[f.read()] = flagsOf(path)
        self.assertIn("F", localFlags[two])
        self.assertIn("R", localFlags[three])
        self.assertIn("S", localFlags[one])
        readOne = yield api.json(
            "GET",
            f"/messages/{next(m['id'] for m in listed if m['subject'] == 'one')}",
        )
        self.assertTrue(readOne["read_state"])

        # deleted locally: expunged on the server; written locally: appended;
        # a folder created on the server appears locally
        [threePath] = [p for p in self.local() if read(p) == three]
        os.remove(threePath)
        written = lf(message(b"written locally"))
        with open(os.path.join(self.maildir, "INBOX", "new", "1.local"), "wb") as f:
            f.write(written)

        def create(client):
            client.create_folder("Projects/2026")

        yield self.imap(create)
        yield self.sync()
        remote = yield self.imap(server)
        kept = sorted(uidOf[b] for b in bodies if b != three)
        self.assertEqual(sorted(remote)[:3], kept)
        [(new, item)] = [(uid, item) for uid, item in remote.items() if uid not in kept]
        self.assertGreater(new, max(kept))
        self.assertIn(b"Subject: written locally\r\n", item[b"BODY[]"])
        self.assertTrue(os.path.isdir(os.path.join(self.maildir, "Projects/2026")))
        self.assertEqual(len(self.local()), 4)
