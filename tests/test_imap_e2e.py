"""IMAP against a running server with Python's imaplib (STARTTLS and IMAPS);
mail arrives over SMTP (smtplib), flags are compared with the mobile API."""

from __future__ import annotations

import http.client
import imaplib
import json
import re
import smtplib
import socket
import ssl
import threading
import time

import treq
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThread, deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests import test_imap_sections as sections
from tests.helpers import PASSWORD, CountingPasswordChecks, RunningServer
from tests.test_mobile_api import APIClient

ORIGINAL = (
    b"From: Bob Sender <bob@example.org>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: Plans for Friday\r\n"
    b"Message-ID: <plans@example.org>\r\n"
    b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
    b"Caf\xc3\xa9 au lait, 8-bit and all.\r\n"
)


def _context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def starttls(port: int) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    client.starttls(ssl_context=_context())
    return client


def sendBySMTP(port: int, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("bob@example.org", ["alice@example.test"], message)


def ok(result: tuple) -> list:
    status, data = result
    assert status == "OK", result
    return data


def fetchOne(client: imaplib.IMAP4, uid: bytes, items: str) -> tuple[bytes, bytes]:
    """(response line, literal) of a UID FETCH of one message."""
    data = ok(client.uid("FETCH", uid, items))
    first = data[0]
    return (first[0], first[1]) if isinstance(first, tuple) else (first, b"")


class IMAPEndToEndTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        self.userId = yield self.server.addUser("alice@example.test")

    def run_(self, f, *args):
        return deferToThread(f, *args)

    @inlineCallbacks
    def test_clearTextPortDisablesLoginUntilSTARTTLS(self):
        def session():
            client = imaplib.IMAP4("127.0.0.1", self.server.imapPort, timeout=30)
            before = client.capabilities
            try:
                client.login("alice@example.test", PASSWORD)
            except imaplib.IMAP4.error as e:
                refused = str(e)
            client.starttls(ssl_context=_context())
            after = client.capabilities
            ok(client.login("alice@example.test", PASSWORD))
            client.logout()
            return before, refused, after

        before, refused, after = yield self.run_(session)
        self.assertIn("LOGINDISABLED", before)
        self.assertIn("STARTTLS", before)
        self.assertIn("PRIVACYREQUIRED", refused)
        self.assertIn("AUTH=PLAIN", after)
        self.assertNotIn("LOGINDISABLED", after)

    @inlineCallbacks
    def test_listShowsTheSixFoldersOverIMAPS(self):
        def session():
            client = imaplib.IMAP4_SSL(
                "127.0.0.1", self.server.imapsPort, ssl_context=_context(), timeout=30
            )
            ok(
                client.authenticate(
                    "PLAIN", lambda _: b"\0alice@example.test\0" + PASSWORD.encode()
                )
            )
            folders = ok(client.list())
            client.logout()
            return folders

        folders = yield self.run_(session)
        listed = {}
        for line in folders:
            attributes, name = re.match(rb'\((.*)\) "/" (.*)', line).groups()
            listed[name.decode().strip('"')] = attributes.decode().split()
        self.assertEqual(
            sorted(listed), ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]
        )
        for name in ("Archive", "Drafts", "Junk", "Sent", "Trash"):
            self.assertIn("\\" + name, listed[name])

    @inlineCallbacks
    def test_mailFromSMTPIsFetchedByteForByte(self):
        yield self.run_(sendBySMTP, self.server.smtpPort, ORIGINAL)

        def session():
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            [exists] = ok(client.select("INBOX"))
            [uids] = ok(client.uid("SEARCH", "ALL"))
            head, body = fetchOne(client, uids, "(RFC822.SIZE BODY.PEEK[])")
            _, header = fetchOne(client, uids, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            _, part = fetchOne(client, uids, "(BODY.PEEK[]<0.10>)")
            flagsBefore = ok(client.uid("FETCH", uids, "(FLAGS)"))
            _, text = fetchOne(client, uids, "(BODY[TEXT])")
            flagsAfter = ok(client.uid("FETCH", uids, "(FLAGS)"))
            client.logout()
            return exists, head, body, header, part, flagsBefore, text, flagsAfter

        exists, head, body, header, part, before, text, after = yield self.run_(session)
        self.assertEqual(exists, b"1")
        start = body.find(ORIGINAL[:30])
        self.assertGreater(start, 0, "our trace headers come first")
        self.assertTrue(body[:start].startswith(b"Return-Path: "), body[:start])
        self.assertIn(b"\r\nReceived: from ", body[:start])
        self.assertEqual(body[start:], ORIGINAL)
        self.assertIn(b"RFC822.SIZE %d " % len(body), head)
        self.assertEqual(header, b"Subject: Plans for Friday\r\n\r\n")
        self.assertEqual(part, body[:10])
        self.assertEqual(text, ORIGINAL.split(b"\r\n\r\n", 1)[1])
        self.assertNotIn(b"\\Seen", before[0])
        self.assertIn(b"\\Seen", after[0])

    @inlineCallbacks
    def test_nestedSectionsAreTheStoredBytes(self):
        """BODY[n], BODY[n.MIME], BODY[n.HEADER] of an appended nested
        message are its bytes as sent, partial ranges included."""

        def session():
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.append("INBOX", None, None, sections.MESSAGE))
            ok(client.select("INBOX"))
            [uid] = ok(client.uid("SEARCH", "ALL"))
            items = [
                "BODY.PEEK[1]",
                "BODY.PEEK[2.1]",
                "BODY.PEEK[2.2.MIME]",
                "BODY.PEEK[3.HEADER]",
                "BODY.PEEK[3.2]",
                "BODY.PEEK[1]<4.6>",
            ]
            found = [fetchOne(client, uid, f"({item})")[1] for item in items]
            client.logout()
            return found

        found = yield self.run_(session)
        self.assertEqual(
            found,
            [
                sections.PART1_BODY,
                sections.PART21_BODY,
                sections.PART22_MIME,
                sections.INNER_HEADER,
                sections.INNER_PART2_BODY,
                sections.PART1_BODY[4:10],
            ],
        )

    @inlineCallbacks
    def test_flagsAreOneStateWithTheMobileAPI(self):
        yield self.run_(sendBySMTP, self.server.smtpPort, ORIGINAL)
        api = APIClient(self, self.server.apiPort)
        yield api.login()
        [summary] = (yield api.json("GET", "/messages"))["messages"]

        def flagOverIMAP():
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.select("INBOX"))
            ok(client.store("1", "+FLAGS", "(\\Seen \\Flagged)"))
            client.logout()

        yield self.run_(flagOverIMAP)
        seen = yield api.json("GET", f"/messages/{summary['id']}")
        self.assertEqual((seen["read_state"], seen["starred"]), (True, True))

        yield api.json(
            "PATCH",
            f"/messages/{summary['id']}",
            {"read_state": False, "starred": False},
        )

        def flagsOverIMAP():
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.select("INBOX"))
            flags = ok(client.fetch("1", "(FLAGS)"))
            client.logout()
            return flags

        [flags] = yield self.run_(flagsOverIMAP)
        self.assertNotIn(b"\\Seen", flags)
        self.assertNotIn(b"\\Flagged", flags)

    @inlineCallbacks
    def test_aDraftSavedOverIMAPIsListedByTheAPI(self):
        """Found by a new user: Drafts could not be listed through the API."""

        def saveDraft():
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.append("Drafts", "(\\Draft)", None, ORIGINAL))
            client.logout()

        yield self.run_(saveDraft)
        api = APIClient(self, self.server.apiPort)
        yield api.login()
        page = yield api.json("GET", "/messages", mailbox="drafts")
        [draft] = page["messages"]
        self.assertEqual(draft["subject"], "Plans for Friday")

    @inlineCallbacks
    def test_anIMAPExpungeReachesTheAPIsDeltaSync(self):
        """Found by a new user: a message expunged over IMAP vanished from
        the API without delta sync saying so, and the app kept showing it."""
        yield self.run_(sendBySMTP, self.server.smtpPort, ORIGINAL)
        api = APIClient(self, self.server.apiPort)
        yield api.login()
        first = yield api.json("GET", "/messages/since", since="2000-01-01T00:00:00Z")
        [summary] = first["messages"]
        self.assertEqual(first["expunged"], [])

        def expunge():
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.select("INBOX"))
            ok(client.store("1", "+FLAGS.SILENT", "(\\Deleted)"))
            ok(client.expunge())
            client.logout()

        yield self.run_(expunge)
        delta = yield api.json("GET", "/messages/since", since=first["next_since"])
        self.assertEqual(delta["messages"], [])
        [gone] = delta["expunged"]
        self.assertEqual((gone["id"], gone["mailbox"]), (summary["id"], "inbox"))
        self.assertEqual(delta["count"], 1)
        self.assertEqual(delta["next_since"], gone["expunged_at"])
        after = yield api.json("GET", "/messages/since", since=delta["next_since"])
        self.assertEqual(after["count"], 0)

    @inlineCallbacks
    def test_appendFetchCopyMoveExpunge(self):
        message = b"Subject: draft\r\n\r\nunfinished\r\n"

        def session():
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            missing = client.append("Nowhere", None, None, message)
            [appended] = ok(client.append("Drafts", "(\\Draft \\Seen)", None, message))
            ok(client.select("Drafts"))
            fetched = ok(client.fetch("1", "(FLAGS BODY.PEEK[])"))
            copied = ok(client.copy("1", "Archive"))
            moved = client._simple_command("MOVE", "1", "Trash")
            moveLines = client.untagged_responses.pop("EXPUNGE", None)
            status = ok(client.status("Drafts", "(MESSAGES)"))
            ok(client.select("Trash"))
            ok(client.store("1", "+FLAGS", "(\\Deleted)"))
            expunged = ok(client.expunge())
            trash = ok(client.status("Trash", "(MESSAGES)"))
            archive = ok(client.status("Archive", "(MESSAGES)"))
            # UIDPLUS: UID EXPUNGE removes only the UIDs it names
            ok(client.select("Archive"))
            ok(client.append("Archive", None, None, message))
            ok(client.uid("STORE", "1:*", "+FLAGS", "(\\Deleted)"))
            ok(client.uid("EXPUNGE", "1"))
            archived = ok(client.uid("SEARCH", "ALL"))
            client.logout()
            return (
                missing,
                appended,
                fetched,
                copied,
                moved,
                moveLines,
                status,
                expunged,
                trash,
                archive,
                archived,
            )

        (
            missing,
            appended,
            fetched,
            copied,
            moved,
            moveLines,
            status,
            expunged,
            trash,
            archive,
            archived,
        ) = yield self.run_(session)
        self.assertEqual(missing[0], "NO")
        self.assertIn(b"TRYCREATE", missing[1][0])
        self.assertIn(b"APPENDUID", appended)
        self.assertIn(b"\\Draft", fetched[0][0])
        self.assertIn(b"\\Seen", fetched[0][0])
        self.assertEqual(fetched[0][1], message)
        self.assertIn(b"COPYUID", copied[0])
        self.assertEqual(moved[0], "OK")
        self.assertEqual(moveLines, [b"1"])
        self.assertIn(b"(MESSAGES 0)", status[0])
        self.assertEqual(expunged, [b"1"])
        self.assertIn(b"(MESSAGES 0)", trash[0])
        self.assertIn(b"(MESSAGES 1)", archive[0])
        self.assertEqual(archived, [b"2"])

    @inlineCallbacks
    def test_searchAndNoopSeeOtherSessionsChanges(self):
        def session():
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.select("INBOX"))
            sendBySMTP(self.server.smtpPort, ORIGINAL)
            ok(client.noop())
            exists = client.untagged_responses.get("EXISTS")
            found = ok(client.search(None, "SUBJECT", '"friday"', "UNSEEN"))
            none = ok(client.search(None, "FROM", "carol"))
            client.logout()
            return exists, found, none

        exists, found, none = yield self.run_(session)
        self.assertEqual(exists[-1], b"1")
        self.assertEqual(found, [b"1"])
        self.assertEqual(none, [b""])


