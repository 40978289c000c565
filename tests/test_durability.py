"""Acknowledged mail is on stable storage: the message file's data and its
directory entry are synced, then the commit of its rows, before the 250.
A store worker writes into spare files whose entries were synced when they
were made, before the data; the in-process fallback syncs the directory after
the file. Checked on both store paths through an injected L{Syncer}, and once
at the kernel's side of the real server with strace."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
import urllib.request

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailraven.testing import RecordingSyncer, recordStep
from tests.helpers import PASSWORD, RunningServer
from tests.process import ROOT, cli, environment, writeConfig
from tests.test_workers import until
from tests.tools import requireTool

MESSAGE = b"Subject: durable\r\n\r\nacknowledged means on disk\r\n"


def deliverOne(port: int, log: str | None = None) -> str:
    """Blocking: one message to alice; its id. With C{log}, the 250 is
    recorded there the moment it arrived."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("client.example.org")
        client.mail("bob@example.org")
        client.rcpt("alice@example.test")
        code, reply = client.data(MESSAGE)
        if log is not None:
            recordStep(log, f"{os.getpid()} reply {code}")
    assert code == 250, (code, reply)
    return reply.split()[-1].decode()


def syncSteps(log: str, messageId: str) -> tuple[str, list[str]]:
    """
    The pid that stored C{messageId} and, in log order, that process's steps
    for it: "file" (its message file's data), "directory" (the first fsync
    of its directory that began with the file's entry in it), "commit" (the
    first after both), and the test's "250".
    """
    name = f"{messageId}.eml.gz"
    with open(log) as f:
        lines = [line.split(" ", 2) for line in f.read().splitlines()]
    fileLines = [
        (pid, path)
        for pid, step, path in lines
        if step == "file" and path.endswith(f"/{name}")
    ]
    if not fileLines:
        return "", ["250"]  # never synced
    pid, path = fileLines[0]
    directory = os.path.dirname(path)
    steps: list[str] = []
    for who, step, where in lines:
        if step == "reply":
            steps.append("250")
        elif who != pid or step in steps:
            continue
        elif step == "file" and where == path:
            steps.append("file")
        elif step == "directory":
            synced, *names = where.split(" ")
            if os.path.realpath(synced) == directory and name in names:
                steps.append("directory")
        elif step == "commit" and {"file", "directory"} <= set(steps):
            steps.append("commit")
    return pid, steps


class SyncOrderTests(TestCase):
    """The injected syncer sees file, directory, commit, then the 250."""

    timeout = 120

    @inlineCallbacks
    def deliverRecorded(self, workers: int):
        log = os.path.abspath(self.mktemp())
        server = RunningServer(
            self, syncer=RecordingSyncer(log), store__workers=workers
        )
        yield server.addUser("alice@example.test")
        if workers:
            pool = server.root.getServiceNamed("workers")
            yield until(pool.available)
        messageId = yield deferToThread(deliverOne, server.smtpPort, log)
        return syncSteps(log, messageId)

    @inlineCallbacks
    def test_workerProcessSyncsBeforeThe250(self):
        pid, steps = yield self.deliverRecorded(workers=1)
        self.assertEqual(steps, ["directory", "file", "commit", "250"])
        self.assertNotEqual(int(pid), os.getpid(), "not stored by a worker")

    @inlineCallbacks
    def test_inProcessFallbackSyncsBeforeThe250(self):
        pid, steps = yield self.deliverRecorded(workers=0)
        self.assertEqual(steps, ["file", "directory", "commit", "250"])
        self.assertEqual(int(pid), os.getpid())


# strace -f -y: "PID fdatasync(7</path>) = 0", or split in two lines
# "PID fdatasync(7</path> <unfinished ...>" ... "PID <... fdatasync resumed>) = 0"
_CALL = re.compile(r"^(\d+) +(\w+)\((.*)$")
_RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>")
SYNCS = ("fdatasync", "fsync")
_PATH = re.compile(r'"([^"]*)"')


def tracedEvents(trace: str) -> list[tuple[str, str, str]]:
    """
    (pid, call, arguments) in the order the syncs completed and the writes
    began: a sync counts when it returned, a write when it started.
    """
    events = []
    pending: dict[tuple[str, str], str] = {}
    with open(trace, errors="replace") as f:
        for line in f:
            resumed = _RESUMED.match(line)
            if resumed:
                key = (resumed.group(1), resumed.group(2))
                if key in pending:
                    events.append((*key, pending.pop(key)))
                continue
            call = _CALL.match(line)
            if not call:
                continue
            pid, name, args = call.groups()
            if name in SYNCS and "<unfinished ...>" in line:
                pending[(pid, name)] = args
            else:
                events.append((pid, name, args))
    return events


