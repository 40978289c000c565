"""Submission with a real client (smtplib): TLS first, AUTH, own sender only."""

from __future__ import annotations

import base64
import json
import smtplib
import ssl
import threading
import time
from typing import Any

from scramp import ScramClient
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThread, deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from tests.helpers import PASSWORD, CountingPasswordChecks, RunningServer


def _context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def submit(port: int, login: str, password: str, sender: str, rcpts: list[str]):
    """Blocking: STARTTLS, AUTH, send; returns (auth code, refused, data reply)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("laptop.example.org")
        client.starttls(context=_context())
        client.ehlo("laptop.example.org")
        assert "PLAIN" in client.esmtp_features["auth"], client.esmtp_features
        try:
            # One mechanism per attempt (login() would try PLAIN, then LOGIN).
            client.user, client.password = login, password
            code = client.auth("PLAIN", client.auth_plain)[0]
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code, {}, None
        try:
            refused = client.sendmail(
                sender,
                rcpts,
                f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\n"
                "Subject: submitted\r\n\r\nhello\r\n",
            )
        except smtplib.SMTPSenderRefused as e:
            return code, {"sender": (e.smtp_code, e.smtp_error)}, None
        return code, refused, 250


def submitRaw(port: int, login: str, password: str, raw: bytes) -> tuple[int, bytes]:
    """Blocking: STARTTLS, AUTH PLAIN, C{raw} from C{login} to bob@remote.example."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("laptop.example.org")
        client.starttls(context=_context())
        client.ehlo("laptop.example.org")
        client.login(login, password)
        client.mail(login)
        client.rcpt("bob@remote.example")
        try:
            return client.data(raw)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error


