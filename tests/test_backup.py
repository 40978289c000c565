"""Hot backup under load, verify against damage, restore onto a second server."""

from __future__ import annotations

import json
import os
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time

from twisted.internet.defer import inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailraven.backup import (
    BackupError,
    createBackup,
    pruneBackups,
    restoreBackup,
    verifyBackup,
)
from mailraven.backupservice import BackupJobs
from mailraven.metrics import Metrics
from mailraven.startup import prepareDataDir
from tests.helpers import RunningServer, sleep
from tests.process import ROOT, cli, environment
from tests.test_mobile_api import APIClient, deliver


def sendLoop(port: int, acked: list, stop: threading.Event, latencies: list) -> None:
    """Deliver until stopped; record (time of the 250, id, latency)."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("load.example.org")
                client.mail("load@example.org")
                client.rcpt("alice@example.test")
                code, resp = client.data(b"Subject: load\r\n\r\nbody\r\n")
        except (OSError, smtplib.SMTPException):
            continue
        if code == 250:
            now = time.monotonic()
            acked.append((now, resp.split()[-1].decode()))
            latencies.append((now, now - started))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99) - 1] * 1000 if ordered else 0.0


def backedUpIds(backup: str) -> set[str]:
    conn = sqlite3.connect(os.path.join(backup, "mailraven.db"))
    return {row[0] for row in conn.execute("SELECT id FROM messages")}


class HotBackupTests(TestCase):
    timeout = 180

    @inlineCallbacks
    def test_backupUnderSMTPLoadKeepsAcceptingAndHoldsAcknowledgedMail(self):
        server = RunningServer(self)
        yield server.addUser("alice@example.test")
        acked, latencies, stop = [], [], threading.Event()
        clients = [
            threading.Thread(
                target=sendLoop, args=(server.smtpPort, acked, stop, latencies)
            )
            for _ in range(4)
        ]
        for client in clients:
            client.start()
        try:
            yield sleep(2)
            beforeStart = time.monotonic()
            ackedBefore = {i for t, i in acked if t < beforeStart}
            target = os.path.abspath(self.mktemp())
            manifest = yield deferToThread(createBackup, server.dataDir, target)
            backupEnd = time.monotonic()
            yield sleep(0.5)
        finally:
            stop.set()
            yield deferToThread(lambda: [c.join(60) for c in clients])
        during = [lat for t, lat in latencies if beforeStart <= t <= backupEnd]
        before = [lat for t, lat in latencies if t < beforeStart]
        self.assertGreater(len(ackedBefore), 20)
        self.assertTrue(
            ackedBefore <= backedUpIds(target),
            "a message acknowledged before the backup is missing",
        )
        self.assertEqual(verifyBackup(target), [])
        self.assertEqual(manifest["counts"]["messages"], len(backedUpIds(target)))
        self.assertTrue(
            any(t > backupEnd for t, _ in acked), "acceptance stopped after the backup"
        )
        print(
            f"time-to-250 p99 before {p99(before):.1f} ms ({len(before)} msgs),"
            f" during backup {p99(during):.1f} ms ({len(during)} msgs)"
        )


class RestoreTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_restoredServerServesTheSameMail(self):
        first = RunningServer(self)
        yield first.addUser("alice@example.test")
        yield first.addUser("carol@example.test")
        yield deferToThread(
            deliver, first.smtpPort, [("one", "first body"), ("two", "second body")]
        )
        yield deferToThread(
            deliver, first.smtpPort, [("c", "carol's")], "carol@example.test"
        )
        api = APIClient(self, first.apiPort)
        yield api.login()
        listed = yield api.json("GET", "/messages")
        yield api.json(
            "PATCH",
            f"/messages/{listed['messages'][0]['id']}",
            {"read_state": True, "starred": True},
        )
        before = yield self.snapshot(api)

        backup = os.path.abspath(self.mktemp())
        yield deferToThread(createBackup, first.dataDir, backup)
        newDir = os.path.abspath(self.mktemp())
        yield deferToThread(restoreBackup, backup, newDir)
        for directory, _, names in os.walk(newDir):
            for name in names:
                mode = os.stat(os.path.join(directory, name)).st_mode & 0o777
                self.assertEqual(mode, 0o600, name)
        second = RunningServer(self, server__data_dir=newDir)
        api2 = APIClient(self, second.apiPort)
        yield api2.login()
        after = yield self.snapshot(api2)
        self.assertEqual(after, before)
        conn = sqlite3.connect(os.path.join(newDir, "mailraven.db"))
        users = [r[0] for r in conn.execute("SELECT email FROM users ORDER BY email")]
        self.assertEqual(users, ["alice@example.test", "carol@example.test"])

    @inlineCallbacks
    def snapshot(self, api: APIClient):
        result = []
        for mailbox in ("inbox", "trash"):
            page = yield api.json("GET", "/messages", mailbox=mailbox, limit="100")
            for summary in page["messages"]:
                full = yield api.json("GET", f"/messages/{summary['id']}")
                result.append(
                    (
                        summary["id"],
                        summary["read_state"],
                        summary["starred"],
                        summary["mailbox"],
                        full["body"],
                    )
                )
        return sorted(result)

    def test_restoreRefusesANonEmptyTargetUnlessForced(self):
        config, dataDir = storeWithTwoMessages(self.mktemp)
        backup = backupOf(config, self.mktemp())
        target = os.path.abspath(self.mktemp())
        os.makedirs(target)
        open(os.path.join(target, "something"), "w").close()
        e = self.assertRaises(BackupError, restoreBackup, backup, target)
        self.assertIn("not empty", str(e))
        manifest = restoreBackup(backup, target, force=True)
        self.assertEqual(manifest["counts"]["messages"], 2)


def storeWithTwoMessages(mktemp) -> tuple[str, str]:
    """A config file and a data dir with an account and two stored messages."""
    from mailraven.startup import databasePath
    from mailraven.store.db import openDatabase
    from mailraven.store.files import newMessageId, writeMessageFile

    dataDir = os.path.abspath(mktemp())
    config = dataDir + ".toml"
    os.makedirs(os.path.dirname(dataDir), exist_ok=True)
    with open(config, "w") as f:
        f.write(f'[server]\ndata_dir = "{dataDir}"\n')
    prepareDataDir(dataDir)  # the CLI refuses a data dir no server made
    cli(
        "--config",
        config,
        "user",
        "add",
        "alice@localhost",
        "--password-stdin",
        stdin="long enough pw\n",
    )
    conn = openDatabase(databasePath(dataDir))
    for n in range(2):
        messageId = newMessageId()
        stored = writeMessageFile(dataDir, messageId, b"Subject: %d\r\n\r\nx" % n, 6)
        conn.execute(
            "INSERT INTO messages (id, path, size, stored_size, sha256,"
            " received_at, mail_from, rcpt_to) VALUES (?,?,?,?,?,?,?,?)",
            (
                messageId,
                stored.relpath,
                stored.size,
                stored.storedSize,
                stored.sha256,
                "2026-11-25T00:00:00+00:00",
                "a@b.example",
                "[]",
            ),
        )
    conn.commit()
    conn.close()
    return config, dataDir


def backupOf(config: str, target: str) -> str:
    """`mailraven backup --to` as an operator runs it; checks it verifies."""
    target = os.path.abspath(target)
    result = cli("--config", config, "backup", "--to", target)
    assert b"2 messages" in result.stdout, result.stdout
    verify = cli("--config", config, "verify", "--backup", target)
    assert b"OK" in verify.stdout, verify.stdout
    return target


def messageFiles(backup: str) -> list[str]:
    with open(os.path.join(backup, "manifest.json")) as f:
        files = json.load(f)["files"]
    return sorted(os.path.join(backup, p) for p in files if p.startswith("messages/"))


class VerifyTests(SynchronousTestCase):
    def makeBackup(self) -> tuple[str, str]:
        config, _ = storeWithTwoMessages(self.mktemp)
        return config, backupOf(config, self.mktemp())

    def assertDamaged(self, config: str, backup: str, expected: str) -> None:
        result = cli("--config", config, "verify", "--backup", backup, check=False)
        self.assertEqual(result.returncode, 2, result.stdout)
        self.assertIn(expected, result.stdout.decode())

    def test_flippedByte(self):
        config, backup = self.makeBackup()
        path = messageFiles(backup)[0]
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            data[len(data) // 2] ^= 0x01
            f.seek(0)
            f.write(data)
        self.assertDamaged(config, backup, "checksum mismatch")

    def test_missingFile(self):
        config, backup = self.makeBackup()
        os.unlink(messageFiles(backup)[1])
        self.assertDamaged(config, backup, "missing")

    def test_truncatedDatabase(self):
        config, backup = self.makeBackup()
        database = os.path.join(backup, "mailraven.db")
        with open(database, "r+b") as f:
            f.truncate(os.path.getsize(database) // 2)
        self.assertDamaged(config, backup, "mailraven.db")
        restore = cli(
            "--config",
            config,
            "restore",
            "--from",
            backup,
            "--data-dir",
            os.path.abspath(self.mktemp()),
            check=False,
        )
        self.assertEqual(restore.returncode, 1)
        self.assertIn(b"damaged", restore.stderr)

    def test_cronLogGetsNoBlankLine(self):
        """Off a terminal (cron, scripts) the summary is the first line of stdout."""
        config, _ = storeWithTwoMessages(self.mktemp)
        target = os.path.abspath(self.mktemp())
        result = cli("--config", config, "backup", "--to", target)
        self.assertTrue(result.stdout.startswith(b"backup of "), result.stdout)
        restored = cli(
            "--config",
            config,
            "restore",
            "--from",
            target,
            "--data-dir",
            os.path.abspath(self.mktemp()),
        )
        self.assertTrue(restored.stdout.startswith(b"restored "), restored.stdout)

    def test_missingBackupIsAPathErrorNotDamage(self):
        """A mistyped --from/--backup names the path; it is no damaged backup."""
        config, _ = storeWithTwoMessages(self.mktemp)
        missing = os.path.abspath(self.mktemp())
        verify = cli("--config", config, "verify", "--backup", missing, check=False)
        restore = cli(
            "--config",
            config,
            "restore",
            "--from",
            missing,
            "--data-dir",
            os.path.abspath(self.mktemp()),
            check=False,
        )
        for result in (verify, restore):
            self.assertEqual(result.returncode, 1, result.stdout)
            self.assertIn(f"no backup at {missing}".encode(), result.stderr)
            self.assertNotIn(b"damage", result.stderr + result.stdout)
            self.assertNotIn(b"DAMAGED", result.stdout)

    def test_neverOverwrites(self):
        config, backup = self.makeBackup()
        again = cli("--config", config, "backup", "--to", backup, check=False)
        self.assertEqual(again.returncode, 1)
        self.assertIn(b"exists already", again.stderr)

    def test_secondBackupHardLinksAndRetentionPrunes(self):
        config, _ = storeWithTwoMessages(self.mktemp)
        parent = os.path.abspath(self.mktemp())
        first = backupOf(config, os.path.join(parent, "mailraven-20000101T000000Z"))
        second = backupOf(config, os.path.join(parent, "mailraven-29990101T000000Z"))
        for old, new in zip(messageFiles(first), messageFiles(second), strict=True):
            self.assertEqual(os.stat(old).st_ino, os.stat(new).st_ino)
        third = backupOf(config, os.path.join(parent, "mailraven-30000101T000000Z"))
        self.assertEqual(pruneBackups(parent, 2), ["mailraven-20000101T000000Z"])
        self.assertEqual(
            sorted(os.listdir(parent)),
            [os.path.basename(second), os.path.basename(third)],
        )
        self.assertEqual(verifyBackup(second), [])


class AdminEndpointTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_adminOnlyAndJobReports(self):
        server = RunningServer(self)
        yield server.addUser("alice@example.test")
        conn = sqlite3.connect(os.path.join(server.dataDir, "mailraven.db"))
        yield server.root.users.add("root@example.test", "admin pw")
        conn.execute("UPDATE users SET is_admin = 1 WHERE email = 'root@example.test'")
        conn.commit()
        api = APIClient(self, server.apiPort)
        api.base = f"http://127.0.0.1:{server.apiPort}/admin"
        response = yield api.request("POST", "/backup")
        self.assertEqual(response.code, 401)
        yield response.content()
        api.base = f"http://127.0.0.1:{server.apiPort}/api/v1"
        yield api.login()
        api.base = f"http://127.0.0.1:{server.apiPort}/admin"
        yield api.json("POST", "/backup", expect=403)
        api.base = f"http://127.0.0.1:{server.apiPort}/api/v1"
        yield api.login("root@example.test", "admin pw")
        api.base = f"http://127.0.0.1:{server.apiPort}/admin"
        job = yield api.json("POST", "/backup", expect=202)
        for _ in range(100):
            status = yield api.json("GET", f"/backup/{job['job_id']}")
            if status["status"] != "running":
                break
            yield sleep(0.1)
        self.assertEqual(status["status"], "succeeded", status)
        self.assertEqual(status["manifest"]["counts"]["users"], 2)
        self.assertIsNotNone(status["finished_at"])
        yield api.json("GET", "/backup/no-such-job", expect=404)
        backups = os.listdir(os.path.join(server.dataDir, "backups"))
        self.assertEqual(len(backups), 1)


class ScheduleTests(TestCase):
    @inlineCallbacks
    def test_dailyScheduleRunsOnceAndHealthTracksIt(self):
        clock = Clock()
        clock.advance(86400 * 20000 + 3600 * 2)  # some day, 02:00 UTC
        runs = []

        def fakeBackup(dataDir, target, configFile):
            runs.append(target)
            if len(runs) == 2:
                raise BackupError("disk full")
            counts = {"users": 1, "messages": 0, "bytes": 0}
            return succeed({"counts": counts, "files": {}, "created_at": "now"})

        backupDir = os.path.abspath(self.mktemp())
        os.makedirs(backupDir)
        jobs = BackupJobs(
            "/data", backupDir, "03:30", 3, Metrics(), clock, runBackup=fakeBackup
        )
        jobs.startService()
        self.addCleanup(jobs.stopService)
        self.assertEqual(jobs.health()["status"], "ok")

        @inlineCallbacks
        def at(seconds):
            """Let time pass (the service ticks itself), then wait for its job."""
            clock.advance(seconds)
            yield jobs.tick()
            while jobs.current is not None:
                yield sleep(0.01)

        yield at(0)
        self.assertEqual(runs, [])
        yield at(3600 * 1.5)  # 03:30
        yield at(60)
        self.assertEqual(len(runs), 1)
        self.assertEqual(jobs.health()["status"], "ok")
        yield at(86400 - 60)  # 03:30 the next day
        self.assertEqual(len(runs), 2)
        self.assertEqual(jobs.health()["status"], "degraded")  # the last one failed
        self.assertEqual(jobs.lastScheduled["error"], "disk full")
        self.flushLoggedErrors(BackupError)


class OpsScriptTests(SynchronousTestCase):
    """ops/backup.sh and ops/restore.sh, run the way cron would."""

    def setUp(self):
        self.config, _ = storeWithTwoMessages(self.mktemp)
        wrapper = os.path.abspath(self.mktemp())
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\nexec {sys.executable} -m mailraven.cli "$@"\n')
        os.chmod(wrapper, 0o755)
        self.env = environment(MAILRAVEN=wrapper)

    def run_(self, script: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [os.path.join(ROOT, "ops", script), *args],
            capture_output=True,
            env=self.env,
            cwd=ROOT,
            timeout=120,
        )

    def test_backupRetentionAndRestore(self):
        backups = os.path.abspath(self.mktemp())
        written = []
        for _ in range(3):
            result = self.run_("backup.sh", "-c", self.config, "-k", "2", backups)
            self.assertEqual(result.returncode, 0, result.stderr)
            written.append(result.stdout.decode().strip().splitlines()[-1])
            time.sleep(1.1)  # names carry the second
        self.assertEqual(
            sorted(os.listdir(backups)),
            sorted(os.path.basename(w) for w in written[1:]),
        )
        self.assertEqual(self.run_("backup.sh", "-k", "x", backups).returncode, 1)
        target = os.path.abspath(self.mktemp())
        restored = self.run_("restore.sh", "-c", self.config, "-d", target, written[-1])
        self.assertEqual(restored.returncode, 0, restored.stderr)
        again = self.run_("restore.sh", "-c", self.config, "-d", target, written[-1])
        self.assertEqual(again.returncode, 1)
        self.assertIn(b"not empty", again.stderr)
        forced = self.run_(
            "restore.sh", "-c", self.config, "-d", target, "-f", written[-1]
        )
        self.assertEqual(forced.returncode, 0, forced.stderr)
