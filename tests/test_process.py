"""The server as operators run it: twistd, SIGKILL and SIGTERM, JSON logs."""

from __future__ import annotations

import gzip
import json
import os
import smtplib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

from twisted.trial.unittest import SynchronousTestCase

from tests.process import ServerProcess, cli, writeConfig


def deliverLoop(port: int, recorded: dict, stop: threading.Event, errors: list) -> None:
    """Send until stopped or the server dies; record every id answered with 250."""
    while not stop.is_set():
        token = uuid.uuid4().hex
        body = (
            f"From: load@example.org\r\nSubject: {token}\r\n\r\n"
            f"payload {token}\r\n" + "filler line\r\n" * 50
        ).encode()
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo("load.example.org")
                client.mail("load@example.org")
                client.rcpt("alice@example.test")
                code, resp = client.data(body)
            if code == 250:
                recorded[resp.split()[-1].decode()] = body
        except (OSError, smtplib.SMTPException) as e:
            errors.append(e)
            if len(errors) > 50:
                return
            time.sleep(0.05)


def storeWorkersOf(serverPid: int) -> list[int]:
    """Live store worker processes started by the server C{serverPid}."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"MAILRAVEN_STORE_SERVER_PID={serverPid}".encode() in environ:
            if state != "Z":
                found.append(int(pid))
    return found


class CrashTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.config, self.ports = writeConfig(self.dir)
        cli(
            "--config",
            self.config,
            "user",
            "add",
            "alice@example.test",
            "--password-stdin",
            stdin="long enough pw\n",
        )

    def start(self) -> ServerProcess:
        server = ServerProcess(self.config, os.path.join(self.dir, "server.log"))
        self.addCleanup(server.ensureStopped)
        server.waitForPort(self.ports["smtp"])
        return server

    def test_everyAcknowledgedMessageSurvivesSIGKILL(self):
        server = self.start()
        recorded: dict[str, bytes] = {}
        stop, errors = threading.Event(), []
        clients = [
            threading.Thread(
                target=deliverLoop, args=(self.ports["smtp"], recorded, stop, errors)
            )
            for _ in range(6)
        ]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 30
        while len(recorded) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = storeWorkersOf(server.proc.pid)
        self.assertEqual(len(workers), 4)
        server.kill()  # mid-run: clients are in every state of the dialogue
        stop.set()
        for client in clients:
            client.join(30)
        self.assertGreaterEqual(len(recorded), 150)
        # The kernel ended the workers with the server: none can commit a
        # row after the restart's start-up check moved its file aside.
        self.assertEqual(storeWorkersOf(server.proc.pid), [])

        server = self.start()  # start-up integrity check passes
        dataDir = os.path.join(self.dir, "data")
        conn = sqlite3.connect(os.path.join(dataDir, "mailraven.db"))
        for messageId, body in recorded.items():
            row = conn.execute(
                "SELECT path FROM messages WHERE id = ?", (messageId,)
            ).fetchone()
            self.assertIsNotNone(row, f"acknowledged {messageId} is missing")
            with gzip.open(os.path.join(dataDir, row[0])) as f:
                self.assertTrue(f.read().endswith(body))
        self.assertTrue(server.terminate())
        result = cli("--config", self.config, "verify", check=False)
        self.assertEqual(result.returncode, 0, result.stdout.decode())

    def test_sigtermLetsDataInFlightFinish(self):
        server = self.start()
        sock = socket.create_connection(("127.0.0.1", self.ports["smtp"]), timeout=20)
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(
            b"EHLO c\r\nMAIL FROM:<bob@example.org>\r\n"
            b"RCPT TO:<alice@example.test>\r\nDATA\r\nSubject: late\r\n"
        )
        while not reader.readline().startswith(b"354"):
            pass
        server.proc.terminate()
        time.sleep(1)  # the server is stopping, our DATA is still open
        sock.sendall(b"\r\nstill here\r\n.\r\n")
        self.assertTrue(reader.readline().startswith(b"250 2.0.0 Ok "))
        self.assertTrue(reader.readline().startswith(b"421 4.3.2 "))
        sock.close()
        self.assertTrue(server.stoppedCleanly())
        # a new connection is refused: the listener went first
        self.assertRaises(
            OSError, socket.create_connection, ("127.0.0.1", self.ports["smtp"]), 2
        )


class LoggingTests(SynchronousTestCase):
    def _loggedRun(self, level: str) -> tuple[list[dict], str]:
        """A server with JSON logs at C{level}: one refused RCPT, one API
        request with a search word in its query; its events and raw log."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config, ports = writeConfig(directory, log={"format": "json", "level": level})
        logPath = os.path.join(directory, "server.log")
        server = ServerProcess(config, logPath)
        self.addCleanup(server.ensureStopped)
        server.waitForPort(ports["smtp"])
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as client:
            client.ehlo("c.example.org")
            client.mail("bob@example.org")
            client.rcpt("nobody@example.test")
        server.waitForPort(ports["api"])
        search = f"http://127.0.0.1:{ports['api']}/api/v1/messages/search?q=zeppelin"
        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(search, timeout=10)
        self.assertEqual(refused.exception.code, 401)
        self.assertTrue(server.terminate())
        with open(logPath) as f:
            raw = f.read()
        return [json.loads(line) for line in raw.splitlines() if line.strip()], raw

    def test_jsonLogsAreOneFlatObjectPerLine(self):
        events, raw = self._loggedRun("info")
        for event in events:
            self.assertTrue({"time", "level", "msg"} <= set(event), event)
        rejects = [e for e in events if e.get("event") == "smtp_reject"]
        self.assertEqual(rejects[0]["reason"], "unknown_user")
        self.assertEqual(rejects[0]["peer"], "127.0.0.1")
        # no access log line at info, and never what someone searched for
        self.assertNotIn("api_request", [e.get("event") for e in events])
        self.assertNotIn("zeppelin", raw)

    def test_apiRequestsAreDebugEventsWithoutTheQuery(self):
        events, raw = self._loggedRun("debug")
        [request] = [e for e in events if e.get("event") == "api_request"]
        self.assertEqual(
            (request["method"], request["path"], request["code"], request["ip"]),
            ("GET", "/api/v1/messages/search", 401, "127.0.0.1"),
        )
        self.assertNotIn("zeppelin", raw)