def clearText(port: int) -> tuple[dict, tuple[int, bytes], tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("laptop.example.org")
        features = dict(client.esmtp_features)
        auth = client.docmd("AUTH", "PLAIN AGFsaWNlAHB3")
        mail = client.docmd("MAIL", "FROM:<alice@example.test>")
    return features, auth, mail


def scramLogin(port: int, login: str, password: str) -> tuple[int, bool]:
    """Blocking: STARTTLS then AUTH SCRAM-SHA-256 (smtplib has no SCRAM);
    (final code, whether the server proved it knows the verifier)."""
    client = ScramClient(["SCRAM-SHA-256"], login, password)
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
        smtp.ehlo("laptop.example.org")
        smtp.starttls(context=_context())
        smtp.ehlo("laptop.example.org")
        assert "SCRAM-SHA-256" in smtp.esmtp_features["auth"]
        first = base64.b64encode(client.get_client_first().encode()).decode()
        code, challenge = smtp.docmd("AUTH", f"SCRAM-SHA-256 {first}")
        assert code == 334, (code, challenge)
        client.set_server_first(base64.b64decode(challenge).decode())
        final = base64.b64encode(client.get_client_final().encode()).decode()
        code, reply = smtp.docmd(final)
        if code != 334:
            return code, False
        client.set_server_final(base64.b64decode(reply).decode())  # raises if forged
        code, _ = smtp.docmd("")
        return code, True


def scramSalt(port: int, login: str) -> str:
    """Blocking: the salt (s=) the server offers C{login} in SCRAM-SHA-256."""
    client = ScramClient(["SCRAM-SHA-256"], login, "any")
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
        smtp.ehlo("laptop.example.org")
        smtp.starttls(context=_context())
        smtp.ehlo("laptop.example.org")
        first = base64.b64encode(client.get_client_first().encode()).decode()
        code, challenge = smtp.docmd("AUTH", f"SCRAM-SHA-256 {first}")
        assert code == 334, (code, challenge)
        fields = dict(
            f.split("=", 1) for f in base64.b64decode(challenge).decode().split(",")
        )
        smtp.docmd("*")  # cancel the exchange
        return fields["s"]


class SubmissionTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self, ratelimit__auth_failures=2)
        yield self.server.addUser("alice@example.test")
        yield self.server.addUser("carol@example.test")

    @inlineCallbacks
    def test_noAuthInClearText(self):
        features, auth, mail = yield deferToThread(
            clearText, self.server.submissionPort
        )
        self.assertNotIn("auth", features)
        self.assertIn("starttls", features)
        self.assertEqual(auth[0], 530)
        self.assertEqual(mail[0], 530)

    @inlineCallbacks
    def test_localRecipientsAreStoredRemoteOnesQueued(self):
        code, refused, data = yield deferToThread(
            submit,
            self.server.submissionPort,
            "alice@example.test",
            PASSWORD,
            "alice@example.test",
            ["bob@remote.example", "carol@example.test"],
        )
        self.assertEqual((code, refused, data), (235, {}, 250))
        rows = yield self.server.root.store._db.read(
            lambda c: c.execute(
                "SELECT q.mail_from, q.rcpt_to, e.mailbox FROM outbound_queue q"
                " JOIN mailbox_entries e ON e.message_id = q.message_id"
                " WHERE e.user_id = q.user_id"
            ).fetchall()
        )
        self.assertEqual(
            [(r[0], json.loads(r[1]), r[2]) for r in rows],
            [
                (
                    "alice@example.test",
                    ["bob@remote.example"],
                    "sent",
                )
            ],
        )
        # the local recipient's copy is stored at once, unread, in her inbox
        copies = yield self.server.root.store._db.read(
            lambda c: c.execute(
                "SELECT e.recipient, e.mailbox, e.read_state FROM mailbox_entries e"
                " JOIN users u ON u.id = e.user_id WHERE u.email = ?",
                ("carol@example.test",),
            ).fetchall()
        )
        self.assertEqual(
            [tuple(r) for r in copies], [("carol@example.test", "inbox", 0)]
        )

    @inlineCallbacks
    def test_scramSha256WithARealClient(self):
        port = self.server.submissionPort
        self.assertEqual(
            (yield deferToThread(scramLogin, port, "alice@example.test", PASSWORD)),
            (235, True),
        )
        self.assertEqual(
            (yield deferToThread(scramLogin, port, "alice@example.test", "wrong")),
            (535, False),
        )

    @inlineCallbacks
    def test_cannotSendAsSomeoneElse(self):
        code, refused, _ = yield deferToThread(
            submit,
            self.server.submissionPort,
            "alice@example.test",
            PASSWORD,
            "carol@example.test",
            ["bob@remote.example"],
        )
        self.assertEqual(code, 235)
        self.assertEqual(refused["sender"][0], 553)

    @inlineCallbacks
    def test_leadingBlankFirstLineLeavesNoFromHeader(self):
        """
        A first line that starts with a blank ends the header (it would
        continue our Received:), so the From: after it is body: a permanent
        refusal, never a 4xx (it was taken with the blank line in Received:).
        """
        code, reply = yield deferToThread(
            submitRaw,
            self.server.submissionPort,
            "alice@example.test",
            PASSWORD,
            b" by evil.example\r\nFrom: alice@example.test\r\n"
            b"Subject: s\r\n\r\nhello\r\n",
        )
        self.assertEqual((code, reply), (554, b"5.6.0 A From: header is required"))

    @inlineCallbacks
    def test_wrongPasswordsAreThrottled(self):
        codes = []
        for _ in range(3):
            code, _, _ = yield deferToThread(
                submit,
                self.server.submissionPort,
                "alice@example.test",
                "wrong",
                "alice@example.test",
                ["bob@remote.example"],
            )
            codes.append(code)
        self.assertEqual(codes, [535, 535, 454])


def authFrom(port: int, source: str, login: str, password: str) -> int:
    """Blocking: one AUTH PLAIN from the local address C{source}; the code."""
    with smtplib.SMTP(
        "127.0.0.1", port, timeout=20, source_address=(source, 0)
    ) as client:
        client.ehlo("laptop.example.org")
        client.starttls(context=_context())
        client.ehlo("laptop.example.org")
        client.user, client.password = login, password
        try:
            return client.auth("PLAIN", client.auth_plain)[0]
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code


class LoginLimitTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_successOnAnotherAccountKeepsTheIPsFailures(self):
        server = RunningServer(self, ratelimit__auth_failures=3)
        yield server.addUser("alice@example.test")
        yield server.addUser("carol@example.test")
        port = server.submissionPort
        codes = []
        for login, password in [
            ("alice@example.test", "guess1"),
            ("alice@example.test", "guess2"),
            ("carol@example.test", PASSWORD),  # the attacker's own account
            ("alice@example.test", "guess3"),
            ("alice@example.test", PASSWORD),
        ]:
            codes.append(
                (yield deferToThread(authFrom, port, "127.0.0.1", login, password))
            )
        self.assertEqual(codes, [535, 535, 235, 535, 454])

    @inlineCallbacks
    def test_guessesFromManyIPsAtOneAccountAreThrottled(self):
        server = RunningServer(self, ratelimit__auth_failures_per_account=3)
        yield server.addUser("alice@example.test")
        yield server.addUser("carol@example.test")
        port = server.submissionPort
        codes = []
        for n in range(2, 6):
            codes.append(
                (
                    yield deferToThread(
                        authFrom, port, f"127.0.0.{n}", "alice@example.test", "guess"
                    )
                )
            )
        self.assertEqual(codes, [535, 535, 535, 454])
        self.assertEqual(
            (
                yield deferToThread(
                    authFrom, port, "127.0.0.5", "carol@example.test", PASSWORD
                )
            ),
            235,
        )
        server.root.policy.logins.prune()
        metrics = server.root.metrics.registry
        self.assertEqual(
            [
                metrics.get_sample_value(
                    "mailraven_login_attempts_total",
                    {"protocol": "smtp", "outcome": outcome},
                )
                for outcome in ("failure", "throttled", "success")
            ],
            [3, 1, 1],
        )


