"""Real SMTP clients (smtplib, swaks, raw sockets) against a listening server."""

from __future__ import annotations

import gzip
import os
import socket
import sqlite3
import ssl
import subprocess
import time

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.helpers import RunningServer, sendWithSmtplib
from tests.tools import requireTool

MESSAGE = (
    b"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\n"
    b"Subject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\nHi Alice!\r\n"
)


def storedMessage(dataDir: str, messageId: str) -> bytes:
    conn = sqlite3.connect(os.path.join(dataDir, "mailraven.db"))
    (path,) = conn.execute(
        "SELECT path FROM messages WHERE id = ?", (messageId,)
    ).fetchone()
    with gzip.open(os.path.join(dataDir, path)) as f:
        return f.read()


def rawSession(
    port: int, chunks: list[bytes], expectReplies: int, timeout: float = 10
) -> list[str]:
    """
    Blocking: connect, read the greeting, send C{chunks} (each in one write), and
    read until C{expectReplies} final reply lines (after the greeting) arrived or
    the server closed. Returns every reply line after the greeting.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    reader = sock.makefile("rb")
    try:
        greeting = reader.readline()
        assert greeting.startswith(b"220 "), greeting
        for chunk in chunks:
            sock.sendall(chunk)
        lines: list[str] = []
        final = 0
        deadline = time.monotonic() + timeout
        while final < expectReplies and time.monotonic() < deadline:
            line = reader.readline()
            if not line:
                break
            text = line.decode().rstrip("\r\n")
            lines.append(text)
            if text[3:4] == " ":
                final += 1
        return lines
    finally:
        reader.close()
        sock.close()


OPEN_TRANSACTION = (
    b"EHLO c\r\nMAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
)


def finals(lines: list[str]) -> list[str]:
    return [line for line in lines if line[3:4] == " "]


class SMTPClientTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        yield self.server.addUser("carol@example.test")

    @inlineCallbacks
    def test_smtplibDeliveryIsStoredDurably(self):
        refused, (code, resp) = yield deferToThread(
            sendWithSmtplib,
            self.server.smtpPort,
            "bob@example.org",
            ["alice@example.test", "carol@example.test"],
            MESSAGE,
        )
        self.assertEqual((refused, code), ({}, 250))
        self.assertTrue(resp.startswith(b"2.0.0 Ok "))
        messageId = resp.split()[-1].decode()
        raw = yield deferToThread(storedMessage, self.server.dataDir, messageId)
        self.assertTrue(raw.endswith(MESSAGE))
        self.assertIn(b"Received: from client.example.org ([127.0.0.1])", raw)
        for userId in (1, 2):
            [entry] = yield self.server.root.store.list(userId, "inbox", 10, 0)
            self.assertEqual(entry["subject"], "hello")

    @inlineCallbacks
    def test_smtplibStarttls(self):
        refused, (code, resp) = yield deferToThread(
            sendWithSmtplib,
            self.server.smtpPort,
            "bob@example.org",
            ["alice@example.test"],
            MESSAGE,
            True,
        )
        self.assertEqual(code, 250)
        raw = yield deferToThread(
            storedMessage, self.server.dataDir, resp.split()[-1].decode()
        )
        self.assertIn(b"with ESMTPS", raw)

    @inlineCallbacks
    def test_postmasterIsAlwaysAccepted(self):
        """RFC 5321 4.5.1: postmaster@ a local domain, and the bare
        <Postmaster>, reach the first account; postmaster@ elsewhere is no
        way to relay."""
        refused, (code, _) = yield deferToThread(
            sendWithSmtplib,
            self.server.smtpPort,
            "bob@example.org",
            ["Postmaster", "POSTMASTER@example.test", "postmaster@elsewhere.org"],
            MESSAGE,
        )
        self.assertEqual(code, 250)
        self.assertEqual(list(refused), ["postmaster@elsewhere.org"])
        self.assertEqual(refused["postmaster@elsewhere.org"][0], 554)
        [entry] = yield self.server.root.store.list(1, "inbox", 10, 0)
        self.assertEqual(entry["subject"], "hello")
        carols = yield self.server.root.store.list(2, "inbox", 10, 0)
        self.assertEqual(carols, [])

    @inlineCallbacks
    def test_smtplibRefusals(self):
        refused, _ = yield deferToThread(
            sendWithSmtplib,
            self.server.smtpPort,
            "bob@example.org",
            ["nobody@example.test", "someone@elsewhere.org"],
            MESSAGE,
        )
        self.assertEqual(refused["nobody@example.test"][0], 550)
        self.assertEqual(refused["someone@elsewhere.org"][0], 554)

    @inlineCallbacks
    def test_concurrentClients(self):
        results = yield gatherResults(
            [
                deferToThread(
                    sendWithSmtplib,
                    self.server.smtpPort,
                    "bob@example.org",
                    ["alice@example.test"],
                    MESSAGE,
                )
                for _ in range(20)
            ]
        )
        ids = {resp.split()[-1] for _, (code, resp) in results if code == 250}
        self.assertEqual(len(ids), 20)
        entries = yield self.server.root.store.list(1, "inbox", 100, 0)
        self.assertEqual(len(entries), 20)

    @inlineCallbacks
    def test_swaksWithStarttlsAnd8bit(self):
        requireTool("swaks")
        result = yield deferToThread(
            subprocess.run,
            [
                "swaks",
                "--server",
                f"127.0.0.1:{self.server.smtpPort}",
                "--from",
                "bob@example.org",
                "--to",
                "alice@example.test",
                "--tls",
                "--header",
                "Subject: caf\u00e9",
                "--body",
                "Gr\u00fc\u00dfe",
            ],
            capture_output=True,
            timeout=30,
        )
        out = result.stdout.decode()
        self.assertEqual(result.returncode, 0, out)
        self.assertIn("<~  250 2.0.0 Ok ", out)
        self.assertIn("STARTTLS", out)
        [entry] = yield self.server.root.store.list(1, "inbox", 10, 0)
        full = yield self.server.root.store.get(entry["id"], 1)
        self.assertIn("Gr\u00fc\u00dfe".encode(), full["raw"])
        self.assertIn(b"with ESMTPS", full["raw"])

    @inlineCallbacks
    def test_swaksOversizeIsRefused(self):
        requireTool("swaks")
        server = RunningServer(self, smtp__max_message_size=20000)
        yield server.addUser("alice@example.test")
        result = yield deferToThread(
            subprocess.run,
            [
                "swaks",
                "--server",
                f"127.0.0.1:{server.smtpPort}",
                "--from",
                "bob@example.org",
                "--to",
                "alice@example.test",
                "--body",
                "x" * 70 + ("\n" + "y" * 70) * 400,
            ],
            capture_output=True,
            timeout=30,
        )
        self.assertIn(
            "552 5.3.4 Message size exceeds fixed limit", result.stdout.decode()
        )


def starttlsInjection(port: int, burst: bytes) -> tuple[list[str], list[str]]:
    """
    Blocking: send C{burst} (ending in STARTTLS and a pipelined command) in one
    write, read the plain-text replies up to the 220 and whatever follows it
    before the handshake, then start TLS and send EHLO and QUIT. Returns the
    plain-text lines and every line received inside TLS.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(4096)
        sock.sendall(burst)
        ready = b"220 2.0.0 Ready to start TLS\r\n"
        while ready not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        plain = data.decode().split("\r\n")[1:]
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(sock) as tls:
            tls.sendall(b"EHLO after.example.org\r\nQUIT\r\n")
            received = b""
            while chunk := tls.recv(4096):
                received += chunk
        return [line for line in plain if line], received.decode().splitlines()
    finally:
        sock.close()


