"""/health and /metrics over real HTTP (treq), and the twistd plugin itself."""

from __future__ import annotations

import os
import subprocess
import sys

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool
from zope.interface.verify import verifyObject

from mailraven.diskguard import DiskGuard
from mailraven.interfaces import IDiskGuard
from mailraven.metrics import Metrics
from mailraven.testing import FakeDiskGuard
from tests.helpers import RunningServer, sendWithSmtplib
from tests.process import ROOT, environment


class HealthAndMetricsTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        self.base = f"http://127.0.0.1:{self.server.apiPort}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

    def get(self, path: str):
        return treq.get(self.base + path, pool=self.pool)

    @inlineCallbacks
    def test_healthIsOkWithEveryCheck(self):
        response = yield self.get("/health")
        self.assertEqual(response.code, 200)
        body = yield response.json()
        self.assertEqual(body["status"], "ok")
        self.assertEqual(
            set(body["checks"]),
            {"store", "disk", "listeners", "backup", "dnsbl", "tls", "workers"},
        )
        self.assertEqual(body["checks"]["workers"]["configured"], 4)
        self.assertEqual(body["checks"]["listeners"]["status"], "ok")
        [served] = body["checks"]["tls"]["certificates"]
        self.assertEqual(
            (served["source"], served["names"]),
            ("self-signed", ["mx.mailraven.test", "mta-sts.example.test"]),
        )

    @inlineCallbacks
    def test_healthIsDownWhenTheStoreIsNotWritable(self):
        tmp = os.path.join(self.server.dataDir, "tmp")
        os.rename(tmp, tmp + ".gone")
        self.addCleanup(os.rename, tmp + ".gone", tmp)
        response = yield self.get("/health")
        self.assertEqual(response.code, 503)
        body = yield response.json()
        self.assertEqual(
            (body["status"], body["checks"]["store"]["status"]), ("down", "down")
        )

    @inlineCallbacks
    def test_metricsCountSessionsMessagesRejections(self):
        yield deferToThread(
            sendWithSmtplib,
            self.server.smtpPort,
            "bob@example.org",
            ["alice@example.test", "nobody@example.test"],
            b"Subject: m\r\n\r\nx\r\n",
        )
        response = yield self.get("/metrics")
        text = yield response.text()
        self.assertIn("mailraven_smtp_sessions_total 1.0", text)
        self.assertIn('mailraven_smtp_messages_total{result="accepted"} 1.0', text)
        self.assertIn(
            'mailraven_smtp_rejections_total{reason="unknown_user"} 1.0', text
        )
        self.assertIn("mailraven_store_commit_seconds_count", text)

    @inlineCallbacks
    def test_unknownPathIsJSON404(self):
        response = yield self.get("/nope")
        self.assertEqual(response.code, 404)
        self.assertEqual((yield response.json())["error"], "not_found")


class DiskGuardTests(SynchronousTestCase):
    def test_interfaces(self):
        guard = DiskGuard("/", 80, 95, usage=lambda p: (10.0, 1))
        self.assertTrue(verifyObject(IDiskGuard, guard))
        self.assertTrue(verifyObject(IDiskGuard, FakeDiskGuard()))

    def test_thresholds(self):
        usage = [50.0]
        guard = DiskGuard(
            "/", 80, 95, Metrics(), usage=lambda p: (usage[0], 1), clock=Clock()
        )
        self.assertEqual((guard.state, guard.acceptingMail()), ("ok", True))
        for used, state, accepting in (
            (85.0, "warn", True),
            (96.0, "full", False),
            (40.0, "ok", True),
        ):
            guard._record((used, 1))
            self.assertEqual((guard.state, guard.acceptingMail()), (state, accepting))


class PluginTests(SynchronousTestCase):
    def test_twistdListsTheMailravenPlugin(self):
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "mailraven",
                "--help",
            ],
            capture_output=True,
            env=environment(),
            cwd=ROOT,
            timeout=60,
        )
        self.assertIn(b"--config", result.stdout, result.stderr)

    def test_tacBuildsTheSameTree(self):
        namespace: dict = {}
        dataDir = os.path.abspath(self.mktemp())
        os.environ["MAILRAVEN_SERVER_DATA_DIR"] = dataDir
        self.addCleanup(os.environ.pop, "MAILRAVEN_SERVER_DATA_DIR")
        with open(os.path.join(ROOT, "ops", "mailraven.tac")) as f:
            exec(compile(f.read(), "mailraven.tac", "exec"), namespace)
        from twisted.application.service import IServiceCollection
        from twisted.logger import ILogObserver

        collection = IServiceCollection(namespace["application"])
        [root] = list(collection)
        self.assertEqual(
            {s.name for s in root if s.name},
            {
                "lock",
                "db",
                "files",
                "workers",
                "disk",
                "tls",
                "policy",
                "backup",
                "smtp",
                "submission",
                "imap",
                "api",
                "queue",
                "quotawarnings",
            },
        )
        self.assertIsNotNone(namespace["application"].getComponent(ILogObserver))
        self.assertTrue(os.path.exists(os.path.join(dataDir, "mailraven.db")))