# Sessions opening at once: more would overflow the listen queue (50).
_opening = threading.Semaphore(20)


def guessAt(
    port: int, login: str, password: str, start: threading.Barrier, ready: Any
) -> int:
    """Blocking: a TLS session that waits at C{start}, then for C{ready()},
    then makes one AUTH PLAIN guess; the reply code."""
    with _opening:
        client = smtplib.SMTP("127.0.0.1", port, timeout=240)
        client.ehlo("laptop.example.org")
        client.starttls(context=_context())
        client.ehlo("laptop.example.org")
    with client:
        start.wait()
        ready()
        client.user, client.password = login, password
        try:
            return client.auth("PLAIN", client.auth_plain)[0]
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code


class ParallelGuessTests(TestCase):
    """Limits hold against parallel sessions, the way an attacker sends them."""

    timeout = 300  # before the fix: 200 argon2 checks on two cores
    SESSIONS = 200
    RIGHT = 149  # the right password comes with guess 150

    @inlineCallbacks
    def test_parallelGuessesGetAtMostTheBudgetOfPasswordChecks(self):
        # the default login budget (10 per IP); the cap on open connections
        # per IP (50) would refuse most of these sessions before any guess
        server = RunningServer(self, ratelimit__concurrent_per_ip=self.SESSIONS + 10)
        yield server.addUser("alice@example.test")
        checks = CountingPasswordChecks(server.root.users)
        budget = server.config["ratelimit.auth_failures"]
        pool = ThreadPool(self.SESSIONS, self.SESSIONS, name="guessers")
        pool.start()
        self.addCleanup(pool.stop)
        start = threading.Barrier(self.SESSIONS, timeout=90)

        def afterOthers() -> None:
            # the right password comes once the other guesses are being checked
            deadline = time.monotonic() + 10
            while checks.calls < budget and time.monotonic() < deadline:
                time.sleep(0.01)

        codes = yield gatherResults(
            [
                deferToThreadPool(
                    reactor,
                    pool,
                    guessAt,
                    server.submissionPort,
                    "alice@example.test",
                    PASSWORD if n == self.RIGHT else f"guess{n}",
                    start,
                    afterOthers if n == self.RIGHT else lambda: None,
                )
                for n in range(self.SESSIONS)
            ]
        )
        self.assertLessEqual(checks.calls, budget)
        self.assertEqual(codes[self.RIGHT], 454)
        self.assertEqual(codes[self.RIGHT], 454)
        self.assertEqual(
            sorted(set(codes)), [454, 535], "only refusals and wrong passwords"
        )
        self.assertEqual(codes.count(535), checks.calls)


class ScramEnumerationTests(TestCase):
    """The SCRAM server-first message must not tell unknown logins apart
    from real accounts (RFC 5802 9: a server should answer an unknown user
    with a salt that looks like a real one)."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self, ratelimit__auth_failures=20)
        yield self.server.addUser("alice@example.test")

    @inlineCallbacks
    def test_unknownLoginsGetTheirOwnStableSalt(self):
        port = self.server.submissionPort
        salts = []
        for login in [
            "nobody@example.test",
            "someone@example.test",
            "nobody@example.test",
            "alice@example.test",
            "alice@example.test",
        ]:
            salts.append((yield deferToThread(scramSalt, port, login)))
        nobody, someone, nobodyAgain, alice, aliceAgain = salts
        # Like a real account's, an unknown login's salt does not change...
        self.assertEqual(alice, aliceAgain)
        self.assertEqual(nobody, nobodyAgain)
        # ...and is not one salt shared by every name that does not exist.
        self.assertNotEqual(nobody, someone)
        self.assertEqual(len(base64.b64decode(nobody)), len(base64.b64decode(alice)))