class RawSocketTests(TestCase):
    """Byte-exact attacks a library client would never send."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        yield self.server.addUser("carol@example.test")

    def session(self, chunks, expect):
        return deferToThread(rawSession, self.server.smtpPort, chunks, expect)

    @inlineCallbacks
    def test_pipelinedBurstKeepsOrder(self):
        lines = yield self.session(
            [
                b"EHLO c.example.org\r\nMAIL FROM:<bob@example.org>\r\n"
                b"RCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\n"
                b"RCPT TO:<carol@example.test>\r\nDATA\r\n"
                b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n"
            ],
            8,
        )
        self.assertEqual(
            [line[:3] for line in finals(lines)],
            ["250", "250", "250", "550", "250", "354", "250", "221"],
        )

    @inlineCallbacks
    def test_starttlsInjectionIsDiscarded(self):
        plain, protected = yield deferToThread(
            starttlsInjection,
            self.server.smtpPort,
            b"EHLO c.example.org\r\nSTARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n",
        )
        self.assertEqual(finals(plain)[-1], "220 2.0.0 Ready to start TLS")
        # The injected MAIL got no reply at all: none in plain text after the
        # 220, and inside TLS the first reply is the one to our own EHLO,
        # then QUIT's, and nothing else.
        self.assertEqual(plain[-1], "220 2.0.0 Ready to start TLS")
        self.assertTrue(
            protected[0].startswith("250-mx.mailraven.test Hello after.example.org"),
            protected,
        )
        self.assertEqual(finals(protected), [protected[-2], "221 2.0.0 Bye"])

    @inlineCallbacks
    def test_overlongBodyLineFailsMessageWithoutCommandMode(self):
        lines = yield self.session(
            [
                OPEN_TRANSACTION,
                b"Subject: long\r\n\r\n" + b"z" * 5000 + b"\r\nRSET\r\n"
                b"MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<carol@example.test>\r\n"
                b".\r\nQUIT\r\n",
            ],
            6,
        )
        self.assertEqual(
            [line[:3] for line in finals(lines)],
            ["250", "250", "250", "354", "500", "221"],
        )
        self.assertEqual((yield self.server.root.store.list(2, "inbox", 10, 0)), [])

    @inlineCallbacks
    def test_unterminatedLineClosesSession(self):
        lines = yield self.session([b"EHLO " + b"a" * 100000], 1)
        self.assertEqual(lines, ["500 5.5.2 Line too long"])

    @inlineCallbacks
    def test_bareLFDotDoesNotEndData(self):
        lines = yield self.session(
            [
                OPEN_TRANSACTION,
                b"Subject: smuggle\r\n\r\nhi\n.\nMAIL FROM:<x@evil.test>\r\n"
                b"RCPT TO:<carol@example.test>\r\n.\r\nQUIT\r\n",
            ],
            6,
        )
        self.assertEqual(
            [line[:3] for line in finals(lines)],
            ["250", "250", "250", "354", "250", "221"],
        )
        self.assertEqual((yield self.server.root.store.list(2, "inbox", 10, 0)), [])
        [entry] = yield self.server.root.store.list(1, "inbox", 10, 0)
        full = yield self.server.root.store.get(entry["id"], 1)
        self.assertIn(b"hi\n.\nMAIL FROM:<x@evil.test>", full["raw"])

    @inlineCallbacks
    def test_relayBatteryIsRefused(self):
        attempts = [
            b"<someone@elsewhere.org>",
            b"<someone%elsewhere.org@example.test>",
            b"<@example.test:someone@elsewhere.org>",
            b"<@example.test,@mx.example.test:someone@elsewhere.org>",
            b'<"someone@elsewhere.org"@example.test>',
            b'<"someone@elsewhere.org">',
            b"<someone@example.test@elsewhere.org>",
            b"<someone@[192.0.2.1]>",
            b"<someone@[IPv6:2001:db8::1]>",
            b"<someone@elsewhere.org.>",
            b"<alice@example.test.elsewhere.org>",
            b"<someone!elsewhere.org@example.test>",
            b"someone@elsewhere.org",
        ]
        commands = b"".join(b"RCPT TO:" + a + b"\r\n" for a in attempts)
        lines = yield self.session(
            [b"EHLO c\r\nMAIL FROM:<bob@example.org>\r\n" + commands + b"DATA\r\n"],
            3 + len(attempts),
        )
        replies = finals(lines)
        rcptReplies = replies[2 : 2 + len(attempts)]
        self.assertEqual(len(rcptReplies), len(attempts))
        for attempt, reply in zip(attempts, rcptReplies, strict=True):
            self.assertIn(reply[:3], ("550", "554", "501"), (attempt, reply))
        self.assertEqual(replies[-1][:3], "503", "DATA with no recipient accepted")