def durabilityOrder(events: list[tuple[str, str, str]], messageId: str) -> list[str]:
    """
    What happened for C{messageId}, in order: "created" (the open that made
    its message file), "directory" (the first fsync of that file's directory
    after it), "file" (the fdatasync of the file), "commit" (a sync of the
    WAL after both), "250" (the write of the reply naming it). strace -f
    names threads, not processes, so the steps are matched by path and
    order only.
    """
    name = f"/{messageId}.eml.gz"
    order: list[str] = []
    directory = None
    for _, call, args in events:
        path = args[args.find("<") + 1 : args.find(">")] if "<" in args else ""
        if call == "openat":
            created = _PATH.search(args)
            if created and created.group(1).endswith(name) and "O_CREAT" in args:
                order.append("created")
                directory = os.path.dirname(os.path.realpath(created.group(1)))
        elif call not in SYNCS:
            if f"250 2.0.0 Ok {messageId}" in args:
                order.append("250")
        elif path.endswith(name) and "created" in order and "file" not in order:
            order.append("file")
        elif path == directory and "created" in order and "directory" not in order:
            order.append("directory")
        elif path.endswith("-wal") and {"file", "directory"} <= set(order):
            if "commit" not in order:
                order.append("commit")
    return order


class TracedDeliveryTests(TestCase):
    """
    strace on the real server (twistd, a subprocess) around one delivery:
    the kernel sees the file's fdatasync, its directory's fsync and the
    WAL's sync before the write of the 250. Only the syscalls can show that
    the default syncer really syncs.
    """

    timeout = 180

    def traceOneDelivery(self, workers: int) -> tuple[list[str], str]:
        strace = requireTool("strace", "the end-to-end durability test")
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        config, ports = writeConfig(work, store={"workers": workers})
        cli(
            "--config",
            config,
            "user",
            "add",
            "alice@example.test",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        trace, pidfile = os.path.join(work, "trace"), os.path.join(work, "pid")
        log = open(os.path.join(work, "server.log"), "ab")
        self.addCleanup(log.close)
        traced = subprocess.Popen(
            [
                strace,
                "-f",
                "-y",
                "-s",
                "80",
                "-e",
                "trace=openat,fdatasync,fsync,write,writev,sendto,sendmsg",
                "-e",
                "signal=none",
                "-o",
                trace,
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                f"--pidfile={pidfile}",
                "mailraven",
                "--config",
                config,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment(),
            cwd=ROOT,
        )
        self.addCleanup(lambda: traced.poll() is None and traced.kill())
        serverPid = self.waitUntilServing(traced, pidfile, ports["api"], workers)
        try:
            messageId = deliverOne(ports["smtp"])
        finally:
            os.kill(serverPid, signal.SIGTERM)  # strace ends with its tracee
            traced.wait(60)
        return durabilityOrder(tracedEvents(trace), messageId), messageId

    def waitUntilServing(self, traced, pidfile: str, apiPort: int, workers: int) -> int:
        """The server's pid, once /health says its listeners and workers are up."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if traced.poll() is not None:
                raise AssertionError(f"the traced server exited: {traced.returncode}")
            try:
                url = f"http://127.0.0.1:{apiPort}/health"
                with urllib.request.urlopen(url, timeout=2) as response:
                    checks = json.load(response)["checks"]
            except (OSError, ValueError):
                time.sleep(0.2)
                continue
            if checks.get("workers", {"ready": 0})["ready"] >= workers:
                with open(pidfile) as f:
                    return int(f.read())
            time.sleep(0.2)
        raise AssertionError("the traced server did not come up")

    def test_workerProcessSyncsReachTheKernelBeforeThe250(self):
        order, messageId = self.traceOneDelivery(workers=1)
        self.assertEqual(
            order, ["created", "directory", "file", "commit", "250"], messageId
        )

    def test_inProcessSyncsReachTheKernelBeforeThe250(self):
        order, messageId = self.traceOneDelivery(workers=0)
        self.assertEqual(
            order, ["created", "file", "directory", "commit", "250"], messageId
        )