class StartupTests(SynchronousTestCase):
    def test_unknownKeyStopsStartNamingIt(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config, _ = writeConfig(directory, smtp={"max_mesage_size": 5})
        server = ServerProcess(config, os.path.join(directory, "server.log"))
        self.assertNotEqual(server.proc.wait(60), 0)
        server.log.close()
        with open(os.path.join(directory, "server.log")) as f:
            self.assertIn("smtp.max_mesage_size", f.read())

    def test_missingMessageFileStopsStart(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config, ports = writeConfig(directory)
        cli(
            "--config",
            config,
            "user",
            "add",
            "alice@example.test",
            "--password-stdin",
            stdin="long enough pw\n",
        )
        server = ServerProcess(config, os.path.join(directory, "server.log"))
        server.waitForPort(ports["smtp"])
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as client:
            client.sendmail(
                "bob@example.org", ["alice@example.test"], b"Subject: x\r\n\r\nx"
            )
        server.terminate()
        dataDir = os.path.join(directory, "data")
        (path,) = (
            sqlite3.connect(os.path.join(dataDir, "mailraven.db"))
            .execute("SELECT path FROM messages")
            .fetchone()
        )
        os.unlink(os.path.join(dataDir, path))
        server = ServerProcess(config, os.path.join(directory, "server2.log"))
        self.assertNotEqual(server.proc.wait(60), 0)
        server.log.close()
        with open(os.path.join(directory, "server2.log")) as f:
            self.assertIn("integrity check failed", f.read())
        verify = cli("--config", config, "verify", check=False)
        self.assertEqual(verify.returncode, 2)
        self.assertIn(path, verify.stdout.decode())


class GarbageCollectorTests(SynchronousTestCase):
    def test_startFreezesWhatWasBuiltOnceAndWidensTheYoungGeneration(self):
        """Full collections then skip the start-up objects (they paused every
        thread for up to 84 ms under API load); done once per process."""
        script = (
            "import gc; from mailraven.service import _settleGarbageCollector as s;"
            "s(); frozen = gc.get_freeze_count(); s();"
            "print(frozen > 1000, gc.get_freeze_count() == frozen,"
            " gc.get_threshold()[0])"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.split()
        self.assertEqual(out, ["True", "True", "10000"])
