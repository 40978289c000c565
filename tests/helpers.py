"""Shared test scaffolding: a real server tree on loopback ports."""

from __future__ import annotations

import os
import smtplib
import ssl
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from mailraven.config import load
from mailraven.service import makeService
from mailraven.store.files import SYNCER, Syncer

PASSWORD = "correct horse battery staple"


def testConfig(dataDir: str, **overrides: Any):
    """The embedded defaults on ephemeral loopback ports, data in C{dataDir}."""
    base = load(environ={})
    values = dict(
        server__hostname="mx.mailraven.test",
        server__domains=["example.test", "localhost"],
        server__data_dir=dataDir,
        smtp__listen=["tcp:0:interface=127.0.0.1"],
        submission__listen=["tcp:0:interface=127.0.0.1"],
        api__listen=["tcp:0:interface=127.0.0.1"],
        imap__listen=["tcp:0:interface=127.0.0.1"],
        imaps__listen=["tls:tcp:0:interface=127.0.0.1"],
        log__level="warn",
        # No real DNS from tests: the outbound queue's lookups go nowhere.
        dns__nameservers=["127.0.0.1:9"],
        mailauth__enabled=False,  # tests of SPF/DKIM/DMARC serve their own DNS
    )
    values.update(overrides)
    return base.with_(**values)


class RunningServer:
    """A started service tree; C{smtpPort}, C{apiPort} are the bound ports."""

    def __init__(
        self,
        testCase: Any,
        dataDir: str | None = None,
        syncer: Syncer = SYNCER,
        **overrides: Any,
    ) -> None:
        self.dataDir = dataDir or os.path.abspath(testCase.mktemp())
        self.config = testConfig(self.dataDir, **overrides)
        self.root = makeService(self.config, reactor, syncer=syncer)
        self.root.privilegedStartService()
        self.root.startService()
        testCase.addCleanup(self.stop)
        self._stopped = False

    def stop(self):
        if self._stopped:
            return None
        self._stopped = True
        return self.root.stopService()

    def _port(self, name: str) -> int:
        listener = next(iter(self.root.getServiceNamed(name)))
        return listener.address.port

    @property
    def smtpPort(self) -> int:
        return self._port("smtp")

    @property
    def submissionPort(self) -> int:
        return self._port("submission")

    @property
    def apiPort(self) -> int:
        return self._port("api")

    @property
    def imapPort(self) -> int:
        return self._port("imap")

    @property
    def imapsPort(self) -> int:
        listeners = list(self.root.getServiceNamed("imap"))
        return listeners[1].address.port

    @inlineCallbacks
    def addUser(self, email: str, password: str = PASSWORD, admin: bool = False):
        userId = yield self.root.users.add(email, password, admin=admin)
        return userId


def sendWithSmtplib(
    port: int,
    sender: str,
    recipients: list[str],
    message: bytes,
    starttls: bool = False,
) -> tuple[dict, tuple[int, bytes]]:
    """Blocking: run in a thread. Returns (refused recipients, reply to the dot)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.org")
        if starttls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            client.starttls(context=context)
            client.ehlo("client.example.org")
        refused = {}
        code, resp = client.mail(sender)
        if code != 250:
            return {r: (code, resp) for r in recipients}, (code, resp)
        for rcpt in recipients:
            code, resp = client.rcpt(rcpt)
            if code != 250:
                refused[rcpt] = (code, resp)
        if len(refused) == len(recipients):
            return refused, (0, b"")
        code, resp = client.data(message)
        return refused, (code, resp)


def sleep(seconds: float):
    return deferLater(reactor, seconds, lambda: None)


class CountingPasswordChecks:
    """Wraps a user store's C{authenticate}: every password check is counted."""

    def __init__(self, users: Any) -> None:
        self.calls = 0
        self._check = users.authenticate
        users.authenticate = self

    def __call__(self, email: str, password: str):
        self.calls += 1
        return self._check(email, password)