def guess(
    port: int, password: str, start: threading.Barrier, mechanism: str = "LOGIN"
) -> str:
    """One session's answer to LOGIN or AUTHENTICATE PLAIN, sent when all
    sessions are connected."""
    client = starttls(port)
    start.wait()
    try:
        if mechanism == "LOGIN":
            client.login("alice@example.test", password)
        else:
            client.authenticate(
                "PLAIN", lambda _: f"\0alice@example.test\0{password}".encode()
            )
        return "OK"
    except imaplib.IMAP4.error as e:
        return str(e)
    finally:
        client.shutdown()


class ParallelGuessTests(TestCase):
    """The one login limiter holds against parallel IMAP sessions: attempts
    still being checked count against the IP's budget."""

    timeout = 300
    SESSIONS = 30

    @inlineCallbacks
    def guessInParallel(self, mechanism: str):
        server = RunningServer(self, ratelimit__concurrent_per_ip=self.SESSIONS + 10)
        yield server.addUser("alice@example.test")
        checks = CountingPasswordChecks(server.root.users)
        budget = server.config["ratelimit.auth_failures"]
        self.assertEqual(budget, 10)
        pool = ThreadPool(self.SESSIONS, self.SESSIONS, name="guessers")
        pool.start()
        self.addCleanup(pool.stop)
        start = threading.Barrier(self.SESSIONS, timeout=60)
        answers = yield gatherResults(
            [
                deferToThreadPool(
                    reactor, pool, guess, server.imapPort, f"guess{n}", start, mechanism
                )
                for n in range(self.SESSIONS)
            ]
        )
        self.assertLessEqual(checks.calls, budget)
        throttled = [a for a in answers if "UNAVAILABLE" in a]
        failed = [a for a in answers if "AUTHENTICATIONFAILED" in a]
        self.assertEqual(len(throttled) + len(failed), self.SESSIONS, answers)
        self.assertEqual(len(failed), checks.calls)
        # and the right password is refused too while the budget is spent
        start = threading.Barrier(1)
        answer = yield deferToThread(guess, server.imapPort, PASSWORD, start, mechanism)
        self.assertIn("UNAVAILABLE", answer)
        metrics = server.root.metrics.registry
        self.assertEqual(
            [
                metrics.get_sample_value(
                    "mailraven_login_attempts_total",
                    {"protocol": "imap", "outcome": outcome},
                )
                for outcome in ("failure", "throttled")
            ],
            [len(failed), len(throttled) + 1],
        )

    def test_parallelWrongPasswordsGetAtMostTheBudgetOfChecks(self):
        return self.guessInParallel("LOGIN")

    def test_parallelAuthenticatePlainGetsAtMostTheBudgetOfChecks(self):
        return self.guessInParallel("PLAIN")


class QuotaTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_appendToAFullAccountIsRefused(self):
        server = RunningServer(self, quota__default=100)
        yield server.addUser("alice@example.test")

        def session():
            client = starttls(server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            first = client.append(
                "INBOX", None, None, b"Subject: a\r\n\r\n" + b"x" * 200
            )
            second = client.append("INBOX", None, None, b"Subject: b\r\n\r\nmore\r\n")
            client.logout()
            return first, second

        first, second = yield deferToThread(session)
        self.assertEqual(first[0], "OK")
        self.assertEqual(second[0], "NO")
        self.assertIn(b"[OVERQUOTA]", second[1][0])

    @inlineCallbacks
    def test_usageAndLimitAreReported(self):
        """Issue 21: IMAP reports usage (RFC 9208), as GET /api/v1/account
        does; an account without a limit has no quota root."""
        server = RunningServer(self, quota__default=1 << 20)
        yield server.addUser("alice@example.test")
        yield server.addUser("bob@example.test")
        yield server.root.quotas.setLimit("bob@example.test", 0)
        yield deferToThread(sendBySMTP, server.smtpPort, ORIGINAL)
        used, _ = yield server.root.quotas.quota("alice@example.test")

        def session(email: str):
            client = starttls(server.imapPort)
            capabilities = ok(client.capability())[0].split()
            ok(client.login(email, PASSWORD))
            root = client.getquotaroot("INBOX")
            quota = client.getquota('""')
            refused = client.setquota('""', "(STORAGE 1)")
            client.logout()
            return capabilities, root, quota, refused

        capabilities, root, quota, refused = yield deferToThread(
            session, "alice@example.test"
        )
        self.assertIn(b"QUOTA", capabilities)
        self.assertIn(b"QUOTA=RES-STORAGE", capabilities)
        expected = b'"" (STORAGE %d 1024)' % ((used + 1023) // 1024)
        self.assertEqual(root, ("OK", [[b'INBOX ""'], [expected]]))
        self.assertEqual(quota, ("OK", [expected]))
        self.assertEqual(refused[0], "NO")
        _, root, quota, _ = yield deferToThread(session, "bob@example.test")
        self.assertEqual(root, ("OK", [[b"INBOX"], [None]]))
        self.assertEqual(quota[0], "NO")

    @inlineCallbacks
    def test_parallelAppendsStopAtTheFirstToCross(self):
        """Each APPEND reserves its room: sessions finishing together see
        each other, so only the first past a 1000-byte limit is stored."""
        server = RunningServer(self, quota__default=1000)
        yield server.addUser("alice@example.test")
        body = b"Subject: q\r\n\r\n" + b"Q" * 5000 + b"\r\n"
        clients = []
        for _ in range(6):
            client = yield deferToThread(starttls, server.imapPort)
            yield deferToThread(client.login, "alice@example.test", PASSWORD)
            clients.append(client)
        results = yield gatherResults(
            [deferToThread(c.append, "INBOX", None, None, body) for c in clients]
        )
        for client in clients:
            yield deferToThread(client.logout)
        self.assertEqual(sorted(r[0] for r in results), ["NO"] * 5 + ["OK"])

    @inlineCallbacks
    def test_copyToAFullAccountIsRefusedMoveIsNot(self):
        """COPY adds usage, so a full account gets OVERQUOTA; MOVE does not."""
        server = RunningServer(self, quota__default=100)
        yield server.addUser("alice@example.test")

        def session():
            client = starttls(server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.append("INBOX", None, None, b"Subject: a\r\n\r\n" + b"x" * 200))
            ok(client.create("Dup"))
            ok(client.select("INBOX"))
            copied = client.copy("1:*", "Dup")
            moved = client._simple_command("MOVE", "1:*", "Dup")
            client.logout()
            return copied, moved

        copied, moved = yield deferToThread(session)
        self.assertEqual(copied[0], "NO")
        self.assertIn(b"[OVERQUOTA]", copied[1][0])
        self.assertEqual(moved[0], "OK")


def injectAfterSTARTTLS(port: int) -> list[bytes]:
    """Blocking: STARTTLS with a LOGIN in the same packet, then NOOP in TLS."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    reader = raw.makefile("rb")
    reader.readline()  # greeting
    raw.sendall(
        b"a STARTTLS\r\nb LOGIN alice@example.test " + b'"%s"\r\n' % PASSWORD.encode()
    )
    started = reader.readline()
    with _context().wrap_socket(raw) as tls:
        tls.sendall(b"c NOOP\r\nd LOGOUT\r\n")
        lines = tls.makefile("rb").read().splitlines()
    return [started, *lines]


class InjectionTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_commandsPipelinedAfterSTARTTLSNeverRunInTLS(self):
        server = RunningServer(self)
        yield server.addUser("alice@example.test")
        lines = yield deferToThread(injectAfterSTARTTLS, server.imapPort)
        self.assertTrue(lines[0].startswith(b"a OK "), lines)
        self.assertTrue(lines[1].startswith(b"c OK "), lines)
        self.assertFalse([line for line in lines if line.startswith(b"b ")], lines)


class ShutdownTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_openSessionsAreToldWhenTheServerStops(self):
        server = RunningServer(self)
        yield server.addUser("alice@example.test")
        client = yield deferToThread(starttls, server.imapPort)
        yield deferToThread(client.login, "alice@example.test", PASSWORD)
        self.addCleanup(client.shutdown)
        response = yield treq.get(
            f"http://127.0.0.1:{server.apiPort}/metrics",
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
        metrics = yield response.text()
        self.assertIn("mailraven_imap_active_sessions 1.0", metrics)
        yield server.stop()
        line = yield deferToThread(client.readline)
        self.assertEqual(line, b"* BYE Server shutting down\r\n")


class CondstoreTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_modseqsOverFetchStoreSearchAndStatus(self):
        server = RunningServer(self)
        yield server.addUser("alice@example.test")
        for _ in range(2):
            yield deferToThread(sendBySMTP, server.smtpPort, ORIGINAL)

        def session():
            client = starttls(server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client._simple_command("ENABLE", "CONDSTORE"))
            enabled = client.untagged_responses.pop("ENABLED")
            ok(client.select("INBOX"))
            highest = int(client.untagged_responses["HIGHESTMODSEQ"][-1])
            before = ok(client.fetch("1:*", "(FLAGS MODSEQ)"))
            stored = ok(client.store("1", "+FLAGS", "(\\Flagged)"))
            changed = ok(client.fetch("1:*", f"(FLAGS) (CHANGEDSINCE {highest})"))
            refused = client._simple_command(
                "STORE", "2", "(UNCHANGEDSINCE 1) +FLAGS", "(\\Seen)"
            )
            found = ok(client.search(None, "MODSEQ", str(highest + 1)))
            status = ok(client.status("INBOX", "(HIGHESTMODSEQ MESSAGES)"))
            client.logout()
            return enabled, highest, before, stored, changed, refused, found, status

        (
            enabled,
            highest,
            before,
            stored,
            changed,
            refused,
            found,
            status,
        ) = yield deferToThread(session)
        self.assertEqual(enabled, [b"CONDSTORE"])
        modseqs = [
            int(re.search(rb"MODSEQ \((\d+)\)", line).group(1)) for line in before
        ]
        self.assertEqual(len(modseqs), 2)
        self.assertLessEqual(max(modseqs), highest)
        [line] = stored
        after = int(re.search(rb"MODSEQ \((\d+)\)", line).group(1))
        self.assertGreater(after, highest)
        self.assertEqual(len(changed), 1)
        self.assertTrue(changed[0].startswith(b"1 (FLAGS (\\Flagged) MODSEQ"), changed)
        self.assertEqual(refused[0], "OK")
        self.assertIn(b"[MODIFIED 2]", refused[1][-1])
        self.assertEqual(found, [b"1 (MODSEQ %d)" % after])
        self.assertIn(b"HIGHESTMODSEQ %d" % after, status[0])


def apiCall(port: int, method: str, path: str, body=None, token=None):
    """Blocking JSON call to the mobile API."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    connection.request(method, "/api/v1" + path, data, headers)
    response = connection.getresponse()
    result = json.loads(response.read())
    connection.close()
    return result


class IdleTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_idleSessionSeesSMTPDeliveryAndAPIFlagsAtOnce(self):
        server = RunningServer(self)
        yield server.addUser("alice@example.test")

        def session():
            client = starttls(server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.select("INBOX"))
            client.send(b"i1 IDLE\r\n")
            assert client.readline().startswith(b"+ "), "no continuation"
            sendBySMTP(server.smtpPort, ORIGINAL)
            delivered = time.monotonic()
            exists = client.readline()
            delay = time.monotonic() - delivered
            token = apiCall(
                server.apiPort,
                "POST",
                "/auth/login",
                {"email": "alice@example.test", "password": PASSWORD},
            )["token"]
            [summary] = apiCall(server.apiPort, "GET", "/messages", token=token)[
                "messages"
            ]
            apiCall(
                server.apiPort,
                "PATCH",
                f"/messages/{summary['id']}",
                {"starred": True},
                token,
            )
            flagged = client.readline()
            client.send(b"DONE\r\n")
            done = client.readline()
            client.logout()
            return exists, delay, flagged, done

        exists, delay, flagged, done = yield deferToThread(session)
        self.assertEqual(exists, b"* 1 EXISTS\r\n")
        self.assertLess(delay, 1.0)
        self.assertTrue(
            flagged.startswith(b"* 1 FETCH (FLAGS (\\Flagged) UID 1"), flagged
        )
        self.assertEqual(done, b"i1 OK IDLE terminated\r\n")
