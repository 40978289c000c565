"""The container entrypoint's logic, in-process (the image itself is tested
with podman by tests/container/smoke.sh, run from .ci/run)."""

from __future__ import annotations

import io
import os
import stat
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailraven import config as configuration
from mailraven.container import (
    EX_CONFIG,
    checkWritable,
    configFromEnvironment,
    firstStart,
    health,
    listenerPort,
)
from tests.helpers import RunningServer


class FirstStartTests(SynchronousTestCase):
    environ = {
        "MAILRAVEN_SERVER_HOSTNAME": "mail.example.test",
        "MAILRAVEN_SERVER_DOMAINS": "example.test,example.org",
        "MAILRAVEN_SUBMISSION_LISTEN": "tcp:587,tls:tcp:465",
        "MAILRAVEN_ACME_ENABLED": "true",
        "MAILRAVEN_ACME_DOMAINS": "mail.example.test mta-sts.example.test",
        "HOME": "/data",
    }

    def test_configKeepsTheEnvironmentsSettings(self):
        data = os.path.abspath(self.mktemp())
        os.makedirs(data)
        path = os.path.join(data, "mailraven.toml")
        with open(path, "w") as f:
            f.write(configFromEnvironment(self.environ, data))
        config = configuration.load(path, {})
        self.assertEqual(config["server.domains"], ["example.test", "example.org"])
        self.assertEqual(config["server.data_dir"], data)
        self.assertEqual(config["submission.listen"], ["tcp:587", "tls:tcp:465"])
        self.assertTrue(config["acme.enabled"])
        self.assertEqual(
            config["acme.domains"], ["mail.example.test mta-sts.example.test"]
        )

    def test_firstStartPrintsRecordsAndMakesPrivateFiles(self):
        data = os.path.abspath(self.mktemp())
        os.makedirs(data)
        path = os.path.join(data, "mailraven.toml")
        out = io.StringIO()
        with redirect_stdout(out):
            firstStart(data, path, self.environ)
        self.assertIn("_domainkey.example.test.", out.getvalue())
        self.assertIn("MX    10 mail.example.test.", out.getvalue())
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        [key] = os.listdir(os.path.join(data, "dkim"))
        mode = os.stat(os.path.join(data, "dkim", key)).st_mode
        self.assertEqual(stat.S_IMODE(mode), 0o600)
        with self.assertRaises(FileExistsError):  # never overwritten
            firstStart(data, path, self.environ)

    def test_unwritableDataIsAClearError(self):
        if os.getuid() == 0:
            data = "/proc/mailraven-data"  # not writable even by root
        else:
            data = os.path.abspath(self.mktemp())
            os.makedirs(data, mode=0o500)
        err = io.StringIO()
        with redirect_stderr(err), self.assertRaises(SystemExit) as e:
            checkWritable(data)
        self.assertEqual(e.exception.code, EX_CONFIG)
        self.assertIn("is not writable by uid", err.getvalue())

    def test_listenerPorts(self):
        self.assertEqual(listenerPort("tcp:25"), 25)
        self.assertEqual(listenerPort("haproxy:tls:tcp:465"), 465)
        self.assertEqual(listenerPort("tcp6:port=587:interface=::"), 587)
        self.assertIsNone(listenerPort("unix:/run/mr.sock"))


class HealthcheckTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_healthExitsZeroOnlyWhenTheServerAnswers(self):
        server = RunningServer(self)
        environ = {
            "MAILRAVEN_SERVER_DATA_DIR": server.dataDir,
            "MAILRAVEN_API_LISTEN": f"tcp:{server.apiPort}",
        }
        self.assertEqual((yield deferToThread(health, environ)), 0)
        yield server.stop()
        err = io.StringIO()
        with redirect_stderr(err):
            self.assertEqual((yield deferToThread(health, environ)), 1)
