"""mbsync (Debian isync), a client nobody here wrote, syncing with the
server: a full sync, then incremental syncs after flags change on each side."""

from __future__ import annotations

import glob
import os
import re
import ssl
import subprocess

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.helpers import PASSWORD, RunningServer
from tests.test_imap_e2e import ORIGINAL, sendBySMTP, starttls
from tests.test_mobile_api import APIClient
from tests.tools import requireTool

CONFIG = """\
IMAPAccount mailraven
Host 127.0.0.1
Port {port}
User alice@example.test
Pass "{password}"
SSLType STARTTLS
SystemCertificates no
CertificateFile {certificate}

IMAPStore remote
Account mailraven

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel everything
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
"""


def serverCertificate(port: int) -> str:
    """The certificate the server presents, as PEM (trusted as a host cert)."""
    client = starttls(port)
    der = client.sock.getpeercert(binary_form=True)
    client.shutdown()
    return ssl.DER_cert_to_PEM_cert(der)


class MbsyncTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.mbsync = requireTool("mbsync", "the IMAP sync test")
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        self.work = os.path.abspath(self.mktemp())
        self.maildir = os.path.join(self.work, "mail")
        os.makedirs(self.maildir)
        certificate = os.path.join(self.work, "server.pem")
        pem = yield deferToThread(serverCertificate, self.server.imapPort)
        with open(certificate, "w") as f:
            f.write(pem)
        self.config = os.path.join(self.work, "mbsyncrc")
        with open(self.config, "w") as f:
            f.write(
                CONFIG.format(
                    port=self.server.imapPort,
                    password=PASSWORD,
                    certificate=certificate,
                    maildir=self.maildir,
                )
            )

    def sync(self):
        def run():
            out = subprocess.run(
                [self.mbsync, "-c", self.config, "-a"],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "HOME": self.work},
            )
            assert out.returncode == 0, out.stdout + out.stderr
            return out

        return deferToThread(run)

    def inbox(self) -> list[str]:
        return glob.glob(os.path.join(self.maildir, "INBOX", "cur", "*")) + glob.glob(
            os.path.join(self.maildir, "INBOX", "new", "*")
        )

    @inlineCallbacks
    def test_fullThenIncrementalSyncBothWays(self):
        yield deferToThread(sendBySMTP, self.server.smtpPort, ORIGINAL)
        yield self.sync()
        folders = sorted(os.listdir(self.maildir))
        for name in ("Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"):
            self.assertIn(name, folders)
        [path] = self.inbox()
        with open(path, "rb") as f:
            stored = f.read()
        # maildir lines end in LF and mbsync adds its X-TUID: byte for byte
        # otherwise
        stored = re.sub(rb"\nX-TUID: [^\n]*", b"", stored)
        self.assertTrue(stored.endswith(ORIGINAL.replace(b"\r\n", b"\n")), stored)
        self.assertNotIn("S", path.rpartition(":2,")[2])

        # the API reads and stars it; the next sync brings the flags down
        api = APIClient(self, self.server.apiPort)
        yield api.login()
        [summary] = (yield api.json("GET", "/messages"))["messages"]
        yield api.json(
            "PATCH", f"/messages/{summary['id']}", {"read_state": True, "starred": True}
        )
        yield self.sync()
        [path] = self.inbox()
        self.assertEqual(set(path.rpartition(":2,")[2]), {"F", "S"})

        # unstarred on this side (maildir flags), the next sync takes it up
        os.rename(path, path.rpartition(":2,")[0] + ":2,S")
        yield self.sync()
        message = yield api.json("GET", f"/messages/{summary['id']}")
        self.assertEqual((message["read_state"], message["starred"]), (True, False))
